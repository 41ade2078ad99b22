"""nmt-export --format ctranslate2 CKPT OUT_DIR [--quantization int8]

Writes a CTranslate2 model directory (model.bin, vocabularies, config.json) plus the SentencePiece
models and nmt.json, from a Transformer checkpoint. Needs `pip install 'nmt[ctranslate2]'`.
"""

from __future__ import annotations

import argparse
import sys

from nmt.cli import run_cli
from nmt.export import QUANTIZATIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-export", description="Export a checkpoint for fast inference.")
    p.add_argument("checkpoint", help="a .ckpt written by nmt-train (model.type: transformer)")
    p.add_argument("out_dir", help="directory to write the exported model to")
    p.add_argument("--format", choices=["ctranslate2"], default="ctranslate2", help="export format (ctranslate2)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                   help="store the weights quantized (default: float32; nmt-translate --int8 also quantizes at load)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.checkpoint import load_model
        from nmt.export import export_ctranslate2

        out = export_ctranslate2(load_model(args.checkpoint), args.out_dir, quantization=args.quantization)
        print(f"wrote a CTranslate2 model to {out}")
        return 0

    from nmt.export import ExportError

    return run_cli("nmt-export", body, (ExportError,))


if __name__ == "__main__":
    sys.exit(main())
