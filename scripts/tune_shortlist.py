"""Choose the shortlist's size on the valid split (issue 20): for each --k and --frequent, build
the shortlist (nmt-shortlist), export it to CTranslate2, and decode the valid split with
CTranslate2 int8 without and with it (beam 5, |Y|^1, 32 sentences per batch, each in its own
process after a warm-up batch, as scripts/bench_decode.py). Not a test: nothing asserts a time.

    python scripts/tune_shortlist.py CKPT [--k 50 100] [--frequent 100 200 500] [--out runs/tune_shortlist]

The choice: among the settings at least --min-speedup times faster than the full vocabulary, the
one whose BLEU moves least (then the most identical outputs); the test split is not read. Prints
a table and, on its last line, "K FREQUENT" of the choice; writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import BATCH, BEAM, ROOT, SHARED, child, say  # scripts/ is on sys.path

from nmt.provenance import describe_machine

VALID = SHARED / "tatoeba-cmn" / "valid"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--k", type=int, nargs="+", default=[50, 100], help="nmt-shortlist --k values")
    p.add_argument("--frequent", type=int, nargs="+", default=[100, 200, 500], help="nmt-shortlist --frequent values")
    p.add_argument("--min-speedup", type=float, default=1.3, help="fastest acceptable shortlist / full vocabulary")
    p.add_argument("--src", type=Path, default=Path(str(VALID) + ".zh"))
    p.add_argument("--ref", type=Path, default=Path(str(VALID) + ".en"))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "tune_shortlist")
    args = p.parse_args()
    if not args.src.is_file() or not args.ref.is_file():
        raise SystemExit(f"tune_shortlist: needs {args.src} and {args.ref} (../shared/data beside the project)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = dict(src_file=str(args.src), ref_file=str(args.ref))
    report: dict = {"machine": describe_machine(), "command": " ".join(["python", "scripts/tune_shortlist.py", *sys.argv[1:]]),
                    "search": f"CTranslate2 int8, beam {BEAM}, length penalty |Y|^1, {BATCH} sentences per batch",
                    "data": str(args.src), "settings": []}
    full = None
    for k in args.k:
        for frequent in args.frequent:
            ckpt, ct2 = out / f"k{k}-n{frequent}.ckpt", out / f"ct2-k{k}-n{frequent}"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nmt.cli.shortlist", str(args.checkpoint), "-o", str(ckpt),
                            "--k", str(k), "--frequent", str(frequent)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            build = time.perf_counter() - start
            subprocess.run([sys.executable, "-m", "nmt.cli.export", str(ckpt), str(ct2)], check=True,
                           cwd=ROOT, stdout=subprocess.DEVNULL)
            if full is None:  # the full vocabulary once: the same weights in every export
                full = child(out, "decode", engine="ctranslate2", model=str(ct2), int8=True, **files)
                report["full_vocabulary"] = {key: v for key, v in full.items() if key != "hypotheses"}
            short = child(out, "decode", engine="ctranslate2", model=str(ct2), int8=True, options={"shortlist": True}, **files)
            same = sum(a == b for a, b in zip(short["hypotheses"], full["hypotheses"])) / len(full["hypotheses"])
            row = {"k": k, "frequent": frequent, "build_seconds": round(build, 1), "seconds": short["seconds"],
                   "speedup": round(full["seconds"] / short["seconds"], 2), "bleu": short["bleu"],
                   "bleu_change": round(short["bleu"] - full["bleu"], 2), "identical": round(same, 3)}
            report["settings"].append(row)
            say(f"k {k:4d} frequent {frequent:4d}: {row['seconds']:6.2f} s ({row['speedup']:.2f}x)  BLEU {row['bleu']} "
                f"({row['bleu_change']:+.2f})  identical {100 * same:.1f}%")
    fast = [r for r in report["settings"] if r["speedup"] >= args.min_speedup] or report["settings"]
    best = min(fast, key=lambda r: (abs(r["bleu_change"]), -r["identical"]))
    report["choice"] = {"k": best["k"], "frequent": best["frequent"]}
    text = json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT) + "/", "")
    (out / "results.json").write_text(text + "\n", encoding="utf-8")
    say(f"full vocabulary: {full['seconds']:.2f} s, BLEU {full['bleu']} ({full['signature']})")
    print(best["k"], best["frequent"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
