#!/usr/bin/env bash
# setseq's GPU benchmark in one command (2026-12-01; plan vs measured added 2026-12-07): see
# benchmarks/gpu.py for what it measures (its 14B rows also record setseq.plan's estimate beside
# each measured peak).
#
#   benchmarks/gpu.sh                 # one H100 / H200, about 5 minutes: gpu-bench.json, gpu-bench.md
#   benchmarks/gpu.sh --cpu-small     # a reduced configuration on the CPU: gpu-bench-cpu-small.*
#
# The files land in the current folder (--out PREFIX to change). Needs torch (a CUDA build for the
# GPU run), diffusers and peft, e.g. `pip install -e ".[dev]"`; uses the repository's .venv/bin/python
# when there is one, else $PYTHON, else python3, with the repository's src/ first on the path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py="${PYTHON:-python3}"; fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/benchmarks/gpu.py" "$@"
