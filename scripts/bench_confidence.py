"""How well the calibrated confidence flags bad translations, and what re-decoding degenerate
outputs does (issue 17). Not a test: nothing here asserts a score.

    python scripts/bench_confidence.py CKPT [--engine ctranslate2 --model EXPORT] [--out runs/bench_confidence]

CKPT: a checkpoint calibrated by `nmt-calibrate` (with --engine ctranslate2, EXPORT is its
nmt-export directory, which carries the same calibration). On each test set: decode with the
model's own decoding options and `redecode` off (the first outputs), find the degenerate ones
(a loop, too short, too long: Calibration.degenerate), and translate those again as a user's
call would, with `redecode` on (the final outputs). Reported per set: how many were degenerate
of each kind, how many the second decoding mended (no longer degenerate), chrF of the degenerate
sentences and BLEU/chrF of the whole set before and after (sacrebleu, first reference); on the
Tatoeba test split and WMT22 also the AUROC of the final outputs' confidence for telling good
(sentence chrF at least the calibration's threshold) from bad, against the mean token
log-probability alone, and the expected calibration error (10 bins). Writes OUT/results.json;
docs/confidence.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TESTS = {"tatoeba": "tatoeba-cmn/test", "wmt22": "wmt22-generaltest2022-zhen/test", "wmt21": "wmt21-newstest2021-zhen/test",
         "ntrex": "ntrex128-zhen/test", "flores": "flores200-devtest-zhen/test", "tico19": "tico19-zhen/test",
         "iwslt17": "iwslt17-ted-zhen/test"}
SCORED = ("tatoeba", "wmt22")  # AUROC and ECE; the others: degenerate outputs only


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch")
    p.add_argument("--model", type=Path, default=None, help="with --engine ctranslate2: the export directory")
    p.add_argument("--sets", nargs="+", default=list(TESTS), choices=list(TESTS))
    p.add_argument("--limit", type=int, default=0, help="the first N sentences of each set only (0: all; a quick check)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_confidence")
    args = p.parse_args()
    from sacrebleu.metrics import BLEU, CHRF

    from nmt.api import Translator, hypothesis_logprob
    from nmt.confidence import auroc, expected_calibration_error
    from nmt.provenance import describe_machine, environment

    translator = Translator.from_checkpoint(args.model if args.engine == "ctranslate2" else args.checkpoint,
                                            engine=args.engine, max_sentences=32)
    calibration = translator.calibration
    if calibration is None:
        raise SystemExit(f"bench_confidence: {args.checkpoint} has no calibration: run nmt-calibrate first")
    options = translator.defaults.replace(redecode=True)
    bleu, chrf = BLEU(), CHRF()
    report: dict = {"machine": describe_machine(), "environment": environment(),
                    "command": " ".join(["python", "scripts/bench_confidence.py", *sys.argv[1:]]),
                    "checkpoint": str(args.checkpoint), "engine": args.engine, "search": options.describe(),
                    "calibration": calibration.state_dict(), "sets": {}}
    for name in args.sets:
        prefix = SHARED / TESTS[name]
        if not Path(f"{prefix}.zh").is_file():
            print(f"skipping {name}: {prefix}.zh is absent", file=sys.stderr)
            continue
        sources = Path(f"{prefix}.zh").read_text(encoding="utf-8").splitlines()
        refs = Path(f"{prefix}.en").read_text(encoding="utf-8").splitlines()
        if args.limit:
            sources, refs = sources[: args.limit], refs[: args.limit]
        start = time.perf_counter()
        first = translator.translate(sources, options.replace(redecode=False))
        seconds = time.perf_counter() - start
        kinds = [calibration.degenerate(t.target_ids, len(t.source_ids)) if t.source_ids else None for t in first]
        bad = [i for i, kind in enumerate(kinds) if kind]
        start = time.perf_counter()
        final = list(first)
        for i, t in zip(bad, translator.translate([sources[i] for i in bad], options) if bad else []):
            final[i] = t
        again = [i for i in bad if final[i].redecoded]
        mended = [i for i in again if not calibration.degenerate(final[i].target_ids, len(final[i].source_ids))]

        def corpus(outputs: list, rows: list[int]) -> dict:
            hyps, ref = [outputs[i].text for i in rows], [[refs[i] for i in rows]]
            return {"bleu": round(bleu.corpus_score(hyps, ref).score, 2), "chrf": round(chrf.corpus_score(hyps, ref).score, 2)}

        everything = list(range(len(sources)))
        row = {"sentences": len(sources), "seconds": round(seconds, 1), "redecode_seconds": round(time.perf_counter() - start, 1),
               "degenerate": {kind: kinds.count(kind) for kind in ("loop", "short", "long")}, "redecoded": len(again),
               "mended": len(mended), "whole_before": corpus(first, everything), "whole_after": corpus(final, everything)}
        if again:
            row.update(degenerate_before=corpus(first, again), degenerate_after=corpus(final, again))
        if name in SCORED:
            kept = [i for i, r in enumerate(final) if r.confidence is not None and refs[i].strip()]
            good = [chrf.sentence_score(final[i].text, [refs[i]]).score >= calibration.threshold for i in kept]
            conf = [final[i].confidence for i in kept]
            mean_lp = [hypothesis_logprob(final[i].best, options) / (len(final[i].target_ids) + 1) for i in kept]
            row.update(scored=len(kept), good_share=round(sum(good) / len(good), 4),
                       auroc_confidence=round(auroc(conf, good), 4), auroc_mean_logprob=round(auroc(mean_lp, good), 4),
                       ece=round(expected_calibration_error(conf, good), 4),
                       mean_confidence=round(sum(conf) / len(conf), 4))
        row["examples"] = [{"kind": kinds[i], "source": sources[i], "first": first[i].text, "final": final[i].text,
                            "reference": refs[i]} for i in again[:5]]
        report["sets"][name] = row
        print(name, {k: v for k, v in row.items() if k != "examples"}, flush=True)
    report["signatures"] = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT.parent) + "/", "../")
                                      + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
