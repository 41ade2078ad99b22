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

from nmt.cli import UsageError, check_device, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-translate", description="Translate text with a trained checkpoint.")
    p.add_argument("--checkpoint", required=True,
                   help="a .ckpt written by nmt-train, or with --engine ctranslate2 a directory written by nmt-export")
    p.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch",
                   help="torch (default) or ctranslate2 (an nmt-export directory; pip install 'nmt[ctranslate2]')")
    p.add_argument("--int8", action="store_true",
                   help="8-bit weights: dynamic quantisation of the linear layers (torch, CPU) or CTranslate2's int8")
    p.add_argument("--src", required=True, help="source language code; must match the checkpoint")
    p.add_argument("--tgt", required=True, help="target language code; must match the checkpoint")
    p.add_argument("-i", "--input", default="-", help="input file, one sentence per line (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--beam-size", type=int, default=5, help="beam width; 1 = greedy search (default 5)")
    p.add_argument("--n-best", type=int, default=1, help="hypotheses per sentence (text: Moses n-best lines)")
    p.add_argument("--length-penalty", choices=["gnmt", "length", "none"], default=None,
                   help="gnmt: ((5+|Y|)/6)^alpha, length: |Y|^alpha, none (default: gnmt with torch, length with "
                        "ctranslate2, which has no gnmt)")
    p.add_argument("--alpha", type=float, default=None, help="length penalty exponent (default 0.6 for gnmt, 1 for length)")
    p.add_argument("--min-len", type=int, default=1, help="minimum output tokens before EOS")
    p.add_argument("--max-len-a", type=float, default=None, help="max output tokens = a*src_len + b (default: the checkpoint's)")
    p.add_argument("--max-len-b", type=int, default=None, help="see --max-len-a")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="forbid repeating n-grams of this size (0: off)")
    p.add_argument("--sampling", action="store_true", help="sample instead of searching (see --temperature, --top-k, --top-p)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: smallest set with this probability (1: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="source tokens per batch, divided by the beam size (default 4096 for torch, 1024 for ctranslate2)")
    p.add_argument("--max-sentences", type=int, default=0, help="sentences per batch (0: no limit)")
    p.add_argument("--output-format", choices=["text", "jsonl"], default="text",
                   help="jsonl: source, hypotheses with scores, and timing per line")
    p.add_argument("--attention", metavar="DIR", default=None,
                   help="write a cross-attention heatmap per sentence to DIR/LINE.png (needs matplotlib)")
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
        return "".join(json.dumps({"line": first + i, "source": t.source, "truncated": t.truncated,
                                   "hypotheses": [{"text": text, "score": None if score != score else round(score, 4)}
                                                  for text, score in t.hypotheses],
                                   "seconds": round(per_line, 5)}, ensure_ascii=False) + "\n"
                       for i, t in enumerate(translations))
    if n_best == 1:
        return "".join(t.text + "\n" for t in translations)
    return "".join(f"{first + i - 1} ||| {text} ||| {score:.4f}\n"
                   for i, t in enumerate(translations) for text, score in t.hypotheses)


def write_heatmaps(directory: Path, translations, first: int, tokenizer) -> None:
    from nmt.plots import save_attention_heatmap

    for n, t in enumerate(translations, start=first):
        if t.attention is None:  # empty line
            continue
        src = tokenizer.src_pieces(t.source_ids) + ["</s>"]
        tgt = tokenizer.tgt_pieces(t.target_ids) + ["</s>"]
        save_attention_heatmap(directory / f"{n:06d}.png", t.attention, src, tgt, title=f"line {n}: {t.text}")


def interactive(translator, search: dict, sampling, args: argparse.Namespace) -> int:
    """stdin is a terminal: type a sentence, get its translation (n-best with scores); Ctrl-D ends."""
    print(f"nmt-translate {args.src}->{args.tgt}, beam {search['beam_size']}: type a sentence, Ctrl-D to quit",
          file=sys.stderr)
    while True:
        try:
            line = input(f"{args.src}> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        (translation,) = translator.translate(line, sampling=sampling, **search)
        for text, score in translation.hypotheses:
            print(text if search["n_best"] == 1 else f"{score:.3f}\t{text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from tqdm import tqdm

        from nmt.api import Translator
        from nmt.decoding.options import SamplingOptions
        from nmt.errors import CheckpointError

        if args.beam_size < 1 or not 1 <= args.n_best <= args.beam_size:
            raise UsageError(f"--beam-size must be >= 1 and --n-best between 1 and --beam-size "
                                  f"(got {args.beam_size}, {args.n_best})")
        if args.min_len < 0 or args.no_repeat_ngram_size < 0 or (args.max_tokens is not None and args.max_tokens < 1) or args.max_sentences < 0 or \
                (args.max_len_a is not None and args.max_len_a < 0) or (args.max_len_b is not None and args.max_len_b < 0):
            raise UsageError("--min-len, --max-len-a, --max-len-b and --no-repeat-ngram-size must not be "
                                  "negative, --max-tokens must be positive")
        if args.attention:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError("--attention needs matplotlib: pip install 'nmt[plot]'") from None
        if args.temperature <= 0 or args.top_k < 0 or not 0 < args.top_p <= 1:
            raise UsageError("need --temperature > 0, --top-k >= 0 and 0 < --top-p <= 1")
        sampling = SamplingOptions(args.temperature, args.top_k, args.top_p, args.seed) if args.sampling else None
        if args.engine == "torch":
            check_device(args.device)
        if args.int8 and args.engine == "torch" and args.device != "cpu":
            raise UsageError("--int8 with the torch engine runs on the CPU only (use --engine ctranslate2 on GPUs)")
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device, engine=args.engine, int8=args.int8)
        if (args.src, args.tgt) != (translator.src_lang, translator.tgt_lang):
            raise CheckpointError(f"{args.checkpoint} translates {translator.src_lang}->{translator.tgt_lang}, "
                                  f"not {args.src}->{args.tgt}")
        search = dict(beam_size=args.beam_size, n_best=args.n_best, min_len=args.min_len, max_len_a=args.max_len_a,
                      max_len_b=args.max_len_b, length_penalty=args.length_penalty, alpha=args.alpha,
                      no_repeat_ngram_size=args.no_repeat_ngram_size)
        if args.input == "-" and sys.stdin.isatty():
            return interactive(translator, search, sampling, args)
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
        show = args.input != "-" and sys.stderr.isatty()  # a bar for files, in a terminal
        bar = tqdm(total=count_lines(args.input) if show else None, unit="line", disable=not show, file=sys.stderr)

        def write(translations, first: int, seconds: float) -> None:
            if args.attention:
                write_heatmaps(Path(args.attention), translations, first, translator.tokenizer)
            out.write(format_lines(translations, first, args.output_format, args.n_best, seconds))
            bar.update(len(translations))

        with contextlib.closing(out) if out is not sys.stdout else contextlib.nullcontext(), bar:
            translator.translate_file(sys.stdin.buffer if args.input == "-" else args.input, out,
                                      skip_invalid_utf8=args.skip_invalid_utf8, write=write, sampling=sampling,
                                      attention=args.attention is not None, max_tokens=args.max_tokens,
                                      max_sentences=args.max_sentences, **search)
        return 0

    return run_cli("nmt-translate", body)


if __name__ == "__main__":
    sys.exit(main())
