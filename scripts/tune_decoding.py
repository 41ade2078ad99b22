"""Choose a checkpoint and beam search's length penalty on a development set (never on the test set).

    python scripts/tune_decoding.py CKPT [CKPT ...] --src valid.zh --ref valid.en \
        [--alphas 0,0.3,0.6,1,1.5,2,3,4] [--base-alpha 0.6] [--beam-size 5] [--domains FILE] [--out DIR]

With several checkpoints (e.g. the last one and averages of the last 2, 4 and 8), each translates
the development set at --base-alpha first and the best by BLEU goes on. Then the chosen checkpoint
translates it once per GNMT alpha. Writes DIR/tuning.json and DIR/tuning.md (BLEU, chrF, brevity
penalty and length ratio per row). The last line printed is `CHECKPOINT ALPHA` of the best BLEU,
so a shell script can take it with `tail -n 1`. For a model trained with domain tags
(data.train_tags), --domains gives each development source its domain, one name per line (an empty
line: untagged), when the set mixes domains; without it every source gets the model's
decoding.domain.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="candidate checkpoints")
    p.add_argument("--src", required=True, help="development source sentences, one per line")
    p.add_argument("--ref", required=True, help="their reference translations")
    p.add_argument("--alphas", default="0,0.3,0.6,1,1.5,2,3,4", help="GNMT length-penalty exponents to try")
    p.add_argument("--base-alpha", type=float, default=0.6, help="alpha for comparing the checkpoints")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--domains", default=None, help="each source's domain tag, one per line (empty: untagged)")
    p.add_argument("--out", type=Path, default=None, help="directory for tuning.json and tuning.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nmt.api import Translator
    from nmt.data import read_text_lines
    from nmt.evaluation import corpus_scores

    src, ref = read_text_lines(Path(args.src)), read_text_lines(Path(args.ref))
    if len(src) != len(ref):
        sys.exit(f"tune_decoding.py: error: {args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
    domains = read_text_lines(Path(args.domains)) if args.domains else None
    if domains is not None and len(domains) != len(src):
        sys.exit(f"tune_decoding.py: error: {args.src} has {len(src)} lines but {args.domains} has {len(domains)}")

    def translate(translator, alpha: float) -> list[str]:
        """The hypotheses in source order; with --domains, each domain's sources decoded with its tag."""
        options = translator.options(beam_size=args.beam_size, length_penalty="gnmt", alpha=alpha)
        if domains is None:
            return [t.text for t in translator.translate(src, options)]
        hyp = [""] * len(src)
        for domain in dict.fromkeys(domains):
            rows = [i for i, d in enumerate(domains) if d == domain]
            for i, t in zip(rows, translator.translate([src[i] for i in rows], options, domain=domain)):
                hyp[i] = t.text
        return hyp

    def score(translator, checkpoint: str, alpha: float) -> dict:
        t0 = time.perf_counter()
        hyp = translate(translator, alpha)
        scores = corpus_scores(hyp, [ref], tgt_lang=translator.cfg.data.tgt_lang)
        bleu = scores["bleu"]
        bp = 1.0 if bleu["sys_len"] >= bleu["ref_len"] else math.exp(1 - bleu["ref_len"] / max(bleu["sys_len"], 1))
        row = {"checkpoint": checkpoint, "alpha": alpha, "bleu": bleu["score"], "chrf": scores["chrf"]["score"],
               "bp": round(bp, 3), "ratio": bleu["length_ratio"], "seconds": round(time.perf_counter() - t0, 1),
               "signature": bleu["signature"]}
        print(f"{Path(checkpoint).name}, alpha {alpha:g}: BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f}, "
              f"BP {row['bp']}", flush=True)
        return row

    rows, loaded = [], {}
    if len(args.checkpoints) > 1:
        for checkpoint in args.checkpoints:
            loaded[checkpoint] = Translator.from_checkpoint(checkpoint)
            rows.append(score(loaded[checkpoint], checkpoint, args.base_alpha))
    chosen = max(rows, key=lambda r: r["bleu"])["checkpoint"] if rows else args.checkpoints[0]
    translator = loaded.get(chosen) or Translator.from_checkpoint(chosen)  # the winner is not loaded twice
    for alpha in (float(a) for a in args.alphas.split(",")):
        done = next((r for r in rows if r["checkpoint"] == chosen and r["alpha"] == alpha), None)
        rows.append(done or score(translator, chosen, alpha))
    best = max((r for r in rows if r["checkpoint"] == chosen), key=lambda r: r["bleu"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"checkpoints": args.checkpoints, "src": args.src, "ref": args.ref, "domains": args.domains,
                  "beam_size": args.beam_size,
                  "sentences": len(src), "rows": rows, "best_checkpoint": chosen, "best_alpha": best["alpha"]}
        (args.out / "tuning.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        lines = [f"Tuning on {args.src} ({len(src)} sentences, beam {args.beam_size}, GNMT length penalty):", "",
                 "| checkpoint | alpha | BLEU | chrF | BP | hyp/ref length |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {Path(r['checkpoint']).name} | {r['alpha']:g} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['bp']} | "
                  f"{r['ratio']} |" for r in rows]
        lines += ["", f"Chosen: {Path(chosen).name}, alpha {best['alpha']:g}. BLEU signature: `{best['signature']}`"]
        (args.out / "tuning.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{chosen} {best['alpha']:g}")
    return 0


if __name__ == "__main__":
    from nmt.cli import run_cli

    sys.exit(run_cli("tune_decoding.py", main))  # a missing file, a bad checkpoint, an unknown domain: one line
