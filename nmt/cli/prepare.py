"""nmt-prepare CONFIG [--set section.key=value ...] [--output DIR] [--force]

Tokenises the training split of an experiment once, for large corpora: SentencePiece trained on
a sample (tokenizer.input_sentence_size sentences), every pair encoded and cleaned by
data.num_proc processes, written as an Arrow dataset with the lengths beside it
(nmt.data.prepare_corpus). nmt-train with the same config and data.prepared_dir then starts in
seconds whatever the corpus size, and does the same preparation itself when the directory is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.cli import UsageError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-prepare", description="Tokenise a training corpus once (data.prepared_dir).")
    p.add_argument("config", help="experiment file, e.g. configs/wmt_zh_en_base.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set data.num_proc=8")
    p.add_argument("--output", type=Path, default=None,
                   help="the directory to write (default: the config's data.prepared_dir)")
    p.add_argument("--force", action="store_true", help="prepare again even if the directory is already prepared")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.config import load_config
        from nmt.data import open_prepared, prepare_corpus

        cfg = load_config(args.config, args.overrides)
        out = args.output or (Path(cfg.data.prepared_dir) if cfg.data.prepared_dir else None)
        if out is None:
            raise UsageError("no directory to write: set data.prepared_dir in the config or pass --output DIR")
        cfg.data.prepared_dir = str(out)
        if (out / "meta.json").is_file() and not args.force:
            prepared = open_prepared(out, cfg)  # checks that it was made with this config's settings
            print(f"nmt-prepare: {out} is already prepared ({prepared.stats}); --force prepares it again",
                  file=sys.stderr)
            return 0
        prepare_corpus(cfg, out, say=lambda message: print(message, file=sys.stderr))
        return 0

    return run_cli("nmt-prepare", body)


if __name__ == "__main__":
    sys.exit(main())
