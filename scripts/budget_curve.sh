#!/usr/bin/env bash
# What more training time buys (issue 21): the Tatoeba recipe (scripts/recipe_tatoeba.sh, the same
# config; its warm-up and decay are fractions of the budget, so every budget gets the same schedule
# shape) trained for 10, 30, 90 and 180 minutes, each chosen on the valid split and scored once on
# the test split; then a plot of test BLEU against training minutes with steps and tokens/s.
#   bash scripts/budget_curve.sh [OUT [--set KEY=VALUE ...]]   (default runs/budget; MINUTES="10 30"
#   for fewer budgets; options after OUT go to every budget's nmt-train, e.g. --set trainer.precision=32-true)
# About 6 hours on 2 CPU cores for the four budgets. Run on an otherwise idle machine; a killed run
# resumes (run the same command again). Writes OUT/budget.png, OUT/budget.md, OUT/budget.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/budget}
[ $# -gt 0 ] && shift
for m in ${MINUTES:-10 30 90 180}; do
    printf -v limit "00:%02d:%02d:00" $((m / 60)) $((m % 60))
    [ -f "$out/${m}min/test/report.json" ] && { echo "== $m minutes: done before ($out/${m}min) =="; continue; }
    echo "== $m minutes of training ($limit) =="
    bash scripts/recipe_tatoeba.sh "$out/${m}min" --set "trainer.max_time=$limit" "$@"
done
. .venv/bin/activate
python scripts/plot_budget.py "$out"/*min --out "$out"
