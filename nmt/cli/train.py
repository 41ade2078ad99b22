"""nmt-train CONFIG [--set section.key=value ...] [--output-dir DIR] [--resume | --overwrite] [--init-from CKPT]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-train", description="Train a translation model from a YAML config.")
    p.add_argument("config", help="experiment file, e.g. configs/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set trainer.max_steps=100")
    p.add_argument("--output-dir", type=Path, default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an --output-dir that holds a run (removes its checkpoints, logs, tokenizer, "
                        "test output and config)")
    p.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                   help="fine-tune: start from this checkpoint's weights and vocabulary (not its optimizer state or "
                        "step count); the config's model and tokenizer settings must match it")
    p.add_argument("--no-test", action="store_true", help="skip translating and scoring the test split at the end")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nmt.config import load_config  # heavy imports (torch, lightning) after argument parsing
    from nmt.training.run import RunError, train

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        train(cfg, args.output_dir or Path("runs") / Path(args.config).stem, resume=args.resume,
              test=not args.no_test, init_from=args.init_from,
              overwrite=args.overwrite)
        return 0

    return run_cli("nmt-train", body, (RunError,))


if __name__ == "__main__":
    sys.exit(main())
