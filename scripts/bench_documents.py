"""Document mode against line mode (issue 16): paragraphs of real test sentences translated as one
line, in document mode, and sentence by sentence from the gold split. Not a test.

    python scripts/bench_documents.py --checkpoint runs/tatoeba_cpu/average2.ckpt --alpha 3 \
        [--out runs/bench_documents] [--engine torch] [decoding flags of nmt-translate]

Paragraph sets (consecutive groups of 2-6 sentences, sizes drawn with seed 0, joined the way the
language writes them: zh with nothing between sentences, en with a space):
- the Tatoeba test split (../shared/data/tatoeba-cmn/test);
- the WMT21 news test set (its lines, in document order; some lines hold several sentences).
For each: paragraph-level BLEU/chrF (sacrebleu) of line mode, document mode and the gold split
translated one by one and joined; output length against the reference; and how well each
splitter (ours, and pysbd / sentencex where installed) recovers the joins (boundary precision,
recall, and the share of paragraphs split exactly at the joins).
WMT22: how many sources are over the model's length (truncated in line mode) and after document
mode's splitting, with BLEU/chrF against reference A for both modes.

Writes OUT/results.json and OUT/results.md; docs/documents.md quotes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

from nmt.api import Translator
from nmt.decoding.options import add_flags, from_flags
from nmt.documents import SPLITTERS, split_document
from nmt.evaluation import corpus_scores
from nmt.provenance import environment

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def paragraphs(zh: list[str], en: list[str], seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Consecutive groups of 2-6 (zh, en) sentences; the last group takes what is left."""
    rng, out, i = random.Random(seed), [], 0
    while i < len(zh):
        n = rng.randint(2, 6)
        out.append((zh[i:i + n], en[i:i + n]))
        i += n
    return out


def boundaries(sentences: list[str]) -> set[int]:
    """Character offsets (spaces ignored) where one sentence ends and the next begins."""
    ends, at = set(), 0
    for s in sentences[:-1]:
        at += len(s.replace(" ", ""))
        ends.add(at)
    return ends


def splitter_accuracy(groups: list[tuple[list[str], list[str]]], lang: str) -> dict[str, dict]:
    out = {}
    for name in SPLITTERS:
        try:
            found = [boundaries(split_document("".join(zh), lang, name).sentences) for zh, _ in groups]
        except ImportError:
            continue
        gold = [boundaries(zh) for zh, _ in groups]
        hit = sum(len(f & g) for f, g in zip(found, gold))
        n_found, n_gold = sum(map(len, found)), sum(map(len, gold))
        out[name] = {"precision": round(hit / max(n_found, 1), 4), "recall": round(hit / max(n_gold, 1), 4),
                     "exact_paragraphs": round(sum(f == g for f, g in zip(found, gold)) / len(groups), 4)}
    return out


def score(hyps: list[str], refs: list[str]) -> dict:
    s = corpus_scores(hyps, [refs])
    ratio = sum(len(h.split()) for h in hyps) / max(sum(len(r.split()) for r in refs), 1)
    return {"bleu": s["bleu"]["score"], "chrf": s["chrf"]["score"], "length_ratio": round(ratio, 3),
            "bleu_signature": s["bleu"]["signature"], "chrf_signature": s["chrf"]["signature"]}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 1)


def paragraph_set(translator: Translator, options, groups) -> dict:
    sources = ["".join(zh) for zh, _ in groups]
    refs = [" ".join(en) for _, en in groups]
    line, t_line = timed(lambda: [t.text for t in translator.translate(sources, options)])
    docs, t_doc = timed(lambda: translator.translate(sources, options, document=True))
    libraries = {}  # document mode with each maintained splitter that is installed
    for name in SPLITTERS:
        if name != "rules" and importlib.util.find_spec(name):
            other = translator.translate(sources, options, document=True, document_splitter=name)
            libraries[name] = score([d.text for d in other], refs)
    flat = [s for zh, _ in groups for s in zh]
    gold_flat, t_gold = timed(lambda: iter([t.text for t in translator.translate(flat, options)]))
    gold = [" ".join(next(gold_flat) for _ in zh) for zh, _ in groups]
    return {"paragraphs": len(groups), "sentences": len(flat),
            "line": {**score(line, refs), "seconds": t_line},
            "document": {**score([d.text for d in docs], refs), "seconds": t_doc,
                         "sentences_found": sum(len(d.sentences or []) for d in docs),
                         "split": sum(d.split for d in docs)},
            "gold_split": {**score(gold, refs), "seconds": t_gold}, "document_with": libraries,
            "splitters": splitter_accuracy(groups, translator.src_lang)}


def long_sources(translator: Translator, options, zh: list[str], en: list[str]) -> dict:
    limit = translator.max_source_tokens
    lengths = [len(ids) for ids in translator.tokenizer.encode_src(zh)]
    line = translator.translate(zh, options)
    docs = translator.translate(zh, options, document=True)
    pieces = [s for d in docs for s in d.sentences or []]
    return {"lines": len(zh), "max_source_tokens": limit, "document_max_tokens": translator.max_sentence_tokens,
            "over_max_source_tokens": sum(n > limit for n in lengths),
            "over_document_max_tokens": sum(n > translator.max_sentence_tokens for n in lengths),
            "truncated_line_mode": sum(t.truncated for t in line),
            "truncated_document_mode": sum(p.truncated for p in pieces),
            "lines_with_split_sentences": sum(d.split > 0 for d in docs),
            "sentences_split": sum(d.split for d in docs),
            "line": score([t.text for t in line], en), "document": score([d.text for d in docs], en)}


def table(results: dict) -> str:
    lines = [f"Checkpoint `{results['checkpoint']}`, {results['options']}; {results['machine']}, commit "
             f"{results['commit']}.", ""]
    for name in ("tatoeba", "wmt21"):
        r = results[name]
        lines += [f"**{name}**: {r['paragraphs']} paragraphs of {r['sentences']} sentences", "",
                  "| mode | BLEU | chrF2 | output / reference words | seconds |", "|---|---:|---:|---:|---:|"]
        for mode in ("line", "document", "gold_split"):
            m = r[mode]
            lines.append(f"| {mode} | {m['bleu']:.2f} | {m['chrf']:.2f} | {m['length_ratio']:.2f} | {m['seconds']} |")
        for sp, m in r["document_with"].items():
            lines.append(f"| document, {sp} splitter | {m['bleu']:.2f} | {m['chrf']:.2f} | {m['length_ratio']:.2f} | |")
        lines += ["", f"document mode found {r['document']['sentences_found']} sentences "
                      f"({r['document']['split']} cut for length)", "",
                  "| splitter | boundary precision | recall | paragraphs split exactly |", "|---|---:|---:|---:|"]
        for sp, a in r["splitters"].items():
            lines.append(f"| {sp} | {a['precision']:.4f} | {a['recall']:.4f} | {a['exact_paragraphs']:.4f} |")
        lines.append("")
    w = results["wmt22"]
    lines += [f"**wmt22** ({w['lines']} lines): over {w['max_source_tokens']} source tokens (truncated in line mode): "
              f"{w['over_max_source_tokens']}; truncated: line mode {w['truncated_line_mode']}, document mode "
              f"{w['truncated_document_mode']}; lines with a sentence over {w['document_max_tokens']} tokens cut at "
              f"clause marks: {w['lines_with_split_sentences']} ({w['sentences_split']} sentences)", "",
              f"| mode | BLEU | chrF2 | output / reference words |", "|---|---:|---:|---:|"]
    for mode in ("line", "document"):
        lines.append(f"| {mode} | {w[mode]['bleu']:.2f} | {w[mode]['chrf']:.2f} | {w[mode]['length_ratio']:.2f} |")
    lines += ["", f"Signatures: `{w['line']['bleu_signature']}`, `{w['line']['chrf_signature']}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--engine", default="torch", choices=["torch", "ctranslate2"])
    p.add_argument("--out", default="runs/bench_documents")
    add_flags(p)
    args = p.parse_args()
    if not DATA.is_dir():
        sys.exit(f"bench_documents: needs {DATA} (the shared test sets)")
    translator = Translator.from_checkpoint(args.checkpoint, engine=args.engine)
    options = from_flags(args, translator.defaults)
    env = environment()
    results: dict = {"checkpoint": args.checkpoint, "options": options.describe(), "decoding": dataclasses.asdict(options),
                     "machine": env["machine"]["description"], "commit": (env["git_commit"] or "unknown")[:12],
                     "environment": env}
    tat = DATA / "tatoeba-cmn"
    results["tatoeba"] = paragraph_set(translator, options, paragraphs(read(tat / "test.zh"), read(tat / "test.en")))
    print("tatoeba", json.dumps({k: v for k, v in results["tatoeba"].items() if k != "splitters"}), flush=True)
    wmt21 = DATA / "wmt21-newstest2021-zhen"
    results["wmt21"] = paragraph_set(translator, options, paragraphs(read(wmt21 / "test.zh"), read(wmt21 / "test.en")))
    print("wmt21", json.dumps({k: v for k, v in results["wmt21"].items() if k != "splitters"}), flush=True)
    wmt22 = DATA / "wmt22-generaltest2022-zhen"
    results["wmt22"] = long_sources(translator, options, read(wmt22 / "test.zh"), read(wmt22 / "test.en"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str) + "\n")
    (out / "results.md").write_text(table(results), encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
