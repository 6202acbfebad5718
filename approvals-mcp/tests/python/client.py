"""An MCP client on the official MCP Python SDK (`mcp` on PyPI) that drives the approvals-mcp
gateway for the Rust integration tests (approvals-mcp/tests/gateway.rs).

    python3 client.py STEPS_JSON -- GATEWAY_COMMAND [ARGS...]

It starts the gateway as its stdio MCP server, runs the classic `initialize` handshake, then
the steps in order, printing one JSON line per step on standard output as soon as it is done:

    {"op": "list_tools"}
    {"op": "call", "tool": NAME, "args": {...}, "timeout": SECONDS?, "progress": true?}
    {"op": "sleep", "seconds": N}

A call's line holds `is_error` and `text` (the result's text content), the progress
notifications and log messages received during it, or `exception` when the SDK raised (for a
call that timed out, the SDK sends `notifications/cancelled` for it first).
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def emit(line):
    print(json.dumps(line), flush=True)


async def main(steps, command, args):
    logs = []

    async def on_log(params):
        logs.append({"level": params.level, "logger": params.logger, "data": params.data})

    server = StdioServerParameters(command=command, args=args)
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            emit({"op": "initialize", "server": init.server_info.name,
                  "protocol": init.protocol_version})
            for step in steps:
                op = step["op"]
                if op == "list_tools":
                    tools = await session.list_tools()
                    emit({"op": op, "tools": sorted(t.name for t in tools.tools)})
                elif op == "sleep":
                    await anyio.sleep(step["seconds"])
                    emit({"op": op})
                elif op == "call":
                    progress = []

                    async def on_progress(value, total, message, progress=progress):
                        progress.append({"progress": value, "message": message})

                    logs.clear()
                    line = {"op": op, "tool": step["tool"]}
                    try:
                        result = await session.call_tool(
                            step["tool"],
                            step.get("args", {}),
                            read_timeout_seconds=step.get("timeout"),
                            progress_callback=on_progress if step.get("progress") else None,
                        )
                        line["is_error"] = bool(result.is_error)
                        line["text"] = "\n".join(
                            c.text for c in result.content if getattr(c, "type", "") == "text"
                        )
                    except Exception as e:  # noqa: BLE001 - reported to the test as data
                        line["exception"] = f"{type(e).__name__}: {e}"
                    line["progress"] = progress
                    line["logs"] = list(logs)
                    emit(line)
                else:
                    raise SystemExit(f"unknown step {op!r}")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    anyio.run(main, json.loads(sys.argv[1]), sys.argv[3], sys.argv[4:])
