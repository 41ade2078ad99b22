#!/usr/bin/env bash
# Same-run comparison against fairseq 0.12.2 on this machine (facts: ../shared/peers/FAIRSEQ.md).
#
#   bash scripts/peers/fairseq.sh install [ENV_DIR]       fairseq 0.12.2 in its own venv (default
#                                                          build/peers/fairseq-env); idempotent
#   bash scripts/peers/fairseq.sh speed [--minutes 3] [--out runs/peers/fairseq]
#        the HSK speed workload (scripts/bench.py): fairseq-train, then nmt-train, for the same
#        budget, back to back; each translates the 354 test sentences (beam 5, batches of 32).
#        Writes OUT/speed/results.json (both, the ratio, machine, commit, versions, commands).
#   bash scripts/peers/fairseq.sh quality [fairseq-usual|fairseq-recipe] [--minutes 30] [--out ...]
#        [--limit-valid N] [--limit-test N] [--fresh] [--total-updates N]
#        the Tatoeba+HSK run: fairseq-usual = the anchor flags of FAIRSEQ.md; fairseq-recipe = the
#        hyperparameters of configs/tatoeba_cpu.yaml, checkpoint averaging and the length penalty
#        chosen on the valid split as scripts/recipe_tatoeba.sh does. Scored on the Tatoeba test and
#        WMT22 (BLEU, chrF, sacrebleu signatures printed). Writes OUT/<variant>/results.json.
#        Run again, it reuses the trained model (--fresh trains anew); a killed run resumes.
#
# Both take --threads N (OMP/MKL threads of every process, default 2 as FAIRSEQ.md; with anything else
# running on 2 cores, 2 threads is several times slower than 1). FAIRSEQ_ENV=DIR points them at
# another environment. Run on an otherwise idle machine: every budget is wall-clock time.
# speed/quality run in nmt's .venv (scripts/setup.sh makes it): the tokenizer, data and scoring
# are nmt's own code; fairseq's tools come from ENV_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

default_env=build/peers/fairseq-env
if ! git check-ignore -q build/peers 2>/dev/null; then
    default_env=/tmp/peers/fairseq-env  # keep the environment out of the work tree
    echo "fairseq.sh: build/ is not ignored by git here: the environment goes to $default_env" >&2
fi

step() { echo "+ $*"; "$@"; }

install() {
    local env=$1
    local patch=scripts/peers/fairseq_patch.py stamp="$1/PEERS_FAIRSEQ_OK"
    local want; want="fairseq 0.12.2, $(sha256sum "$patch" | cut -c1-16)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$env/bin/fairseq-train" ]; then
        echo "fairseq.sh install: $env already has $want (delete $stamp to reinstall)"
        return 0
    fi
    [ -x "$env/bin/python" ] || step python3 -m venv "$env"
    local py=$env/bin/python
    # torch first and pinned: an unpinned torch (or torchaudio) pulls several GB of CUDA packages
    step "$py" -m pip install --quiet "torch==2.13.0"
    step "$py" -m pip install --quiet "numpy<2" cython ninja sentencepiece==0.2.1 sacrebleu==2.6.0 ctranslate2==4.8.5
    mkdir -p "$env/src"
    # 0.12.2 is the last release, an sdist only; metadata is read with the venv's own torch
    [ -f "$env/src/fairseq-0.12.2.tar.gz" ] ||
        step "$py" -m pip download --quiet --no-deps --no-build-isolation "fairseq==0.12.2" -d "$env/src"
    rm -rf "$env/src/fairseq-0.12.2"
    step tar -xzf "$env/src/fairseq-0.12.2.tar.gz" -C "$env/src"
    # setup.py (missing C++ extensions, hydra/omegaconf pins, no torchaudio), dataclass defaults,
    # hydra_init, the BetterTransformer branch: see the patch script's docstring
    step "$py" "$patch" "$env/src/fairseq-0.12.2"
    step env MAX_JOBS=2 "$py" -m pip install --quiet --no-build-isolation "$env/src/fairseq-0.12.2"
    step "$py" -m pip install --quiet hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
    # the check: fairseq imports, its hydra config store builds, and the torch is still the CPU one
    local abs; abs=$(realpath "$env")
    echo "+ (cd /tmp && TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $abs/bin/fairseq-train --help >/dev/null)"
    (cd /tmp && TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$abs/bin/fairseq-train" --help >/dev/null)
    step "$py" -c "import fairseq, torch, hydra, omegaconf; print('fairseq', fairseq.__version__, '| torch', torch.__version__, '| hydra-core', hydra.__version__, '| omegaconf', omegaconf.__version__)"
    echo "$want" > "$stamp"
    echo "fairseq.sh install: done ($env)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    install)
        install "${1:-$default_env}"
        ;;
    speed|quality)
        [ -x .venv/bin/python ] || step bash scripts/setup.sh
        env_dir=${FAIRSEQ_ENV:-$default_env}
        [ -x "$env_dir/bin/fairseq-train" ] || install "$env_dir"
        step .venv/bin/python scripts/peers/fairseq_compare.py "$cmd" --env "$env_dir" "$@"
        ;;
    *)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
        [ -z "$cmd" ] || [ "$cmd" = -h ] || [ "$cmd" = --help ] || exit 2
        ;;
esac
