#!/usr/bin/env bash
# Fine-tuning without forgetting (issue 21): the Tatoeba recipe's model fine-tuned on image captions
# alone (configs/finetune_captions.yaml) and mixed with a share of its own training data
# (configs/finetune_captions_mixed.yaml: a quarter of it per epoch; the whole of it; the whole of it
# at a fifth of the peak learning rate), 800 steps each; then the model before and the four after,
# beam 5 with the recipe's alpha, on the captions and Tatoeba valid splits, where the mix is chosen
# (the best captions BLEU among the mixes within 1 BLEU of the model before on Tatoeba valid; the
# mix with the best Tatoeba valid BLEU if none is), and on the test splits (scored once).
#   bash scripts/finetune_captions.sh CHECKPOINT ALPHA [OUT]    (default OUT runs/finetune)
# CHECKPOINT and ALPHA: the recipe's choice (runs/tatoeba_cpu/tuning/choice.log, last line).
# A budget in steps: the scores do not depend on the machine's speed. Needs ../shared/data.
# WRITE_DOCS=1: the test table replaces the finetune_table section of docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash scripts/finetune_captions.sh CHECKPOINT ALPHA [OUT]" >&2; exit 2; }
ckpt=$1 alpha=$2 out=${3:-runs/finetune}
[ -f "$ckpt" ] || { echo "finetune_captions.sh: no checkpoint $ckpt" >&2; exit 2; }
. .venv/bin/activate
train() {  # NAME CONFIG [--set ...]
    local name=$1 config=$2; shift 2
    if [ ! -f "$out/$name/TRAINED" ]; then
        resume=(); [ -f "$out/$name/checkpoints/last.ckpt" ] && resume=(--resume)
        nmt-train "$config" --init-from "$ckpt" --output-dir "$out/$name" --no-test "${resume[@]}" "$@"
        touch "$out/$name/TRAINED"
    fi
}
train captions configs/finetune_captions.yaml
train mixed-quarter configs/finetune_captions_mixed.yaml
train mixed-whole configs/finetune_captions_mixed.yaml --set "data.train_weights=[1, 1, 1]"
train mixed-whole-lr1e-4 configs/finetune_captions_mixed.yaml --set "data.train_weights=[1, 1, 1]" --set optim.peak_lr=0.0001
mixes=(mixed-quarter mixed-whole mixed-whole-lr1e-4)
models=(--model "before=$ckpt" --alpha "before=$alpha")
for name in captions "${mixes[@]}"; do
    models+=(--model "$name=$out/$name/checkpoints/last.ckpt" --alpha "$name=$alpha")
done
echo "valid splits (the choice of share)"
python scripts/results_table.py "${models[@]}" --set "captions valid" --set "Tatoeba valid" --runs "$out/valid" --reuse
python - "$out/valid/results.json" "${mixes[@]}" <<'PY' | tee "$out/choice.log"
import json, sys
scores = {name: m["scores"] for name, m in json.load(open(sys.argv[1]))["models"].items()}
bleu = lambda name, split: scores[name][split]["bleu"]  # noqa: E731
keeps = [m for m in sys.argv[2:] if bleu(m, "Tatoeba valid") >= bleu("before", "Tatoeba valid") - 1]
best = max(keeps, key=lambda m: bleu(m, "captions valid")) if keeps else max(sys.argv[2:], key=lambda m: bleu(m, "Tatoeba valid"))
print(f"chosen on valid: {best} (captions {bleu(best, 'captions valid')}, Tatoeba {bleu(best, 'Tatoeba valid')}; "
      f"before: {bleu('before', 'captions valid')}, {bleu('before', 'Tatoeba valid')}; "
      f"{'within 1 BLEU on Tatoeba' if keeps else 'no mix within 1 BLEU on Tatoeba: the one that forgets least'})")
PY
echo "test splits"
python scripts/results_table.py "${models[@]}" --set "captions test" --set "Tatoeba test" --runs "$out/test" --reuse ${WRITE_DOCS:+--write-docs --marker finetune_table}
