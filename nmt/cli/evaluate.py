"""nmt-evaluate: score a checkpoint's translations (or existing hypothesis files) with sacrebleu.

    nmt-evaluate --checkpoint CKPT --src-file test.zh --ref-file test.en [--ref-file test.en.refB] --output-dir DIR
    nmt-evaluate --hyp ours=hyp.en --hyp Online-B=online-b.en --ref-file test.en --output-dir DIR

Writes DIR/report.json and DIR/report.md: BLEU, chrF and TER with signatures, length ratio,
speed, best/worst segments, and with several systems a paired bootstrap comparison against the
first one (the checkpoint's output when a checkpoint is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from nmt.cli import UsageError, add_dtype_flag, check_device, check_precision, run_cli
from nmt.decoding.options import add_flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-evaluate", description="BLEU/chrF/TER reports with sacrebleu.")
    p.add_argument("--checkpoint", help="translate --src-file with this checkpoint (a .ckpt from nmt-train)")
    p.add_argument("--src-file", help="source sentences, one per line")
    p.add_argument("--ref-file", action="append", required=True, help="reference translations (repeat for more references)")
    p.add_argument("--hyp", action="append", default=[], metavar="[NAME=]FILE",
                   help="existing hypotheses to score or compare (repeatable)")
    p.add_argument("--output-dir", required=True, type=Path, help="where report.json and report.md go")
    p.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch",
                   help="torch (default) or ctranslate2 (--checkpoint is then an nmt-export directory)")
    p.add_argument("--int8", action="store_true", help="8-bit weights (see nmt-translate --int8)")
    add_dtype_flag(p)
    add_flags(p)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="source tokens per batch, divided by the beam size (default 4096 for torch, 1024 for ctranslate2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--tgt-lang", default=None, help="target language for BLEU tokenisation (default: the checkpoint's, else en)")
    p.add_argument("--bootstrap-samples", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    return p.parse_args(argv)


def read_lines(path: str) -> list[str]:
    from nmt.data import read_text_lines

    return read_text_lines(Path(path))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.evaluation import compare_systems, corpus_scores, sentence_examples, write_report
        from nmt.provenance import environment

        if not args.checkpoint and not args.hyp:
            raise UsageError("give --checkpoint (with --src-file) or at least one --hyp file")
        if args.checkpoint and not args.src_file:
            raise UsageError("--checkpoint needs --src-file")
        refs = [read_lines(r) for r in args.ref_file]
        sources = read_lines(args.src_file) if args.src_file else []
        n = len(refs[0])
        for path, lines in [*zip(args.ref_file, refs), *([(args.src_file, sources)] if sources else [])]:
            if len(lines) != n:
                raise UsageError(f"{path} has {len(lines)} lines but {args.ref_file[0]} has {n}")
        systems: list[tuple[str, list[str]]] = []
        report: dict[str, Any] = {"checkpoint": None, "decoding": None, "speed": None}
        tgt_lang = args.tgt_lang or "en"
        if args.checkpoint:
            hyps, report, tgt_lang = _translate(args, sources)
            systems.append(("nmt", hyps))
            args.output_dir.mkdir(parents=True, exist_ok=True)
            hyp_path = args.output_dir / f"hypotheses.{tgt_lang}"  # line-aligned with --src-file, for --hyp later
            hyp_path.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
            report["hypotheses"] = str(hyp_path)
        for spec in args.hyp:
            name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).stem, "", spec)
            lines = read_lines(path)
            if len(lines) != n:
                raise UsageError(f"{path} has {len(lines)} lines but {args.ref_file[0]} has {n}")
            systems.append((name, lines))
        name, hyps = systems[0]
        report.update(environment=environment(), system=name, src_file=args.src_file, ref_files=args.ref_file, segments=n,
                      scores=corpus_scores(hyps, refs, tgt_lang=tgt_lang, ter=True),
                      examples=sentence_examples(sources, hyps, refs, tgt_lang=tgt_lang))
        if len(systems) > 1:
            report["comparison"] = compare_systems(systems, refs, tgt_lang=tgt_lang, n_samples=args.bootstrap_samples)
        json_path, md_path = write_report(args.output_dir, report)
        for metric, v in report["scores"].items():
            print(f"{metric}: {v['score']:.2f}  {v['signature']}")
        print(f"report: {md_path} and {json_path}" + (f"; translations: {report['hypotheses']}"
                                                      if report.get("hypotheses") else ""))
        return 0

    return run_cli("nmt-evaluate", body, (UsageError,))


def _translate(args: argparse.Namespace, sources: list[str]):
    """The checkpoint's translations of `sources`, through the same Translator as nmt-translate."""
    from nmt.api import Translator
    from nmt.decoding.options import OptionsError, flag_name, from_flags

    if args.engine == "torch":
        check_device(args.device)
    check_precision(args)
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device, engine=args.engine, int8=args.int8,
                                            max_tokens=args.max_tokens, dtype=args.dtype)
    try:
        options = from_flags(args, translator.defaults)
    except OptionsError as err:
        raise UsageError(f"{flag_name(err.name)}: {err}") from None
    start = time.perf_counter()
    hyps = [x.text for x in translator.translate(sources, options)]
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) + 1 for ids in translator.tokenizer.encode_tgt(hyps))  # subword tokens incl. EOS
    meta = {"checkpoint": str(args.checkpoint), "config": translator.cfg.to_dict(), "engine": translator.engine.name,
            "decoding": options.describe(), "options": dataclasses.asdict(options),
            "speed": {"seconds": round(seconds, 2), "sentences_per_s": round(len(sources) / max(seconds, 1e-9), 1),
                      "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "device": str(args.device)}}
    return hyps, meta, translator.tgt_lang


if __name__ == "__main__":
    sys.exit(main())
