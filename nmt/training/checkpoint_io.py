"""Lightning's checkpoint I/O with atomic writes and safe, checked loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nmt.checkpoint import read_checkpoint
from nmt.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same directory, fsync, then rename over the target: a
    crash mid-write leaves the previous checkpoint intact. Loads with weights_only=True."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:  # disk full, quota, permissions: the old file is untouched
            kept = "the previous checkpoint there is unchanged" if path.is_file() else "nothing was written"
            raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or err}; {kept}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)
