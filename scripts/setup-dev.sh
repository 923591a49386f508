#!/usr/bin/env bash
# Create .venv with Tokengate (editable) and its test tools. Safe to run again: pip skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${TOKENGATE_DEV_VENV:-.venv}"
LOG="$(mktemp -t tokengate-setup.XXXXXX.log)"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Tokengate needs Python 3.11 or newer; $("$PYTHON" --version 2>&1) found. Set PYTHON=/path/to/python3.11." >&2
  exit 2
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "Installing Tokengate and its test tools into $VENV..."
if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e '.[dev]'; } >"$LOG" 2>&1; then
  grep -v "Location 'file" "$LOG" | tail -n 40 >&2
  echo "pip failed; full log: $LOG" >&2
  exit 1
fi
rm -f "$LOG"
echo "Tokengate $("$VENV/bin/tokengate" --version | cut -d' ' -f2) ready in $VENV"
