"""nmt-average CKPT [CKPT ...] -o OUT.ckpt  |  nmt-average --last N RUN/checkpoints -o OUT.ckpt

Averages the weights of several checkpoints of one model into one loadable checkpoint (Vaswani
et al. 2017, section 6.1; fairseq's scripts/average_checkpoints.py). `--last N DIR` takes the
newest N step<N>.ckpt files that `trainer.save_every_n_steps` writes during training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.cli import UsageError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-average", description="Average the weights of checkpoints of one model.")
    p.add_argument("checkpoints", nargs="*", type=Path, help="checkpoints to average (or use --last)")
    p.add_argument("--last", nargs=2, metavar=("N", "DIR"), default=None,
                   help="the newest N step<N>.ckpt files in DIR (a run's checkpoints/ directory)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the averaged checkpoint to write")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.checkpoint import average_checkpoints, last_checkpoints, write_checkpoint

        paths = list(args.checkpoints)
        if args.last:
            n, directory = args.last
            if not n.isdigit() or int(n) < 1:
                raise UsageError(f"--last N DIR: N must be a positive whole number, got '{n}'")
            paths += last_checkpoints(directory, int(n))
        if not paths:
            raise UsageError("give checkpoints to average, or --last N DIR")
        write_checkpoint(average_checkpoints(paths), args.output)
        print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.output}")
        return 0

    return run_cli("nmt-average", body)


if __name__ == "__main__":
    sys.exit(main())
