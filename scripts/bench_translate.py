"""Decoding benchmark: beam search with the incremental cache against re-feeding the whole prefix.

    python scripts/bench_translate.py --checkpoint runs/transformer_small/checkpoints/last.ckpt \
        [--src-file ../shared/data/tatoeba-cmn/test.zh] [--beam-size 5] [--max-tokens 4096] [--json OUT]

Each mode runs in its own subprocess so that its peak RSS is its own. Prints sentences/s, target
tokens/s (subword tokens of the hypotheses incl. EOS), wall time and peak RSS per mode, and the
speed ratio cached / uncached measured in the same run. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class PrefixRefeed:
    """Wraps a model so that every step re-feeds the whole prefix without a cache (the slow
    reference): `decode` gets the newest token, keeps the prefix itself and runs the full decoder."""

    def __init__(self, model) -> None:
        self.model = model

    def encode(self, src, src_mask):
        return self.model.encode(src, src_mask)

    def make_cache(self):
        return _Prefix()

    def decode(self, tgt_in, memory, src_mask, cache):
        cache.tokens = tgt_in if cache.tokens is None else torch.cat([cache.tokens, tgt_in], dim=1)
        return self.model.decode(cache.tokens, memory, src_mask, None)[:, -1:]


class _Prefix:
    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None

    def reorder(self, index: torch.Tensor) -> None:
        self.tokens = self.tokens.index_select(0, index)


def run_mode(args: argparse.Namespace) -> dict:
    from nmt.checkpoint import load_model
    from nmt.decoding.beam import BeamOptions
    from nmt.translator import translate

    torch.set_num_threads(args.threads)
    loaded = load_model(args.checkpoint)
    if args.mode == "uncached":
        loaded.model = PrefixRefeed(loaded.model)
    lines = Path(args.src_file).read_text(encoding="utf-8").splitlines()[: args.limit or None]
    t = loaded.cfg.trainer
    options = BeamOptions(beam_size=args.beam_size, max_len_a=t.max_decode_len_a, max_len_b=t.max_decode_len_b)
    translate(loaded, lines[:20], options=options, max_tokens=args.max_tokens)  # warm-up
    start = time.perf_counter()
    hyps = [x.text for x in translate(loaded, lines, options=options, max_tokens=args.max_tokens)]
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) + 1 for ids in loaded.tokenizer.encode_tgt(hyps))
    return {"mode": args.mode, "sentences": len(lines), "seconds": round(seconds, 2),
            "sentences_per_s": round(len(lines) / seconds, 1), "target_tokens_per_s": round(tokens / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "hypotheses": hyps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--src-file", default=str(ROOT.parent / "shared" / "data" / "tatoeba-cmn" / "test.zh"))
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--limit", type=int, default=0, help="first N lines only (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--mode", choices=["cached", "uncached"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args), ensure_ascii=False))
        return 0
    results = {}
    for mode in ("cached", "uncached"):
        cmd = [sys.executable, __file__, "--mode", mode, "--checkpoint", args.checkpoint, "--src-file", args.src_file,
               "--beam-size", str(args.beam_size), "--max-tokens", str(args.max_tokens), "--limit", str(args.limit),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[mode] = json.loads(out)
    same = sum(a == b for a, b in zip(results["cached"].pop("hypotheses"), results["uncached"].pop("hypotheses")))
    summary = {"checkpoint": args.checkpoint, "src_file": args.src_file, "beam_size": args.beam_size,
               "max_tokens": args.max_tokens, "threads": args.threads, **results,
               "speedup_cached_over_uncached": round(results["uncached"]["seconds"] / results["cached"]["seconds"], 2),
               "identical_hypotheses": f"{same}/{results['cached']['sentences']}"}
    print("| mode | sentences/s | target tokens/s | seconds | peak RSS (MB) |\n|---|---|---|---|---|")
    for mode in ("cached", "uncached"):
        r = results[mode]
        print(f"| {mode} | {r['sentences_per_s']} | {r['target_tokens_per_s']} | {r['seconds']} | {r['peak_rss_mb']} |")
    print(f"cached is {summary['speedup_cached_over_uncached']}x faster; identical hypotheses: {summary['identical_hypotheses']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
