#!/usr/bin/env bash
# The docs/results.md experiment: the four iu_phantom variants, same seed and budget, each
# trained (resumable: rerun to continue) then evaluated on the 590 test studies.
#   scripts/ablations.sh [variant ...]      variants: full global no_kg no_disease_tokens
set -euo pipefail
cd "$(dirname "$0")/.."
R2GENKG=${R2GENKG:-.venv/bin/r2genkg}
OUT=${OUT:-outputs/runs/ablations}

declare -A OVERRIDES=(
  [full]=""
  [global]="model.kg.mode=global"
  [no_kg]="model.kg.mode=none model.cross_attention=false"
  [no_disease_tokens]="model.disease_tokens.enabled=false"
)
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(full global no_kg no_disease_tokens)

for v in "${variants[@]}"; do
  [ -n "${OVERRIDES[$v]+x}" ] || { echo "unknown variant $v (full global no_kg no_disease_tokens)" >&2; exit 2; }
  echo "=== $v: train" >&2
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$R2GENKG" train --config configs/iu_phantom.yaml train.output_dir="$OUT/$v" ${OVERRIDES[$v]}
  echo "$v train wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/times.txt" >&2
  if [ ! -f "$OUT/$v/best/eval_test/results.json" ]; then
    start=$(date +%s)
    "$R2GENKG" test "$OUT/$v/best" --split test
    echo "$v test wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/times.txt" >&2
  fi
done
