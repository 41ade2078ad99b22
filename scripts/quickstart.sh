#!/usr/bin/env bash
# The main job on a fresh machine: set up, train configs/quickstart.yaml on the embedded HSK
# corpus (~8 minutes on 2 CPU cores), translate the 214 held-out test sentences and print
# BLEU/chrF with sacrebleu signatures and sample translations, then translate from stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
run_dir="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
nmt-train configs/quickstart.yaml --output-dir "$run_dir"
echo
echo "nmt-translate with the best checkpoint, from stdin:"
best=$(ls "$run_dir"/checkpoints/best-*.ckpt | head -n 1)
printf '我们明天去学校。\n你喜欢喝茶吗？\n' > "$run_dir/demo.zh"
nmt-translate --checkpoint "$best" --src zh --tgt en < "$run_dir/demo.zh" > "$run_dir/demo.en"
paste "$run_dir/demo.zh" "$run_dir/demo.en" | sed 's/\t/  ->  /'
echo
echo "nmt-evaluate: BLEU/chrF/TER report of the best checkpoint on the held-out test split:"
nmt-evaluate --checkpoint "$best" --src-file "$run_dir/test/src.txt" --ref-file "$run_dir/test/ref.txt" \
    --output-dir "$run_dir/eval"
echo "run directory: $run_dir (test/: src, ref, hyp, scores.json; eval/: report.md, report.json)"
