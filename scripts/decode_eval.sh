#!/usr/bin/env bash
# Re-score every finished ablation run with another decoding, without retraining: for each
# outputs/runs/ablations/<variant>/seed<N>, `r2genkg test` into best/eval_test_<NAME>, then its
# record into docs/ablation_runs_<NAME>/<variant>/seed<N>.json (resumable: a run with a record is skipped).
#   scripts/decode_eval.sh beam3 generation.num_beams=3
#   OUT=outputs/runs/ablations_e12 RECORDS=docs/ablation_runs_e12_floor50 scripts/decode_eval.sh floor50 generation.stop_min_prob=0.5
#   .venv/bin/python scripts/results_table.py --records docs/ablation_runs_beam3 --csv docs/results_beam3.csv
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this clone's code, whatever the shared venv points at
name=${1:?usage: scripts/decode_eval.sh NAME OVERRIDE...}; shift
[ $# -gt 0 ] || { echo "usage: scripts/decode_eval.sh NAME OVERRIDE... (e.g. beam3 generation.num_beams=3)" >&2; exit 2; }
R2GENKG=${R2GENKG:-.venv/bin/r2genkg}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs/runs/ablations}
RECORDS=${RECORDS:-docs/ablation_runs_$name}
sets=(); for o in "$@"; do sets+=(--set "$o"); done
for dir in "$OUT"/*/seed*; do
  [ -d "$dir/best" ] || continue
  variant=$(basename "$(dirname "$dir")"); seed=$(basename "$dir")
  record="$RECORDS/$variant/$seed.json"
  if [ -f "$record" ]; then echo "=== $variant/$seed: done ($record)" >&2; continue; fi
  echo "=== $variant/$seed: test with $*" >&2
  start=$(date +%s)
  "$R2GENKG" test "$dir/best" --split test --batch-size 32 --no-meteor --output "$dir/best/eval_test_$name" "${sets[@]}"
  "$PYTHON" scripts/results_table.py --record "$dir" --out "$record" --eval "eval_test_$name" \
    --uncovered-eval "eval_test_${name}_uncovered" --set "test_wall_s=$(( $(date +%s) - start ))" \
    --set "decoding=\"$*\"" --set "commit=\"$(git rev-parse --short HEAD)\""
done
