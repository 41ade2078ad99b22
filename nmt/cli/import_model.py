"""nmt-import --from hf-marian DIR OUT.ckpt [--src zh --tgt en]

A model trained elsewhere as an nmt checkpoint: DIR is a Hugging Face Marian model (an OPUS-MT
model such as Helsinki-NLP/opus-mt-zh-en) in the hub's layout, downloaded beforehand (config.json,
model.safetensors or pytorch_model.bin, source.spm, target.spm, vocab.json,
tokenizer_config.json). The checkpoint then works with nmt-translate, nmt-evaluate, nmt-serve,
nmt-export and `nmt-train --init-from` (fine-tuning). See docs/interop.md and nmt/hf_marian.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.cli import run_cli

FORMATS = ("hf-marian",)
FINE_TUNE_HEADER = """# The imported model's config: its model and tokenizer sections must stay as they are to fine-tune
# it. Set data (your corpus), optim and trainer (a budget: max_steps or max_time), then
#   nmt-train THIS.yaml --init-from {ckpt} --output-dir runs/finetuned
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-import", description="Import a model trained elsewhere as an nmt checkpoint.")
    p.add_argument("--from", dest="format", choices=FORMATS, required=True, help="the model's format")
    p.add_argument("directory", type=Path, help="the model's directory (the hub's layout)")
    p.add_argument("output", type=Path, help="the checkpoint to write")
    p.add_argument("--src", default=None, help="source language code (default: tokenizer_config.json's source_lang)")
    p.add_argument("--tgt", default=None, help="target language code (default: tokenizer_config.json's target_lang)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        import yaml

        from nmt.checkpoint import load_model, write_checkpoint
        from nmt.hf_marian import import_hf_marian
        from nmt.models import count_parameters, describe_model

        ckpt = import_hf_marian(args.directory, src_lang=args.src, tgt_lang=args.tgt)
        write_checkpoint(ckpt, args.output)
        loaded = load_model(args.output)  # what every command will read: checked here once
        config = args.output.with_suffix(".yaml")
        config.write_text(FINE_TUNE_HEADER.format(ckpt=args.output) + yaml.safe_dump(ckpt["nmt"]["config"], sort_keys=False),
                          encoding="utf-8")
        print(f"imported {args.directory} ({args.format}, {loaded.cfg.data.src_lang}->{loaded.cfg.data.tgt_lang}): "
              f"{describe_model(loaded.cfg.model)}, {count_parameters(loaded.model):,} parameters, "
              f"vocabulary {loaded.tokenizer.tgt_vocab_size:,}; written to {args.output}, and {config} to fine-tune it")
        return 0

    return run_cli("nmt-import", body)


if __name__ == "__main__":
    sys.exit(main())
