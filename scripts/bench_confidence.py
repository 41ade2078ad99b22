"""How well the calibrated confidence flags bad translations (issue 17). Not a test: nothing here
asserts a score.

    python scripts/bench_confidence.py CKPT [--engine ctranslate2 --model EXPORT] [--out runs/bench_confidence]

CKPT: a checkpoint calibrated by `nmt-calibrate` (with --engine ctranslate2, EXPORT is its
nmt-export directory, which carries the same calibration). On each test set: decode with the
model's own decoding options, score every output by sentence chrF (sacrebleu) against the first
reference; a translation is bad when its chrF is below the calibration's threshold. Reported:
AUROC of the confidence for telling good from bad, against the mean token log-probability alone
(the usual baseline), the expected calibration error (10 bins), and how many outputs were
degenerate (a loop, a length far outside the valid split's) and decoded again. Writes
OUT/results.json; docs/confidence.md quotes it.
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
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_confidence")
    args = p.parse_args()
    from sacrebleu.metrics import CHRF

    from nmt.api import Translator, hypothesis_logprob
    from nmt.confidence import auroc, expected_calibration_error
    from nmt.provenance import describe_machine, environment

    translator = Translator.from_checkpoint(args.model if args.engine == "ctranslate2" else args.checkpoint,
                                            engine=args.engine, max_sentences=32)
    calibration = translator.calibration
    if calibration is None:
        raise SystemExit(f"bench_confidence: {args.checkpoint} has no calibration: run nmt-calibrate first")
    options = translator.defaults
    chrf = CHRF()
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
        before = translator.redecoded
        start = time.perf_counter()
        results = translator.translate(sources, options)
        seconds = time.perf_counter() - start
        row = {"sentences": len(sources), "seconds": round(seconds, 1), "redecoded": translator.redecoded - before}
        if name in SCORED:
            kept = [i for i, r in enumerate(results) if r.confidence is not None and refs[i].strip()]
            good = [chrf.sentence_score(results[i].text, [refs[i]]).score >= calibration.threshold for i in kept]
            conf = [results[i].confidence for i in kept]
            mean_lp = [hypothesis_logprob(results[i].best, options) / (len(results[i].target_ids) + 1) for i in kept]
            row.update(scored=len(kept), good_share=round(sum(good) / len(good), 4),
                       auroc_confidence=round(auroc(conf, good), 4), auroc_mean_logprob=round(auroc(mean_lp, good), 4),
                       ece=round(expected_calibration_error(conf, good), 4),
                       mean_confidence=round(sum(conf) / len(conf), 4))
        row["examples"] = [{"source": sources[i], "output": results[i].text} for i, r in enumerate(results) if r.redecoded][:5]
        report["sets"][name] = row
        print(name, {k: v for k, v in row.items() if k != "examples"}, flush=True)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT.parent) + "/", "../")
                                      + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
