"""Self-contained checkpoints, loaded safely (`weights_only=True`, archive CRCs checked). They
are written atomically by nmt/training/checkpoint_io.py.

A checkpoint is a Lightning checkpoint plus an `nmt` entry holding the resolved config and the
SentencePiece models as plain data, so it translates on its own, without the run directory.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmt.config import ConfigError, ExperimentConfig, from_dict
from nmt.errors import CheckpointError
from nmt.models import build_model
from nmt.tokenizer import Tokenizer


CHECKPOINT_FORMAT = 1  # bumped when the `nmt` entry of checkpoints changes incompatibly


def checkpoint_bytes(model: nn.Module) -> int:
    """About the size of a training checkpoint: fp32 weights plus Adam's two moments."""
    return 3 * sum(p.numel() * 4 for p in model.parameters())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; any failure becomes one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:  # torch.save writes a zip archive: check every entry against its CRC-32 (torch.load does not)
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except zipfile.BadZipFile:  # no zip directory at the end
        raise CheckpointError(f"{path}: not a readable checkpoint (not a PyTorch zip archive: empty, truncated "
                              "or another kind of file)") from None
    except (OSError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged archive: {err})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged: {damaged} fails its CRC check)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: refused to load (not plain data: {reason[:200]})") from None
    except Exception as err:  # torch.load fails in many ways on damaged files (KeyError, EOFError, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {reason[:200]})") from None


@dataclass
class LoadedModel:
    cfg: ExperimentConfig
    tokenizer: Tokenizer
    model: nn.Module


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild config, tokenizer and model (in eval mode) from a checkpoint file."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get("nmt") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "config" not in meta or "tokenizer" not in meta:
        raise CheckpointError(f"{path}: not an nmt checkpoint (no config/tokenizer entry)")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r} is not the format this version of nmt "
                              f"reads ({CHECKPOINT_FORMAT}); use the nmt version that wrote it")
    try:
        cfg = from_dict(meta["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: stored config is incompatible with this version ({err})") from None
    tokenizer = Tokenizer.from_state_dict(meta["tokenizer"])
    model = build_model(cfg.model, tokenizer)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(err).splitlines()[0]})") from None
    return LoadedModel(cfg=cfg, tokenizer=tokenizer, model=model.to(device).eval())
