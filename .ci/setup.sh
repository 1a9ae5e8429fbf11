#!/usr/bin/env bash
# Create the project's virtual environment (.venv) if needed and install mlops_lab into it,
# editable, with the extras named in $1 (comma-separated, e.g. "dev" or "examples").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($py --version)" >&2
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >&2
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "[setup] pip install -e $spec" >&2
.venv/bin/python -m pip install -q -e "$spec" 2>&1 | grep -v -E "^WARNING: (Location|Skipping)" >&2 || true
.venv/bin/python -c "import mlops_lab" # fail here, clearly, if the install did not work
