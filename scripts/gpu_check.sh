#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): training throughput and beam decoding speed on one GPU.
#
#   bash scripts/gpu_check.sh --pack              # here, before a device run: wheels, data, commit -> build/gpu_check/
#   bash scripts/gpu_check.sh [--out DIR]         # on the GPU machine: at most 8 minutes (see gpu_check.py's parts)
#   bash scripts/gpu_check.sh --tiny [--out DIR]  # the same code path on CPU, about half a minute
#
# DIR (default runs/gpu_check) gets results.json, results.md and log.txt. The Python it runs with:
#   1. .venv/bin/python, when scripts/setup.sh made it here;
#   2. else the machine's python3 if it has torch -- the GPU machine's image has a CUDA torch but no
#      network, so nothing can be pip-installed there from PyPI: the packages its image lacks
#      (datasets and its dill/multiprocess/fsspec, ctranslate2) come as wheels in
#      build/gpu_check/wheels (made by --pack; carry build/gpu_check) and nmt runs from this tree;
#   3. else scripts/setup.sh, which needs PyPI (it installs torch==2.13.0: CUDA wheels on Linux x86-64).
# ../shared/data does not travel to the GPU machine either: --pack copies the files the check reads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PACK=build/gpu_check
PACK_PYTHON=3.12  # the GPU machine image's python3 (ctranslate2 is a compiled wheel: it must match)

pack() {
    local data=../shared/data py=.venv/bin/python
    [ -d "$data" ] || { echo "gpu_check.sh: --pack needs $data" >&2; exit 2; }
    [ -x "$py" ] || py=python3
    rm -rf "$PACK" && mkdir -p "$PACK/wheels" "$PACK/data"
    # the versions this checkout is tested with, for the GPU machine's Python
    local pins
    pins=$("$py" -c "from importlib.metadata import version as v; print(' '.join(f'{p}=={v(p)}' for p in
        ('datasets', 'dill', 'multiprocess', 'fsspec', 'ctranslate2')))")
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PACK_PYTHON" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$PACK/wheels" $pins
    # what make_scale_corpus.py reads (its SOURCES), the validation split and the decoding test set
    for f in tatoeba-cmn/train tatoeba-cmn/valid hsk-sentences/all mmt-3am-zhen/train microtopia-zhen/train \
             aic2017-enzh/train; do
        mkdir -p "$PACK/data/$(dirname $f)" && cp "$data/$f.zh" "$data/$f.en" "$PACK/data/$(dirname $f)/"
    done
    mkdir -p "$PACK/data/wmt22-generaltest2022-zhen" && cp "$data/wmt22-generaltest2022-zhen/test.zh" "$PACK/data/wmt22-generaltest2022-zhen/"
    local commit
    commit=$(git rev-parse HEAD)
    git diff --quiet HEAD -- nmt scripts configs pyproject.toml || commit="$commit+dirty"
    echo "$commit" > "$PACK/commit.txt"
    echo "gpu_check.sh: packed $(du -sh "$PACK" | cut -f1) into $PACK ($pins); on the GPU machine run, carrying $PACK:"
    echo "    bash scripts/gpu_check.sh --out \$OUT"
}

args=("$@") out=runs/gpu_check tiny=0
for ((i = 0; i < $#; i++)); do
    case "${args[i]}" in
        --pack) pack; exit 0 ;;
        --tiny) tiny=1 ;;
        --out) out="${args[i + 1]}" ;;
        --out=*) out="${args[i]#--out=}" ;;
    esac
done

t0=$SECONDS
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null; then
    PY=python3
    if [ -d "$PACK/wheels" ]; then
        site=${TMPDIR:-/tmp}/nmt-gpu-check-site
        python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$PACK"/wheels/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # nmt from this source tree
else
    bash scripts/setup.sh "[ctranslate2]"
    PY=.venv/bin/python
fi
echo "gpu_check.sh: python $PY ($("$PY" --version 2>&1)), set up in $((SECONDS - t0)) s"

mkdir -p "$out"
# Real mode: the parts' budgets add up to 455 s; SIGTERM at 480 s records the part it stops.
limit=$([ $tiny = 1 ] && echo 170 || echo 480)
set +e -o pipefail
PYTHONUNBUFFERED=1 timeout -k 20 "$limit" "$PY" scripts/gpu_check.py "$@" 2>&1 | tee "$out/log.txt"
rc=$?
[ $rc = 124 ] && echo "gpu_check.sh: stopped at the ${limit} s limit; $out/results.json holds the parts that finished" >&2
exit $rc
