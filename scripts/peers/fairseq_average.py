"""Average the last N step checkpoints of a fairseq run (checkpoint_<epoch>_<updates>.pt), the way
fairseq's scripts/average_checkpoints.py --num-update-checkpoints N does: the element-wise mean of
every tensor in "model", the rest of the newest checkpoint kept as it is. That script is in
fairseq's git repository but not in the 0.12.2 sdist; fairseq_compare.py uses it instead of this
one when given --averager PATH. Runs in fairseq's environment (its checkpoints unpickle omegaconf
objects), with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.

    python scripts/peers/fairseq_average.py --inputs SAVE_DIR --num-update-checkpoints N --output OUT.pt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch


def last_update_checkpoints(directory: Path, n: int) -> list[Path]:
    """The newest n checkpoint_<epoch>_<updates>.pt files, newest first (as fairseq's last_n_checkpoints)."""
    found = sorted(((int(m.group(1)), p) for p in directory.iterdir()
                    if (m := re.fullmatch(r"checkpoint_\d+_(\d+)\.pt", p.name))), reverse=True)
    if len(found) < n:
        sys.exit(f"fairseq_average.py: {len(found)} step checkpoint(s) in {directory}, {n} asked for")
    return [p for _, p in found[:n]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=Path, required=True, help="the run's --save-dir")
    p.add_argument("--num-update-checkpoints", type=int, required=True)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    paths = last_update_checkpoints(args.inputs, args.num_update_checkpoints)
    newest, sums = None, {}
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=False)
        newest = newest or state
        if sums and set(state["model"]) != set(sums):
            sys.exit(f"fairseq_average.py: {path} holds other parameters than {paths[0]}")
        for key, tensor in state["model"].items():
            value = tensor.float() if tensor.is_floating_point() else tensor
            if key in sums:
                sums[key] += value
            else:
                sums[key] = value.clone()
    n = len(paths)
    newest["model"] = {k: (v / n if v.is_floating_point() else v // n) for k, v in sums.items()}
    torch.save(newest, args.output)
    print(f"averaged {n} checkpoints ({', '.join(p.name for p in paths)}) into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
