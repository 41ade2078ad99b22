"""nmt-calibrate CKPT -o OUT.ckpt [--src VALID.zh --ref VALID.en] [--threshold 50]

Fits the per-sentence confidence (nmt/confidence.py) on the valid split: decodes it with the
checkpoint's own decoding options, scores every output by sentence chrF against its reference,
fits a logistic model of "chrF >= threshold" on the output's signals (mean token log-probability,
length deviation, repeated 3-grams), and writes the checkpoint with it. nmt-translate's jsonl,
the Python API and nmt-serve then report `confidence`, and degenerate outputs are decoded again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nmt.cli import UsageError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-calibrate", description="Fit and store a per-sentence confidence.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the checkpoint to write (may be CKPT itself)")
    p.add_argument("--src", type=Path, default=None, help="valid source file (default: the config's data.valid)")
    p.add_argument("--ref", type=Path, default=None, help="valid reference file (default: the config's data.valid)")
    p.add_argument("--threshold", type=float, default=50.0,
                   help="sentence chrF of a good translation (default 50): confidence is P(chrF >= threshold)")
    p.add_argument("--max-sentences", type=int, default=32, help="sentences per decoding batch (default 32)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        import numpy as np
        from sacrebleu.metrics import CHRF

        from nmt.api import Translator, hypothesis_logprob
        from nmt.checkpoint import store_entry
        from nmt.confidence import FEATURES, auroc, fit, length_ratio, signals
        from nmt.errors import DataError
        from nmt.textio import read_text_lines

        if not 0 < args.threshold < 100:
            raise UsageError(f"--threshold is a chrF between 0 and 100 (got {args.threshold})")
        translator = Translator.from_checkpoint(args.checkpoint, max_sentences=args.max_sentences)
        translator.calibration = None  # fit on the outputs as they are, not as an older calibration re-decodes them
        data = translator.cfg.data
        if (args.src is None or args.ref is None) and (data.source != "text" or not data.valid):
            raise UsageError("the checkpoint's valid data is not line-aligned text files: give --src and --ref")
        src = args.src or Path(f"{data.valid}.{data.src_lang}")
        ref = args.ref or Path(f"{data.valid}.{data.tgt_lang}")
        sources, refs = read_text_lines(src), read_text_lines(ref)
        if len(sources) != len(refs):
            raise DataError(f"{src} has {len(sources)} lines but {ref} has {len(refs)}")
        options = translator.defaults
        if options.sampling or options.greedy:
            raise UsageError(f"the checkpoint decodes by {options.describe()}: confidence needs beam search scores")
        start = time.perf_counter()
        kept = [i for i, s in enumerate(sources) if s.strip() and refs[i].strip()]
        if len(kept) < 20:
            raise DataError(f"{src}: {len(kept)} non-empty pairs; the calibration needs at least 20")
        results = translator.translate([sources[i] for i in kept], options)
        chrf = CHRF()
        scores = [chrf.sentence_score(r.text, [refs[i]]).score for r, i in zip(results, kept)]
        good = np.array([s >= args.threshold for s in scores])
        if good.all() or not good.any():
            raise DataError(f"{src}: every output is {'at or above' if good.all() else 'below'} chrF {args.threshold:g}; "
                            "choose another --threshold")
        ratios = np.array([length_ratio(len(r.target_ids), len(r.source_ids)) for r in results])
        median = float(np.median(ratios))
        features = [signals(r.target_ids, hypothesis_logprob(r.best, options), len(r.source_ids), median) for r in results]
        calibration = fit(np.array(features), good, threshold=args.threshold, ratios=ratios, search=options.describe())
        probs = [calibration.confidence(x) for x in features]
        store_entry(args.checkpoint, args.output, "calibration", calibration.state_dict())
        weights = ", ".join(f"{name} {w:+.2f}" for name, w in zip(FEATURES, calibration.weights))
        print(f"calibrated on {len(kept):,} pairs of {src} ({options.describe()}) in {time.perf_counter() - start:.1f} s: "
              f"{100 * good.mean():.1f}% at or above chrF {args.threshold:g}; weights {weights}; AUROC on these pairs "
              f"{auroc(probs, good.tolist()):.3f}; written to {args.output}")
        return 0

    return run_cli("nmt-calibrate", body)


if __name__ == "__main__":
    sys.exit(main())
