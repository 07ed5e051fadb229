#!/usr/bin/env bash
# Everything the toy base is judged by, on one weights file, in one unattended run:
#   benchmarks/measure_base.sh WEIGHTS OUT [STAGES]
# WEIGHTS: a file from `setseq toy pretrain` (or the shipped src/setseq/toy/weights/toy.safetensors);
# OUT: a folder for every result; STAGES: a comma list of eval, quick, demo, concept, leakage,
# ablation (default: all but ablation, about 40 min on 2 CPU cores for a 256 x 8 base).
# Each stage writes OUT/<stage>/ and its wall time to OUT/times.tsv; a stage whose folder holds a
# finished marker (OUT/<stage>/.done) is skipped, so the script can be stopped and run again.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: benchmarks/measure_base.sh WEIGHTS OUT [eval,quick,demo,concept,leakage,ablation]" >&2
    exit 2
fi
WEIGHTS=$(realpath "$1")
OUT=$2
STAGES=${3:-eval,quick,demo,concept,leakage}
[[ -f $WEIGHTS ]] || { echo "no weights file at $WEIGHTS" >&2; exit 2; }
export SETSEQ_TOY_WEIGHTS=$WEIGHTS
BIN=$(dirname "$0")/../.venv/bin
[[ -x $BIN/setseq ]] || BIN=$(dirname "$(command -v setseq)")
mkdir -p "$OUT"

stage() {  # stage NAME COMMAND...: run COMMAND once, timed, logged to OUT/NAME/log.txt
    local name=$1; shift
    [[ ",$STAGES," == *",$name,"* ]] || return 0
    [[ -f $OUT/$name/.done ]] && { echo "$name: done before, skipped"; return 0; }
    mkdir -p "$OUT/$name"
    echo "$name: $*"
    local start=$SECONDS
    "$@" > "$OUT/$name/log.txt" 2>&1
    printf '%s\t%d\n' "$name" $((SECONDS - start)) >> "$OUT/times.tsv"
    touch "$OUT/$name/.done"
    echo "$name: $((SECONDS - start)) s"
}

stage eval "$BIN/setseq" toy eval -n 200 --json "$OUT/eval/eval.json" --frames "$OUT/eval/frames.png"
stage quick "$BIN/setseq" demo --quick --out "$OUT/quick"
stage demo "$BIN/setseq" demo --out "$OUT/demo"
stage concept "$BIN/python" "$(dirname "$0")/new_concept.py" --out "$OUT/concept"
stage leakage "$BIN/setseq" bench leakage --out "$OUT/leakage"
stage ablation "$BIN/setseq" bench ablation --seeds 0,1,2 --out "$OUT/ablation"
echo "times (s):"; cat "$OUT/times.tsv"
