"""nmt-translate --checkpoint CKPT --src zh --tgt en [-i FILE] [-o FILE]  (greedy for now)"""

from __future__ import annotations

import argparse
import sys

from nmt.cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-translate", description="Translate text with a trained checkpoint.")
    p.add_argument("--checkpoint", required=True, help="a .ckpt written by nmt-train")
    p.add_argument("--src", required=True, help="source language code; must match the checkpoint")
    p.add_argument("--tgt", required=True, help="target language code; must match the checkpoint")
    p.add_argument("-i", "--input", default="-", help="input file, one sentence per line (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return p.parse_args(argv)


def read_lines(path: str) -> list[str]:
    from nmt.data import DataError

    raw = sys.stdin.buffer.read() if path == "-" else _read_file(path)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise DataError(f"{'<stdin>' if path == '-' else path}:{n}: invalid UTF-8 ({err.reason} at byte {err.start})") from None
    return out


def _read_file(path: str) -> bytes:
    from nmt.data import DataError

    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.checkpoint import CheckpointError, load_model
        from nmt.translator import translate

        loaded = load_model(args.checkpoint, device=args.device)
        pair = (loaded.cfg.data.src_lang, loaded.cfg.data.tgt_lang)
        if (args.src, args.tgt) != pair:
            raise CheckpointError(f"{args.checkpoint} translates {pair[0]}->{pair[1]}, not {args.src}->{args.tgt}")
        lines = read_lines(args.input)
        t = loaded.cfg.trainer
        hyps = translate(loaded, lines, max_tokens=args.max_tokens, max_len_a=t.max_decode_len_a,
                         max_len_b=t.max_decode_len_b, device=args.device)
        text = "".join(h + "\n" for h in hyps)
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        return 0

    return run_cli("nmt-translate", body)


if __name__ == "__main__":
    sys.exit(main())
