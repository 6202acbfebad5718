#!/usr/bin/env bash
# Creates the Python virtual environment for the LangGraph peer bench and installs the pinned
# LangGraph packages from PyPI. Idempotent: does nothing when the pinned versions are already
# installed. The venv lives outside the repository (default /var/tmp/approvals-peers-venv;
# override with APPROVALS_PEERS_VENV).
#
#   bash benches/peers/langgraph/setup.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${APPROVALS_PEERS_VENV:-/var/tmp/approvals-peers-venv}"
requirements="$here/requirements.txt"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null; then
  echo "setup.sh: $python not found; install Python 3.10 or newer (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup.sh: creating the virtual environment $venv"
  "$python" -m venv "$venv" || {
    echo "setup.sh: could not create $venv; on Debian install python3-venv" >&2
    exit 1
  }
fi

# Already installed at the pinned versions? (pip check would also pass on other versions.)
if "$venv/bin/python" - "$requirements" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    if version(name) != want:
        sys.exit(1)
PY
  echo "setup.sh: $venv already has the pinned LangGraph packages"
  exit 0
fi

echo "setup.sh: installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "setup.sh: done"
