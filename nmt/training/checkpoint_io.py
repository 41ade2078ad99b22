"""Lightning's checkpoint I/O with atomic writes and safe, checked loads."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from nmt.checkpoint import read_checkpoint, write_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same directory, fsync, then rename over the target: a
    crash mid-write leaves the previous checkpoint intact. Loads with weights_only=True."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        write_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)
