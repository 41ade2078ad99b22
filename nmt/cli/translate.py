"""nmt-translate --checkpoint CKPT --src zh --tgt en [-i FILE] [-o FILE] [--beam-size 5] [...]

Reads stdin when no input file is given and writes one line per input line, in input order.
Input is read and translated in chunks (sorted by length inside a chunk), so large files stream
with bounded memory; a progress bar shows on files, not on pipes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from nmt.cli import UsageError, add_dtype_flag, check_device, check_precision, run_cli
from nmt.decoding.options import add_flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-translate", description="Translate text with a trained checkpoint.")
    p.add_argument("--checkpoint", required=True,
                   help="a .ckpt written by nmt-train, or with --engine ctranslate2 a directory written by nmt-export")
    p.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch",
                   help="torch (default) or ctranslate2 (an nmt-export directory; pip install 'nmt[ctranslate2]')")
    p.add_argument("--int8", action="store_true",
                   help="8-bit weights: dynamic quantisation of the linear layers (torch, CPU) or CTranslate2's int8")
    add_dtype_flag(p)
    p.add_argument("--src", required=True, help="source language code; must match the checkpoint")
    p.add_argument("--tgt", required=True, help="target language code; must match the checkpoint")
    p.add_argument("-i", "--input", default="-", help="input file, one sentence per line (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    add_flags(p)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="source tokens per batch, divided by the beam size (default 4096 for torch, 1024 for ctranslate2)")
    p.add_argument("--max-sentences", type=int, default=0, help="sentences per batch (0: no limit)")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU: batches decoded in parallel by N workers of one thread each (torch: processes, "
                        "ctranslate2: inter_threads; default torch 1, ctranslate2 the cores up to 4)")
    p.add_argument("--output-format", choices=["text", "jsonl"], default="text",
                   help="jsonl: source, hypotheses with scores, and timing per line")
    p.add_argument("--attention", metavar="DIR", default=None,
                   help="write a cross-attention heatmap per sentence to DIR/LINE.png (needs matplotlib)")
    p.add_argument("--constraints", action="store_true",
                   help='each input line is JSON: {"text": ..., "constraints": ["target term", ...]}; every '
                        "translation holds its constraints (beam search, torch engine; docs/terminology.md)")
    p.add_argument("--glossary", metavar="TSV", default=None,
                   help="source term<TAB>target term per line: a term's target side is a constraint of every "
                        "sentence its source side occurs in")
    p.add_argument("--skip-invalid-utf8", action="store_true",
                   help="give an empty output line (and a warning) for input lines that are not UTF-8, instead of stopping")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p.parse_args(argv)


def count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def format_lines(translations, first: int, fmt: str, n_best: int, seconds: float) -> str:
    if fmt == "jsonl":
        per_line = seconds / max(len(translations), 1)
        return "".join(json.dumps({"line": first + i, **t.as_dict(), "seconds": round(per_line, 5)},
                                  ensure_ascii=False) + "\n" for i, t in enumerate(translations))
    if n_best == 1:
        return "".join(t.text + "\n" for t in translations)
    return "".join(f"{first + i - 1} ||| {h.text} ||| {h.score:.4f}\n"
                   for i, t in enumerate(translations) for h in t.hypotheses)


def write_heatmaps(directory: Path, translations, first: int, tokenizer) -> None:
    from nmt.plots import save_attention_heatmap

    for n, t in enumerate(translations, start=first):
        if t.attention is None:  # empty line
            continue
        src = tokenizer.src_pieces(t.source_ids) + ["</s>"]
        tgt = tokenizer.tgt_pieces(t.target_ids) + ["</s>"]
        save_attention_heatmap(directory / f"{n:06d}.png", t.attention, src, tgt, title=f"line {n}: {t.text}")


def interactive(translator, options, args: argparse.Namespace, glossary=None) -> int:
    """stdin is a terminal: type a sentence, get its translation (n-best with scores); Ctrl-D ends."""
    print(f"nmt-translate {args.src}->{args.tgt}, {options.describe()}: type a sentence, Ctrl-D to quit",
          file=sys.stderr)
    while True:
        try:
            line = input(f"{args.src}> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        (translation,) = translator.translate(line, options, glossary=glossary)
        for h in translation.hypotheses:
            print(h.text if options.n_best == 1 else f"{h.score:.3f}\t{h.text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from tqdm import tqdm

        from nmt.api import Translator
        from nmt.decoding.options import OptionsError, flag_name, from_flags
        from nmt.errors import CheckpointError
        from nmt.glossary import Glossary

        if (args.max_tokens is not None and args.max_tokens < 1) or args.max_sentences < 0:
            raise UsageError("--max-tokens must be positive and --max-sentences must not be negative")
        if args.workers is not None and args.workers < 1:
            raise UsageError(f"--workers must be at least 1 (got {args.workers})")
        if args.workers and args.workers > 1 and args.engine == "torch" and args.device != "cpu":
            raise UsageError("--workers > 1 with the torch engine runs on the CPU only")
        if args.attention:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError("--attention needs matplotlib: pip install 'nmt[plot]'") from None
        if args.engine == "torch":
            check_device(args.device)
        if args.int8 and args.engine == "torch" and args.device != "cpu":
            raise UsageError("--int8 with the torch engine runs on the CPU only (use --engine ctranslate2 on GPUs)")
        check_precision(args)
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device, engine=args.engine, int8=args.int8,
                                                max_tokens=args.max_tokens, max_sentences=args.max_sentences,
                                                workers=args.workers, dtype=args.dtype)
        if (args.src, args.tgt) != (translator.src_lang, translator.tgt_lang):
            raise CheckpointError(f"{args.checkpoint} translates {translator.src_lang}->{translator.tgt_lang}, "
                                  f"not {args.src}->{args.tgt}")
        try:
            options = from_flags(args, translator.defaults).replace(attention=args.attention is not None)
        except OptionsError as err:
            raise UsageError(f"{flag_name(err.name)}: {err}") from None
        glossary = Glossary.read(args.glossary) if args.glossary else None
        if (args.constraints or glossary) and args.engine != "torch":
            raise UsageError("--constraints and --glossary need --engine torch: CTranslate2 has no lexically "
                             "constrained search")
        if (args.constraints or glossary) and options.sampling:
            raise UsageError("--constraints and --glossary need beam search, not --sampling")
        if args.constraints and options.document:
            raise UsageError("--constraints apply to sentences: with --document give the terms as a --glossary")
        if args.input == "-" and sys.stdin.isatty():
            if args.constraints:
                raise UsageError("--constraints reads JSON lines from -i FILE or a pipe, not from a terminal")
            return interactive(translator, options, args, glossary)
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
        show = args.input != "-" and sys.stderr.isatty()  # a bar for files, in a terminal
        bar = tqdm(total=count_lines(args.input) if show else None, unit="line", disable=not show, file=sys.stderr)

        def write(translations, first: int, seconds: float) -> None:
            if args.attention:
                write_heatmaps(Path(args.attention), translations, first, translator.tokenizer)
            out.write(format_lines(translations, first, args.output_format, options.n_best, seconds))
            bar.update(len(translations))

        with contextlib.closing(out) if out is not sys.stdout else contextlib.nullcontext(), bar:
            translator.translate_file(sys.stdin.buffer if args.input == "-" else args.input, out, options=options,
                                      skip_invalid_utf8=args.skip_invalid_utf8, write=write,
                                      jsonl_input=args.constraints, glossary=glossary)
        if translator.redecoded:
            print(f"nmt-translate: {translator.redecoded} degenerate output(s) (a loop, or a length far outside the "
                  "valid split's) decoded again (--no-redecode keeps them as they are)", file=sys.stderr)
        return 0

    return run_cli("nmt-translate", body)


if __name__ == "__main__":
    sys.exit(main())
