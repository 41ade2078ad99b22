#!/usr/bin/env bash
# The Tatoeba CPU recipe (configs/tatoeba_cpu.yaml): 30 minutes of training on Tatoeba train + HSK,
# the last 8 checkpoints averaged, the length penalty tuned on the valid split, then the test split
# scored once. Needs ../shared/data; run on an otherwise idle machine (the budget is wall-clock).
#   bash scripts/recipe_tatoeba.sh [RUN_DIR]        (default runs/tatoeba_cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || bash scripts/setup.sh
. .venv/bin/activate
out=${1:-runs/tatoeba_cpu}
data=../shared/data/tatoeba-cmn
[ -f "$data/test.zh" ] || { echo "recipe_tatoeba.sh: needs $data (../shared/data beside the project)" >&2; exit 2; }
nmt-train configs/tatoeba_cpu.yaml --output-dir "$out" --no-test
nmt-average --last 8 "$out/checkpoints" -o "$out/average.ckpt"
echo "valid split, last checkpoint (no averaging), alpha 0.6:"
python scripts/tune_decoding.py "$out/checkpoints/last.ckpt" --src "$data/valid.zh" --ref "$data/valid.en" \
    --alphas 0.6 --out "$out/valid-last" | head -n 1
echo "valid split, averaged checkpoint, length penalty:"
alpha=$(python scripts/tune_decoding.py "$out/average.ckpt" --src "$data/valid.zh" --ref "$data/valid.en" \
    --out "$out/tuning" | tee /dev/stderr | tail -n 1)
echo "test split, averaged checkpoint, beam 5, alpha $alpha (chosen on valid):"
nmt-evaluate --checkpoint "$out/average.ckpt" --src-file "$data/test.zh" --ref-file "$data/test.en" \
    --alpha "$alpha" --output-dir "$out/test"
sed -n "/^| metric/,/^$/p" "$out/test/report.md"
