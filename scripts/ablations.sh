#!/usr/bin/env bash
# The docs/results.md experiment: the iu_phantom variants, several seeds each, the same budget
# (train.epochs of configs/iu_phantom.yaml, no early stopping), each trained (resumable: rerun to
# continue where it stopped) then evaluated on the 590 test studies with greedy decoding. Each
# finished run leaves a record, docs/ablation_runs/<variant>/seed<N>.json (its figures and
# conditions; commit it): a run with a record is done, even where its run folder is gone.
#   scripts/ablations.sh [RUN ...]     RUN: a variant (all its seeds) or VARIANT/seedN
#   THREADS=1 scripts/ablations.sh full/seed1 &  THREADS=1 scripts/ablations.sh full/seed2 &
# Variants and seeds: full, global, no_kg, full_no_diagnosis_prompt × seeds 1 2 3;
# no_disease_tokens × seed 1. Then: .venv/bin/python scripts/results_table.py
# Environment: OUT (run folders), RECORDS (records), THREADS, R2GENKG (the command), EXTRA (overrides
# added to every run, to rerun the experiment under a candidate default, e.g.
#   EXTRA="model.qformer.uncertain_policy=soft" OUT=outputs/runs/ablations_soft RECORDS=docs/ablation_runs_soft
#   scripts/ablations.sh full ).
set -euo pipefail
cd "$(dirname "$0")/.."
R2GENKG=${R2GENKG:-.venv/bin/r2genkg}
OUT=${OUT:-outputs/runs/ablations}
RECORDS=${RECORDS:-docs/ablation_runs}
PYTHON=${PYTHON:-.venv/bin/python}
THREADS=${THREADS:-2}
EXTRA=${EXTRA:-}

declare -A OVERRIDES=(
  [full]=""
  [global]="model.kg.mode=global"
  [no_kg]="model.kg.mode=none model.cross_attention=false"
  [no_disease_tokens]="model.disease_tokens.enabled=false"
  [full_no_diagnosis_prompt]="model.diagnosis_prompt=false"
)
declare -A SEEDS=(
  [full]="1 2 3" [global]="1 2 3" [no_kg]="1 2 3" [full_no_diagnosis_prompt]="1 2 3"
  [no_disease_tokens]="1"
)
ORDER=(full no_kg full_no_diagnosis_prompt global no_disease_tokens)

runs=()
for arg in "${@:-${ORDER[@]}}"; do
  variant=${arg%%/*}
  [ -n "${OVERRIDES[$variant]+x}" ] || { echo "unknown variant $variant (${ORDER[*]})" >&2; exit 2; }
  if [[ $arg == */seed* ]]; then runs+=("$arg"); else for s in ${SEEDS[$variant]}; do runs+=("$variant/seed$s"); done; fi
done

mkdir -p "$OUT"
for run in "${runs[@]}"; do
  variant=${run%%/*}; seed=${run##*/seed}
  dir="$OUT/$variant/seed$seed"
  record="$RECORDS/$variant/seed$seed.json"
  if [ -f "$record" ]; then echo "=== $run: done ($record)" >&2; continue; fi
  echo "=== $run: train (threads $THREADS)" >&2
  started=$(date -Is); start=$(date +%s); commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  # shellcheck disable=SC2086
  "$R2GENKG" train --config configs/iu_phantom.yaml train.output_dir="$dir" train.seed="$seed" \
    train.threads="$THREADS" ${OVERRIDES[$variant]} $EXTRA
  train_s=$(( $(date +%s) - start )); start=$(date +%s)
  if [ ! -f "$dir/best/eval_test/results.json" ]; then "$R2GENKG" test "$dir/best" --split test --batch-size 32; fi
  # the decoder alone: the same checkpoint with the coverage pass off (generator/coverage.py)
  if [ ! -f "$dir/best/eval_test_uncovered/results.json" ]; then
    "$R2GENKG" test "$dir/best" --split test --batch-size 32 --output "$dir/best/eval_test_uncovered" \
      --set generation.cover_decisions=false
  fi
  test_s=$(( $(date +%s) - start ))
  "$PYTHON" scripts/results_table.py --record "$dir" --out "$record" --set "train_wall_s=$train_s" \
    --set "test_wall_s=$test_s" --set "threads=$THREADS" --set "started=\"$started\"" \
    --set "commit=\"$commit\"" --set "extra=\"$EXTRA\""   # quoted: a hash such as 1234567 or 12e4567 would read as a number
done
