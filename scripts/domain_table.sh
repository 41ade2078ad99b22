#!/usr/bin/env bash
# One model for all the shared domains against single-domain models (issue 21). Each model is the
# Tatoeba CPU recipe (scripts/recipe_tatoeba.sh: 30 minutes of training, then the checkpoint and the
# length penalty chosen on its own valid split) on other training data:
#   all         configs/all_domains_cpu.yaml: Tatoeba + HSK + captions + microblogs + subtitles,
#               chosen on the valid splits of Tatoeba, captions and microblogs together
#   all-90min   the same for 90 minutes: the three single-domain models' budgets together, the
#               like-for-like compute (its schedule scales with the budget)
#   all-tags    all, each corpus led by its domain's tag (Kobus et al. 2017): tatoeba (Tatoeba, HSK),
#               captions, microblogs; the subtitles untagged, as the sets without training data
#               are decoded (TED, WMT22, FLORES); each valid split chosen on with its tag
#   captions    ../shared/data/mmt-3am-zhen/train alone, chosen on its valid split
#   microblogs  ../shared/data/microtopia-zhen/train alone, chosen on its valid split
#   tatoeba     the recipe itself (Tatoeba + HSK); TATOEBA_RUN=DIR takes a finished recipe run instead
# Then every model on every domain's test split (scripts/results_table.py): Tatoeba, captions,
# microblogs, IWSLT17 TED, WMT22, FLORES. Writes OUT/table/results.json and, with --write-docs as the
# second argument, the domain table of docs/results.md.
#   bash scripts/domain_table.sh [OUT [--write-docs]]     (default runs/domains)
# About 4 hours on 2 CPU cores (four or five 30-minute trainings and one of 90 minutes). Run on an otherwise idle machine;
# a killed run resumes (run the same command again).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/domains}
d=../shared/data
[ -f "$d/mmt-3am-zhen/train.zh" ] || { echo "domain_table.sh: needs $d (../shared/data beside the project)" >&2; exit 2; }
all_dev="$d/tatoeba-cmn/valid $d/mmt-3am-zhen/valid $d/microtopia-zhen/valid"
CONFIG=configs/all_domains_cpu.yaml DEV="$all_dev" SCORE=0 bash scripts/recipe_tatoeba.sh "$out/all"
CONFIG=configs/all_domains_cpu.yaml DEV="$all_dev" SCORE=0 bash scripts/recipe_tatoeba.sh "$out/all90" \
    --set trainer.max_time=00:01:30:00
tagged_dev="$d/tatoeba-cmn/valid=tatoeba $d/mmt-3am-zhen/valid=captions $d/microtopia-zhen/valid=microblogs"
CONFIG=configs/all_domains_cpu.yaml DEV="$tagged_dev" SCORE=0 bash scripts/recipe_tatoeba.sh "$out/all_tags" \
    --set 'data.train_tags=[tatoeba, tatoeba, captions, microblogs, ""]' --set decoding.domain=tatoeba
for domain in captions=mmt-3am-zhen microblogs=microtopia-zhen; do
    name=${domain%=*}; corpus=$d/${domain#*=}
    DEV="$corpus/valid" SCORE=0 bash scripts/recipe_tatoeba.sh "$out/$name" \
        --set "data.train=[$corpus/train]" --set "data.valid=$corpus/valid" --set data.test=null
done
tatoeba=${TATOEBA_RUN:-$out/tatoeba}
[ -n "${TATOEBA_RUN:-}" ] || SCORE=0 bash scripts/recipe_tatoeba.sh "$tatoeba"
. .venv/bin/activate
models=(); alphas=()
for run in all="$out/all" all-90min="$out/all90" all-tags="$out/all_tags" tatoeba="$tatoeba" captions="$out/captions" \
           microblogs="$out/microblogs"; do
    read -r best alpha < <(tail -n 1 "${run#*=}/tuning/choice.log")
    models+=(--model "${run%%=*}=$best"); alphas+=(--alpha "${run%%=*}=$alpha")
done
python scripts/results_table.py "${models[@]}" "${alphas[@]}" --tagged all-tags --runs "$out/table" --reuse \
    --set "Tatoeba test" --set "captions test" --set "microblogs test" --set "IWSLT17 TED test" \
    --set "WMT22 general" --set "FLORES devtest" --marker domain_table ${2:+"$2"}
