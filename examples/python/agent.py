#!/usr/bin/env python3
"""An agent that asks before it acts, through the approvals HTTP agent API.

Standard library only (urllib). It submits an action, prints where a reviewer can decide it,
long-polls for the decision, and on approval consumes its grant, runs the action (simulated
here) and reports the outcome. On denial, expiry or cancellation it prints who decided and
why, and exits 2. The initiator (the agent, and the human it acts for) is whatever the token
stands for on the server; nothing here can change it.

    APPROVALS_URL=http://127.0.0.1:8480 APPROVALS_TOKEN=apr_... python3 examples/python/agent.py

Exit codes: 0 ran and succeeded, 1 ran and failed or the API failed, 2 refused (policy,
denial, expiry, cancellation).
"""

import json
import os
import sys
import urllib.error
import urllib.request
import uuid

BASE = os.environ.get("APPROVALS_URL", "http://127.0.0.1:8480").rstrip("/")
TOKEN = os.environ.get("APPROVALS_TOKEN", "")
WAIT_SECONDS = 30  # per long poll; the server caps it at 60


class ApiError(Exception):
    def __init__(self, status, problem):
        super().__init__(problem.get("detail", f"HTTP {status}"))
        self.status = status
        self.problem = problem


def api(method, path, body=None, headers=None, timeout=15):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        try:
            problem = json.load(e)
        except ValueError:
            problem = {"detail": f"HTTP {e.code}"}
        raise ApiError(e.code, problem) from None


def export_customers(params):
    """The privileged action (simulated)."""
    print(f"exporting {params['rows']} rows as {params['format']} ...", flush=True)
    return None  # no error


def main():
    if not TOKEN:
        print("set APPROVALS_TOKEN to an agent token", file=sys.stderr)
        return 1
    action = {
        "kind": os.environ.get("AGENT_KIND", "data.export"),
        "resource": os.environ.get("AGENT_RESOURCE", "db://prod/customers"),
        "params": {"rows": 5000, "format": "csv"},
        "justification": "Quarterly churn analysis (FIN-2291)",
        "environment": "production",
        # What the export would read, shown to reviewers and bound to the approval: a sample
        # of the rows, and how many there are.
        "context": {
            "preview": {
                "type": "rows",
                "columns": ["id", "plan", "mrr"],
                "rows": [["1001", "pro", "49"], ["1002", "team", "199"]],
                "total": 5000,
            }
        },
    }
    # A retry with the same key re-attaches to the same request instead of asking twice.
    key = os.environ.get("AGENT_IDEMPOTENCY_KEY", str(uuid.uuid4()))
    try:
        status, submitted = api("POST", "/v1/requests", action, {"Idempotency-Key": key})
    except ApiError as e:
        if e.problem.get("code") == "policy_denied":
            print(f"refused by policy rule {e.problem.get('rule')}: {e.problem.get('reason')}")
            return 2
        print(f"submit failed: {e}", file=sys.stderr)
        return 1
    request_id = submitted["id"]

    if submitted["status"] == "allowed":
        grant = submitted["grant_token"]
    else:
        print(f"waiting for approval of {request_id}", flush=True)
        print(f"review: {submitted.get('review_url')}", flush=True)
        while True:
            _, waited = api(
                "GET",
                f"/v1/requests/{request_id}/wait?timeout={WAIT_SECONDS}",
                timeout=WAIT_SECONDS + 15,
            )
            if waited["state"] != "pending":
                break
            print("still pending ...", flush=True)
        if waited["state"] != "approved":
            who = waited.get("decided_by") or "nobody"
            reason = waited.get("reason") or "no reason given"
            print(f"{waited['state']} by {who}: {reason}", flush=True)
            return 2
        print(f"approved by {waited.get('decided_by')}", flush=True)
        grant = waited["grant_token"]
        # Where the policy lets reviewers edit an action, they may approve a changed version:
        # the grant runs only that one, so run it with the edited parameters.
        if "edited" in waited:
            action["params"] = waited["edited"]["params"]
            for change in waited["edited"]["changes"]:
                print(f"reviewers changed {change['field']}: {change['before']} -> {change['after']}", flush=True)

    # Consume the grant first: exactly once, or not at all.
    try:
        api("POST", f"/v1/requests/{request_id}/executions", {"grant_token": grant})
    except ApiError as e:
        print(f"cannot run: {e}", file=sys.stderr)
        return 1
    try:
        error = export_customers(action["params"])
    except Exception as e:  # the action's own failure is reported, then re-raised as exit 1
        error = f"{type(e).__name__}: {e}"[:2000]
    outcome = {"ok": True} if error is None else {"ok": False, "error": error}
    _, done = api("POST", f"/v1/requests/{request_id}/executions/outcome", outcome)
    print(f"{done['state']}", flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (urllib.error.URLError, ApiError, OSError) as e:
        print(f"approvals API unavailable: {e}", file=sys.stderr)
        sys.exit(1)
