#!/usr/bin/env bash
# Build the wheel and the sdist, check them with twine, install the wheel (not the checkout) into
# a fresh environment and run the commands from it: train the toy task for a few steps, translate,
# evaluate, and start nmt-serve to fetch its web page (package data). CI runs this after the tests.
#   bash scripts/check_package.sh [WORK_DIR]        (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${1:-$(mktemp -d)}
mkdir -p "$work"
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install --quiet build twine 2> >(grep -v "is ignored: it is neither" >&2)
rm -rf "$work/dist"
.venv/bin/python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
.venv/bin/python -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "built $(basename "$wheel") and $(basename "$sdist")"
tar -tzf "$sdist" > "$work/sdist.txt"
for f in configs/quickstart.yaml tests/test_beam.py LICENSE CHANGELOG.md; do
    grep -q "/$f\$" "$work/sdist.txt" || { echo "check_package: $f is missing from the sdist" >&2; exit 1; }
done
python3 -m venv "$work/venv"
py=$work/venv/bin/python
$py -m pip install --quiet --upgrade pip
$py -m pip install --quiet "torch==2.13.0"
$py -m pip install --quiet "$wheel[serve]"
cd "$work"  # away from the checkout: `import nmt` must come from the installed wheel
$py - <<'PY'
import importlib.metadata as md, nmt, pathlib
assert "site-packages" in nmt.__file__, nmt.__file__
assert md.version("nmt-toolkit") == nmt.__version__, (md.version("nmt-toolkit"), nmt.__version__)
assert (pathlib.Path(nmt.__file__).parent / "static" / "index.html").is_file(), "the web page is not in the wheel"
print(f"installed nmt-toolkit {nmt.__version__} from the wheel: {nmt.__file__}")
PY
bin=$work/venv/bin
rm -rf run
$bin/nmt-train "$root/configs/toy_reverse.yaml" --output-dir run --no-test --set trainer.max_steps=30 \
    --set trainer.val_check_interval=30 --set trainer.val_bleu_sentences=20 --set data.limit_train=2000 > train.log
ckpt=run/checkpoints/last.ckpt
printf 'a b c\nd e f g\n' > in.xx
printf 'c b a\ng f e d\n' > ref.yy
$bin/nmt-translate --checkpoint $ckpt --src xx --tgt yy -i in.xx -o out.yy
[ "$(wc -l < out.yy)" -eq 2 ] || { echo "check_package: nmt-translate wrote $(wc -l < out.yy) lines, not 2" >&2; exit 1; }
$bin/nmt-evaluate --checkpoint $ckpt --src-file in.xx --ref-file ref.yy --output-dir eval > /dev/null
$bin/nmt-average --help > /dev/null && $bin/nmt-export --help > /dev/null && $bin/nmt-prepare --help > /dev/null && $bin/nmt-import --help > /dev/null
port=$($py -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
$bin/nmt-serve --checkpoint $ckpt --port "$port" > serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    $py -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
    sleep 0.5
done
$py - "$port" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
page = urllib.request.urlopen(base + "/").read().decode()
assert "<html" in page.lower(), page[:200]
req = urllib.request.Request(base + "/translate", data=json.dumps({"text": ["a b c"]}).encode(),
                             headers={"Content-Type": "application/json"})
print("nmt-serve from the wheel: web page", len(page), "bytes; /translate ->", urllib.request.urlopen(req).read().decode()[:120])
PY
echo "check_package: the wheel installs into a fresh environment and its commands run"
