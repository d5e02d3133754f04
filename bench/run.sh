#!/usr/bin/env bash
# Side-by-side HTTP benchmark: modelops runtime vs Seldon MLServer vs a naive FastAPI app.
# Everything runs on 127.0.0.1; servers pinned to core 0, wrk to core 1.
# Usage: bench/run.sh [seconds per run, default 10] [measured runs per server, default 3]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import fastapi, uvicorn, onnxruntime, skl2onnx, httptools, uvloop, orjson" 2>/dev/null; then
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi
mlvenv="$here/.venv-mlserver"
if [ ! -x "$mlvenv/bin/mlserver" ]; then
  python3 -m venv "$mlvenv"
  "$mlvenv/bin/pip" install -q -r "$here/requirements-mlserver.txt"
fi
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
exec "$venv/bin/python" "$here/bench.py" --duration "${1:-10}" --runs "${2:-3}" --mlserver "$mlvenv/bin/mlserver"
