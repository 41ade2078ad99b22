#!/usr/bin/env bash
# The Tatoeba CPU recipe (configs/tatoeba_cpu.yaml): 30 minutes of training on Tatoeba train + HSK;
# then, on the valid split only, a choice between the last checkpoint and the averages of the last
# 2, 4 and 8 step checkpoints, and of the length penalty; then the test split and WMT22 scored once
# each (WMT22 against reference A, then A and B).
# Needs ../shared/data; run on an otherwise idle machine (the budget is wall-clock time).
#   bash scripts/recipe_tatoeba.sh [RUN_DIR [--set KEY=VALUE ...]]   (default runs/tatoeba_cpu)
# Options after RUN_DIR go to nmt-train: `--set trainer.max_time=00:01:30:00` trains the same recipe
# for 90 minutes (its schedule is in fractions of the budget; scripts/budget_curve.sh).
# Run again on a finished RUN_DIR, it redoes only the steps after training; on a killed one, it
# resumes training first.
# The same recipe for other data (scripts/domain_table.sh): CONFIG=other.yaml (default
# configs/tatoeba_cpu.yaml), DEV="PREFIX ..." the valid split(s) the choices are made on (several
# are concatenated; default the Tatoeba valid split; PREFIX=TAG decodes a split with the domain tag
# TAG, for a model trained with data.train_tags), SCORE=0 to stop after the choice (the last line of
# RUN_DIR/tuning/choice.log: CHECKPOINT ALPHA) without scoring the Tatoeba test and WMT22.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || bash scripts/setup.sh
. .venv/bin/activate
out=${1:-runs/tatoeba_cpu}
[ $# -gt 0 ] && shift
data=../shared/data/tatoeba-cmn
[ -f "$data/test.zh" ] || { echo "recipe_tatoeba.sh: needs $data (../shared/data beside the project)" >&2; exit 2; }
config=${CONFIG:-configs/tatoeba_cpu.yaml}
read -r -a dev_specs <<< "${DEV:-$data/valid}"
dev=(); tags=(); tagged=0  # PREFIX=TAG: the split's prefix and its domain tag ("" without one)
for spec in "${dev_specs[@]}"; do
    prefix=${spec%%=*}; tag=""; [ "$spec" = "$prefix" ] || { tag=${spec#*=}; tagged=1; }
    [ -f "$prefix.zh" ] && [ -f "$prefix.en" ] || { echo "recipe_tatoeba.sh: DEV: no $prefix.zh and $prefix.en" >&2; exit 2; }
    dev+=("$prefix"); tags+=("$tag")
done
if [ ! -f "$out/TRAINED" ]; then
    resume=(); [ -f "$out/checkpoints/last.ckpt" ] && resume=(--resume)
    mkdir -p "$out"  # train.log: steps and tokens/s for scripts/plot_budget.py
    nmt-train "$config" --output-dir "$out" --no-test "${resume[@]}" "$@" 2>&1 | tee -a "$out/train.log"
    touch "$out/TRAINED"
fi
candidates=("$out/checkpoints/last.ckpt")
saved=$(find "$out/checkpoints" -name 'step*.ckpt' | wc -l)
for n in 2 4 8; do
    [ "$saved" -ge "$n" ] || continue  # a short budget (or a slow machine) saved fewer step checkpoints
    nmt-average --last "$n" "$out/checkpoints" -o "$out/average$n.ckpt"
    candidates+=("$out/average$n.ckpt")
done
echo "valid split: the checkpoint, then the length penalty (${dev[*]})"
mkdir -p "$out/tuning"
if [ ${#dev[@]} -eq 1 ]; then dev_zh=${dev[0]}.zh; dev_en=${dev[0]}.en
else  # several valid splits: one development set of all of them
    dev_zh=$out/tuning/dev.zh; dev_en=$out/tuning/dev.en
    for lang in zh en; do
        for prefix in "${dev[@]}"; do cat "$prefix.$lang"; done > "$out/tuning/dev.$lang"
    done
fi
domains=()  # with tags: each development source's domain, one per line
if [ "$tagged" = 1 ]; then
    for i in "${!dev[@]}"; do awk -v tag="${tags[$i]}" '{ print tag }' "${dev[$i]}.zh"; done > "$out/tuning/dev.domains"
    domains=(--domains "$out/tuning/dev.domains")
fi
# tee to a file, not to /dev/stderr: reopening /dev/stderr truncates a log that stderr is redirected
# to (`> recipe.log 2>&1`), and the shell then writes on at its old offset behind a hole of NUL bytes
python scripts/tune_decoding.py "${candidates[@]}" --src "$dev_zh" --ref "$dev_en" \
    "${domains[@]}" --out "$out/tuning" | tee "$out/tuning/choice.log"
read -r best alpha < <(tail -n 1 "$out/tuning/choice.log")
[ "${SCORE:-1}" = 0 ] && exit 0
echo "test split: $best, beam 5, alpha $alpha (both chosen on valid)"
nmt-evaluate --checkpoint "$best" --src-file "$data/test.zh" --ref-file "$data/test.en" \
    --alpha "$alpha" --output-dir "$out/test"
sed -n "/^| metric/,/^$/p" "$out/test/report.md"
wmt=../shared/data/wmt22-generaltest2022-zhen
echo "WMT22: the same checkpoint and alpha, reference A, then references A and B"
nmt-evaluate --checkpoint "$best" --src-file "$wmt/test.zh" --ref-file "$wmt/test.en" \
    --alpha "$alpha" --output-dir "$out/wmt22"
nmt-evaluate --hyp "nmt=$out/wmt22/hypotheses.en" --ref-file "$wmt/test.en" --ref-file "$wmt/test.en.refB" \
    --output-dir "$out/wmt22-refsAB"
