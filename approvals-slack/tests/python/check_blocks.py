"""Checks Block Kit payloads with Slack's own Python SDK (slack_sdk.models).

Reads a JSON object {"messages": [[block, ...], ...], "views": [view, ...]} on standard
input. Each block is parsed with `Block.parse` and each view with `View`, validated with
`validate_json()` (the SDK's length and count limits), and turned back into JSON with
`to_dict()`, which must equal what was sent: an attribute or element type the SDK does not
know is dropped by that round trip, so a difference is a payload Slack's models do not
describe. Prints one line per problem and exits 1 if there is any.

    python3 check_blocks.py < payloads.json
"""

import json
import sys

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View


def check(kind, index, sent, parse):
    problems = []
    try:
        parsed = parse(sent)
    except Exception as e:  # noqa: BLE001 - an attribute the SDK does not know, for one
        return [f"{kind} {index}: not parsed: {type(e).__name__}: {e}"]
    if parsed is None:
        return [f"{kind} {index}: the SDK does not know this type: {json.dumps(sent)[:300]}"]
    try:
        parsed.validate_json()
    except Exception as e:  # noqa: BLE001 - reported as data
        problems.append(f"{kind} {index}: invalid: {e}")
    try:
        back = parsed.to_dict()
    except Exception as e:  # noqa: BLE001 - to_dict validates again
        return problems or [f"{kind} {index}: invalid: {e}"]
    if back != sent:
        problems.append(
            f"{kind} {index}: not kept by the round trip:\n  sent {json.dumps(sent)[:600]}\n  back {json.dumps(back)[:600]}"
        )
    return problems


def main():
    payloads = json.load(sys.stdin)
    problems = []
    blocks = 0
    for m, message in enumerate(payloads.get("messages", [])):
        for b, block in enumerate(message):
            blocks += 1
            problems += check("block", f"{m}.{b} ({block.get('type')})", block, Block.parse)
    for v, view in enumerate(payloads.get("views", [])):
        problems += check("view", v, view, lambda d: View(**d))
    for p in problems:
        print(p)
    print(f"checked {blocks} blocks and {len(payloads.get('views', []))} views", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
