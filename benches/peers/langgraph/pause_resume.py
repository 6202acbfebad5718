"""LangGraph's human-in-the-loop pause and resume, timed per iteration, as the peer of
`benches/benches/peers_pause_resume.rs`.

One iteration, on a fresh thread id:

1. pause: `graph.invoke(input, config)` runs the `approval` node, which calls `interrupt()`
   with the action for the reviewer; LangGraph saves the checkpoint to a SQLite file through
   `SqliteSaver` and `invoke` returns with `__interrupt__`.
2. resume: `graph.invoke(Command(resume=...), config)` loads the checkpoint, finishes the
   `approval` node with the reviewer's answer and runs the `execute` node (the action) to the
   end of the graph, saving checkpoints as it goes.

Durability: `SqliteSaver` sets `journal_mode=WAL` and commits after every write; the
connection keeps Python sqlite3's `synchronous` setting (printed in the JSON, normally FULL:
the WAL is synced on every commit). Graphs run with `durability="sync"` (each step's
checkpoint is committed before the next step starts) unless `--durability` says otherwise.

Prints one JSON object: n, median and p99 (microseconds) of the whole iteration and of each
half, the rows written per iteration, the SQLite pragmas, and the versions of Python, SQLite
and the LangGraph packages.

    /var/tmp/approvals-peers-venv/bin/python benches/peers/langgraph/pause_resume.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from typing import TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt


class State(TypedDict, total=False):
    action: dict
    approved: bool
    approver: str
    executed: bool


def approval(state: State) -> State:
    """Pauses the graph until a reviewer answers (the peer of `guard()` waiting)."""
    answer = interrupt({"action": state["action"], "question": "approve this action?"})
    return {"approved": bool(answer.get("approved")), "approver": answer.get("by", "")}


def execute(state: State) -> State:
    """The privileged action itself: runs only after an approval (the peer of `execute()`)."""
    if not state.get("approved"):
        raise RuntimeError("the action ran without an approval")
    return {"executed": True}


def build(saver: SqliteSaver):
    graph = StateGraph(State)
    graph.add_node("approval", approval)
    graph.add_node("execute", execute)
    graph.add_edge(START, "approval")
    graph.add_edge("approval", "execute")
    graph.add_edge("execute", END)
    return graph.compile(checkpointer=saver)


def percentile(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile of already sorted values (same rule as the Rust side)."""
    index = min(int(len(sorted_values) * p), len(sorted_values) - 1)
    return sorted_values[index]


def summary(samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": percentile(ordered, 0.99) * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
    }


def one_iteration(graph, n: int, durability: str) -> tuple[float, float]:
    config = {"configurable": {"thread_id": str(uuid.uuid4())}}
    action = {
        "kind": "data.export",
        "resource": "db://prod/customers",
        "params": {"rows": 5000, "columns": ["email", "plan"], "n": n},
    }
    start = time.perf_counter()
    paused = graph.invoke({"action": action}, config, durability=durability)
    mid = time.perf_counter()
    if "__interrupt__" not in paused:
        raise SystemExit(f"pause_resume.py: the graph did not pause: {paused!r}")
    done = graph.invoke(
        Command(resume={"approved": True, "by": "sam@example.com"}),
        config,
        durability=durability,
    )
    end = time.perf_counter()
    if not done.get("executed"):
        raise SystemExit(f"pause_resume.py: the graph did not run the action: {done!r}")
    return mid - start, end - mid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="measured iterations")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured iterations first")
    parser.add_argument(
        "--durability",
        choices=["sync", "async", "exit"],
        default="sync",
        help="LangGraph durability mode (default sync: checkpoint committed before each step)",
    )
    parser.add_argument("--db", help="SQLite file (default: a new file in a temp directory)")
    args = parser.parse_args()
    if args.n < 1 or args.warmup < 0:
        parser.error("--n must be at least 1 and --warmup at least 0")

    with tempfile.TemporaryDirectory(prefix="langgraph-bench-") as tmp:
        path = args.db or os.path.join(tmp, "checkpoints.sqlite")
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()
            graph = build(saver)
            for i in range(args.warmup):
                one_iteration(graph, i, args.durability)
            pauses, resumes, totals = [], [], []
            for i in range(args.n):
                pause, resume = one_iteration(graph, args.warmup + i, args.durability)
                pauses.append(pause)
                resumes.append(resume)
                totals.append(pause + resume)
            journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            iterations = args.warmup + args.n
            rows = {
                table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] / iterations
                for table in ("checkpoints", "writes")
            }
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            conn.close()

    print(
        json.dumps(
            {
                "bench": "langgraph_interrupt_resume_sqlite",
                "n": args.n,
                "warmup": args.warmup,
                "total": summary(totals),
                "pause": summary(pauses),
                "resume": summary(resumes),
                "durability": args.durability,
                "rows_per_iteration": rows,
                "sqlite_journal_mode": journal_mode,
                # 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
                "sqlite_synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                    synchronous, str(synchronous)
                ),
                "versions": {
                    "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version,
                    "langgraph": version("langgraph"),
                    "langgraph-checkpoint": version("langgraph-checkpoint"),
                    "langgraph-checkpoint-sqlite": version("langgraph-checkpoint-sqlite"),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
