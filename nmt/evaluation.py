"""Scores with sacrebleu on detokenised text, every score with its signature; reports and
paired significance tests (sacrebleu's own paired bootstrap resampling)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from nmt.provenance import one_line


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
        if name == "bleu":
            out[name].update(sys_len=result.sys_len, ref_len=result.ref_len,
                             length_ratio=round(result.sys_len / max(result.ref_len, 1), 3))
    return out


def compare_systems(systems: list[tuple[str, list[str]]], references: list[list[str]], *, tgt_lang: str = "en",
                    n_samples: int = 1000) -> dict[str, Any]:
    """Paired bootstrap resampling (Koehn 2004) of every system against the first (the baseline),
    for BLEU and chrF, as `sacrebleu --paired-bs` computes it. p < 0.05 marks a significant difference."""
    metrics = {"BLEU": BLEU(trg_lang=tgt_lang, references=references), "chrF": CHRF(references=references)}
    signatures, results = PairedTest([(name, hyps) for name, hyps in systems], metrics, references=None, test_type="bs", n_samples=n_samples)()
    rows = []
    for i, name in enumerate(results["System"]):
        # sacrebleu gives p = 1/(n+1) even for output identical to the baseline; say so instead
        identical = i > 0 and list(systems[i][1]) == list(systems[0][1])
        row: dict[str, Any] = {"system": name, "baseline": i == 0, "identical_to_baseline": identical}
        for metric in [key for key in results if key != "System"]:  # sacrebleu's names: BLEU, chrF2
            r: Any = results[metric][i]  # a sacrebleu Result
            row[metric] = {"score": round(r.score, 2), "mean": _round(r.mean), "ci95": _round(r.ci),
                           "p_value": _round(r.p_value, 4),
                           "significant": r.p_value is not None and r.p_value < 0.05 and not identical}
        rows.append(row)
    return {"test": f"paired bootstrap resampling, {n_samples} samples, baseline {systems[0][0]}",
            "signatures": {m: str(s) for m, s in signatures.items()}, "systems": rows}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def comparison_table(comparison: dict[str, Any]) -> str:
    lines = ["| system | BLEU (mean ± 95% CI) | p | chrF2 (mean ± 95% CI) | p |", "|---|---|---|---|---|"]
    for row in comparison["systems"]:
        cells = [row["system"] + (" (baseline)" if row["baseline"] else " (identical)" if row["identical_to_baseline"] else "")]
        for metric in [key for key in row if key not in ("system", "baseline", "identical_to_baseline")]:
            m = row[metric]
            mark = " *" if m["significant"] else ""
            cells += [f"{m['score']:.2f} ({m['mean']} ± {m['ci95']})", "-" if row["baseline"] else f"{m['p_value']}{mark}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\n`*`: significantly different from the baseline (p < 0.05). "
                 + "; ".join(f"{m}: `{s}`" for m, s in comparison["signatures"].items()))
    return "\n".join(lines)


def sentence_examples(sources: list[str], hypotheses: list[str], references: list[list[str]], *,
                      tgt_lang: str = "en", n: int = 3) -> dict[str, list[dict]]:
    """The n best and n worst segments by sentence BLEU (ties by position), for the report."""
    bleu = BLEU(trg_lang=tgt_lang, effective_order=True)
    scored = [(bleu.sentence_score(h, [refs[i] for refs in references]).score, i) for i, h in enumerate(hypotheses)]
    scored.sort(key=lambda x: (-x[0], x[1]))

    def row(score: float, i: int) -> dict:
        return {"line": i + 1, "sentence_bleu": round(score, 1), "source": sources[i] if sources else None,
                "hypothesis": hypotheses[i], "reference": references[0][i]}

    return {"best": [row(*x) for x in scored[:n]], "worst": [row(*x) for x in scored[::-1][:n]]}


def write_report(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """report.json (everything) and report.md (the same, to paste into a paper or an issue)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    s = report["scores"]
    md = [f"# Evaluation: {report['system']}", "",
          f"- test set: `{report['src_file'] or '(hypotheses given)'}`, references: "
          + ", ".join(f"`{r}`" for r in report["ref_files"]) + f" ({report['segments']} segments)"]
    if report.get("checkpoint"):
        md.append(f"- checkpoint: `{report['checkpoint']}`; decoding: {report['decoding']}")
    if report.get("config"):
        m, d = report["config"]["model"], report["config"]["data"]
        md.append(f"- model: {m['type']} {m['n_encoder_layers']}+{m['n_decoder_layers']} layers, d_model {m['d_model']}, "
                  f"{d['src_lang']}->{d['tgt_lang']}, trained on {d['source']} `{d['train']}` (full config in report.json)")
    if report.get("speed"):
        sp = report["speed"]
        md.append(f"- speed: {sp['sentences_per_s']} sentences/s, {sp['tokens_per_s']} target tokens/s "
                  f"({sp['seconds']} s on {sp['device']})")
    if report.get("environment"):
        md.append(f"- software: {one_line(report['environment'])}")
    md += ["", "| metric | score | signature |", "|---|---|---|"]
    md += [f"| {name.upper() if name != 'chrf' else 'chrF2'} | {v['score']:.2f} | `{v['signature']}` |" for name, v in s.items()]
    md += ["", f"Length ratio (hypothesis / reference, BLEU tokens): {s['bleu']['length_ratio']}"]
    if report.get("comparison"):
        md += ["", "## Comparison", "", comparison_table(report["comparison"])]
    for kind in ("best", "worst"):
        md += ["", f"## {kind.capitalize()} segments (sentence BLEU)", ""]
        for ex in report["examples"][kind]:
            md += [f"- line {ex['line']} ({ex['sentence_bleu']}): " + (f"SRC `{ex['source']}` → " if ex["source"] else "")
                   + f"HYP `{ex['hypothesis']}` / REF `{ex['reference']}`"]
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return json_path, md_path
