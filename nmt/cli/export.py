"""nmt-export --format ctranslate2 CKPT OUT_DIR [--quantization int8]
nmt-export --format hf-marian CKPT OUT_DIR [--report RUN/test/report.json ...]

ctranslate2: a CTranslate2 model directory (model.bin, vocabularies, config.json) plus the
SentencePiece models and nmt.json, from a Transformer checkpoint (`pip install 'nmt-toolkit[ctranslate2]'`).
hf-marian: a Hugging Face Marian directory (config.json, model.safetensors, source/target.spm,
vocab.json, a model card) for transformers, the hub and Transformers.js (`pip install 'nmt-toolkit[hf]'`;
docs/interop.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.cli import UsageError, run_cli
from nmt.export import QUANTIZATIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-export", description="Export a checkpoint for fast inference.")
    p.add_argument("checkpoint", help="a .ckpt written by nmt-train (model.type: transformer)")
    p.add_argument("out_dir", help="directory to write the exported model to")
    p.add_argument("--format", choices=["ctranslate2", "hf-marian"], default="ctranslate2",
                   help="ctranslate2 (default), or hf-marian: a directory that transformers' MarianMTModel and "
                        "MarianTokenizer load (docs/interop.md)")
    p.add_argument("--report", action="append", default=[], type=Path, metavar="REPORT_JSON",
                   help="hf-marian: an nmt-evaluate report.json whose scores the model card quotes (repeatable)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                   help="store the weights quantized (default: float32; nmt-translate --int8 also quantizes at load)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.checkpoint import load_model
        from nmt.export import export_ctranslate2

        if args.format == "hf-marian":
            from nmt.hf_marian import export_hf_marian

            if args.quantization:
                raise UsageError("--quantization is for --format ctranslate2")
            out = export_hf_marian(args.checkpoint, args.out_dir, args.report)
            print(f"wrote a Hugging Face Marian model to {out} (MarianMTModel.from_pretrained, MarianTokenizer)")
            return 0
        out = export_ctranslate2(load_model(args.checkpoint), args.out_dir, quantization=args.quantization)
        print(f"wrote a CTranslate2 model to {out}")
        return 0

    from nmt.export import ExportError

    return run_cli("nmt-export", body, (ExportError,))


if __name__ == "__main__":
    sys.exit(main())
