"""Write N distinct zh-en pairs built from the real training pairs of ../shared/data, in shards.

    python scripts/make_scale_corpus.py 10000000 /data/scale10m        # the benchmark corpus
    python scripts/make_scale_corpus.py 2000 /tmp/scale --shard-size 500  # tests

Pair n joins k = 1..4 real pairs (Chinese without a space, English with one), so lengths look
like news sentences (about 2.5 Tatoeba-sized sentences on average) rather than phrases. The pairs
are distinct by construction: for each k, the n-th k-tuple of base-pair indices is the n-th
number of a bijective scramble of [0, P^k) written in base P (P distinct base pairs), so no two
outputs use the same tuple. Output: OUT/train-00000.{zh,en}, ... (line-aligned, --shard-size
pairs each) and OUT/manifest.json (N, shards, sources, k shares). Deterministic for a seed.

The corpus is for measuring scale (preparation, loading, start-up, memory), not for translation
quality: joined sentences are not real documents.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = ("tatoeba-cmn/train", "hsk-sentences/all", "mmt-3am-zhen/train", "microtopia-zhen/train",
           "aic2017-enzh/train")
PATTERN = (2, 3, 1, 4, 2, 3, 4, 1, 3, 2)  # k for pair n is PATTERN[n % 10]: mean 2.5


def base_pairs(data: Path) -> list[tuple[str, str]]:
    seen, pairs = set(), []
    for name in SOURCES:
        zh, en = data / f"{name}.zh", data / f"{name}.en"
        if not zh.is_file() or not en.is_file():
            raise SystemExit(f"make_scale_corpus: {zh} or {en} is missing (needs ../shared/data)")
        for z, e in zip(zh.read_text("utf-8").splitlines(), en.read_text("utf-8").splitlines()):
            pair = (z.strip(), e.strip())
            if pair[0] and pair[1] and pair not in seen:
                seen.add(pair)
                pairs.append(pair)
    return pairs


def scrambler(p: int, k: int, seed: int):
    """A bijection of [0, p^k): m -> (a*m + c) mod p^k with gcd(a, p) = 1."""
    size = p ** k
    a = int(size * 0.6180339887498949) + seed  # golden-ratio step: neighbours share no digits
    while math.gcd(a, p) != 1:
        a += 1
    c = int(size * 0.41421356237309503) + k  # offset: pair 0 is no run of index 0

    def f(m: int) -> list[int]:
        v = (a * m + c) % size
        digits = []
        for _ in range(k):
            v, d = divmod(v, p)
            digits.append(d)
        return digits

    return f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, help="number of pairs")
    ap.add_argument("out", type=Path, help="output directory")
    ap.add_argument("--shard-size", type=int, default=1_000_000, help="pairs per shard file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data directory")
    args = ap.parse_args(argv)
    if args.n < 1 or args.shard_size < 1:
        raise SystemExit("make_scale_corpus: n and --shard-size must be positive")
    pairs = base_pairs(args.data)
    p = len(pairs)
    scramble = {k: scrambler(p, k, args.seed) for k in (1, 2, 3, 4)}
    used = {k: 0 for k in (1, 2, 3, 4)}
    args.out.mkdir(parents=True, exist_ok=True)
    start, shards, written = time.perf_counter(), [], 0
    while written < args.n:
        name = f"train-{len(shards):05d}"
        with open(args.out / f"{name}.zh", "w", encoding="utf-8") as fz, \
                open(args.out / f"{name}.en", "w", encoding="utf-8") as fe:
            zh_lines, en_lines = [], []
            for n in range(written, min(args.n, written + args.shard_size)):
                k = PATTERN[n % len(PATTERN)]
                if k == 1 and used[1] >= p:  # single pairs run out first: take a new pair of two
                    k = 2
                idx = scramble[k](used[k])
                used[k] += 1
                zh_lines.append("".join(pairs[i][0] for i in idx))
                en_lines.append(" ".join(pairs[i][1] for i in idx))
            fz.write("\n".join(zh_lines) + "\n")
            fe.write("\n".join(en_lines) + "\n")
            written += len(zh_lines)
        shards.append(name)
    manifest = {"pairs": args.n, "base_pairs": p, "sources": [f"../shared/data/{s}" for s in SOURCES],
                "shards": shards, "shard_size": args.shard_size, "seed": args.seed,
                "pairs_by_k": {str(k): v for k, v in used.items()},
                "seconds": round(time.perf_counter() - start, 1)}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.n:,} pairs in {len(shards)} shard(s) to {args.out} ({manifest['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
