#!/usr/bin/env bash
# The miniature MTO experiment (conf/experiment/mini_mto.yaml), end to end, on the embedded default:
#   1. adapt the tiny T5 from scratch on the world's text with (a) T5 span corruption, (b) tail filling,
#      (c) mapping; (d) no adaptation is the fourth arm;
#   2. `mto match` on each adapted model (does its decision agree with the template that wins?);
#   3. few-shot fine-tuning: 4 arms x 3 templates x K in {8,32,128,512} training heads per relation x
#      3 seeds, scored on probed (test) and control (dev) heads. The templates: mapping (relation name,
#      no sentinel), prompting (the natural phrase, no sentinel) and masked_prompting (the same phrase
#      with a sentinel): prompting vs masked_prompting isolates objective alignment, mapping vs
#      prompting isolates the wording;
#   4. `mto report` tables and plots.
# Usage: scripts/mini_mto.sh [OUT]   (default outputs/mini_mto/<date>_<time>); extra settings via env:
#   ADAPT_STEPS (default 1500), ADAPT_LR (2e-3), SEEDS (1,2,3), KS (8,32,128,512)
set -euo pipefail
cd "$(dirname "$0")/.."
MTO=${MTO:-.venv/bin/mto}
OUT=$(realpath -m "${1:-outputs/mini_mto/$(date +%Y-%m-%d_%H-%M-%S)}")
ADAPT_STEPS=${ADAPT_STEPS:-1500}
ADAPT_LR=${ADAPT_LR:-2e-3}
SEEDS=${SEEDS:-1,2,3}
KS=${KS:-8,32,128,512}
OBJECTIVES=(span_corruption filling mapping)
start=$(date +%s)

for objective in "${OBJECTIVES[@]}"; do
  "$MTO" adapt experiment=mini_mto objective="$objective" train.steps="$ADAPT_STEPS" train.lr="$ADAPT_LR" \
    train.warmup_steps=50 train.log_every=250 hydra.run.dir="$OUT/adapt/$objective"
done
for objective in "${OBJECTIVES[@]}"; do
  "$MTO" match experiment=mini_mto adapt_run="$OUT/adapt/$objective" hydra.run.dir="$OUT/match/$objective"
done
arms="null,$OUT/adapt/span_corruption,$OUT/adapt/filling,$OUT/adapt/mapping"
"$MTO" train -m experiment=mini_mto "adapt_run=$arms" template=mapping,prompting,masked_prompting \
  "data.n_train=$KS" "seed=$SEEDS" hydra.sweep.dir="$OUT/train"
for metric in exact_match rougeL dev_exact_match dev_rougeL depth_rank; do
  "$MTO" report "$OUT/train" by=adaptation,template,data.n_train metric="$metric" \
    lines=adaptation,template out="$OUT/report/$metric"
done
echo "mini_mto: done in $(( $(date +%s) - start )) s; reports in $OUT/report/"
