"""Corpus scores with sacrebleu on detokenised text; every score carries its signature."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF, TER


def corpus_scores(hypotheses: list[str], references: list[list[str]], *, tgt_lang: str = "en",
                  ter: bool = False) -> dict[str, dict]:
    """hypotheses: one string per segment; references: one list per reference set (refs A, B, ...).

    `tgt_lang` picks sacrebleu's BLEU tokenizer (13a for most languages, zh for Chinese, ...).
    Returns {"bleu": {"score", "signature", "text"}, "chrf": {...}[, "ter": {...}]}.
    """
    metrics = {"bleu": BLEU(trg_lang=tgt_lang), "chrf": CHRF()}
    if ter:
        metrics["ter"] = TER()
    out = {}
    for name, metric in metrics.items():
        result = metric.corpus_score(hypotheses, references)
        out[name] = {"score": round(result.score, 2), "signature": str(metric.get_signature()), "text": str(result)}
    return out
