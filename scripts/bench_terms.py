"""Oracle-constraint experiment (issue 17), as in the constrained-decoding papers: terms the
unconstrained output misses, taken from the reference, then decoded again with them as
constraints. Not a test: nothing here asserts a score or a time.

    python scripts/bench_terms.py CKPT [--src PREFIX.zh] [--ref PREFIX.en] [--out runs/bench_terms]

The rule for the terms of a sentence: the words of its reference (letters, apostrophes and
hyphens; at least 4 letters) that the unconstrained output lacks, compared case-insensitively,
the two longest of them (the first in reference order on ties), as written in the reference.
Sentences whose output lacks no such word get no terms.

Search: beam 5, length penalty |Y|^1, 32 sentences per batch (as scripts/bench_decode.py), the
torch engine fp32; both runs in this process after the same warm-up batch. Reported: term use
rate (terms present as whole words, case-sensitive, in the output; a clitic such as 's may
follow) before and after, BLEU
before and after on the whole split and on the constrained sentences, decoding seconds of both
runs and their ratio. Writes OUT/results.json; docs/terminology.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT.parent / "shared" / "data" / "tatoeba-cmn" / "test"
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
BEAM, BATCH = 5, 32


def oracle_terms(hypothesis: str, reference: str, most: int = 2) -> list[str]:
    """The rule of the module's docstring."""
    have = {w.lower() for w in WORD.findall(hypothesis)}
    missing = list(dict.fromkeys(w for w in WORD.findall(reference) if sum(c.isalpha() for c in w) >= 4
                                 and w.lower() not in have))
    return sorted(missing, key=lambda w: -len(w))[:most]  # stable: reference order on ties


def uses(text: str, term: str) -> bool:
    """`term` occurs as a whole word (a clitic may follow: "Tom's" uses "Tom")."""
    return re.search(rf"(?<![A-Za-z']){re.escape(term)}(?![A-Za-z])", text) is not None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--src", type=Path, default=Path(str(TEST) + ".zh"))
    p.add_argument("--ref", type=Path, default=Path(str(TEST) + ".en"))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_terms")
    args = p.parse_args()
    if not args.src.is_file() or not args.ref.is_file():
        raise SystemExit(f"bench_terms: needs {args.src} and {args.ref} (../shared/data beside the project)")
    from nmt.api import Translator
    from nmt.evaluation import corpus_scores
    from nmt.provenance import describe_machine, environment

    sources = args.src.read_text(encoding="utf-8").splitlines()
    refs = args.ref.read_text(encoding="utf-8").splitlines()
    translator = Translator.from_checkpoint(args.checkpoint, max_sentences=BATCH, max_tokens=10**9)
    search = dict(beam_size=BEAM, length_penalty="length", alpha=1.0)
    translator.translate(sources[:BATCH], **search)  # warm-up: allocator, lazy inits

    start = time.perf_counter()
    plain = [t.text for t in translator.translate(sources, **search)]
    plain_s = time.perf_counter() - start
    terms = [oracle_terms(h, r) for h, r in zip(plain, refs)]
    start = time.perf_counter()
    results = translator.translate(sources, constraints=terms, **search)
    constrained_s = time.perf_counter() - start
    after = [t.text for t in results]

    asked = [(i, term) for i, ts in enumerate(terms) for term in ts]
    picked = [i for i, ts in enumerate(terms) if ts]

    def bleu(hyps: list[str], rows: list[int]) -> dict:
        s = corpus_scores([hyps[i] for i in rows], [[refs[i] for i in rows]], tgt_lang=translator.tgt_lang)
        return {"bleu": round(s["bleu"]["score"], 2), "chrf": round(s["chrf"]["score"], 2), "signature": s["bleu"]["signature"]}

    every = list(range(len(sources)))
    report = {
        "machine": describe_machine(), "environment": environment(),
        "command": " ".join(["python", "scripts/bench_terms.py", *sys.argv[1:]]),
        "checkpoint": str(args.checkpoint), "data": str(args.src.with_suffix("")),
        "search": f"beam {BEAM}, length penalty |Y|^1, {BATCH} sentences per batch, torch fp32",
        "sentences": len(sources), "constrained_sentences": len(picked), "terms": len(asked),
        "term_use_before": round(sum(uses(plain[i], t) for i, t in asked) / max(len(asked), 1), 4),
        "term_use_after": round(sum(uses(after[i], t) for i, t in asked) / max(len(asked), 1), 4),
        "constraints_met": sum(bool(results[i].best.constraints_met) for i in picked),
        "all": {"before": bleu(plain, every), "after": bleu(after, every)},
        "constrained": {"before": bleu(plain, picked), "after": bleu(after, picked)},
        "seconds": {"plain": round(plain_s, 2), "constrained": round(constrained_s, 2),
                    "ratio": round(constrained_s / plain_s, 2)},
        "examples": [{"source": sources[i], "reference": refs[i], "terms": terms[i], "before": plain[i], "after": after[i]}
                     for i in picked[:8]],
    }
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
