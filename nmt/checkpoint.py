"""Self-contained checkpoints, loaded safely (`weights_only=True`, archive CRCs checked). They
are written atomically by nmt/training/checkpoint_io.py.

A checkpoint is a Lightning checkpoint plus an `nmt` entry holding the resolved config and the
SentencePiece models as plain data, so it translates on its own, without the run directory.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmt.confidence import Calibration, read_calibration
from nmt.config import ConfigError, ExperimentConfig, from_dict
from nmt.errors import CheckpointError
from nmt.models import build_model
from nmt.shortlist import Shortlist
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


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over the target:
    a crash mid-write leaves the previous file intact."""
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


def store_entry(path: str | Path, output: str | Path, key: str, value: Any) -> None:
    """Write checkpoint `path` to `output` (may be the same file) with `value` stored under its
    `nmt` entry's `key` (a shortlist, a calibration), atomically."""
    ckpt = read_checkpoint(path)
    ckpt["nmt"][key] = value
    write_checkpoint(ckpt, output)


@dataclass
class LoadedModel:
    cfg: ExperimentConfig
    tokenizer: Tokenizer
    model: nn.Module
    shortlist: Shortlist | None = None  # the vocabulary shortlist stored with it (nmt-shortlist), if any
    calibration: Calibration | None = None  # the confidence model stored with it (nmt-calibrate), if any


@dataclass
class StoredModel:
    """What a checkpoint holds for translation, before the model is built."""

    cfg: ExperimentConfig
    tokenizer: Tokenizer
    state: dict[str, torch.Tensor]  # the model's state_dict (no "model." prefix)
    meta: dict[str, Any]  # the checkpoint's `nmt` entry as stored


def read_stored_model(path: str | Path) -> StoredModel:
    """Config, tokenizer and weights of an nmt checkpoint, checked; one-line errors."""
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
    state = {k.removeprefix("model."): v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("model.")}
    return StoredModel(cfg=cfg, tokenizer=Tokenizer.from_state_dict(meta["tokenizer"]), state=state, meta=meta)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(err).splitlines()[0]})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild config, tokenizer and model (in eval mode) from a checkpoint file."""
    stored = read_stored_model(path)
    model = build_model(stored.cfg.model, stored.tokenizer)
    load_weights(model, stored.state, path)
    shortlist = stored.meta.get("shortlist")
    try:
        shortlist = None if shortlist is None else Shortlist.from_state_dict(shortlist)
    except (KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path}: damaged vocabulary shortlist entry; build it again with nmt-shortlist") from None
    return LoadedModel(cfg=stored.cfg, tokenizer=stored.tokenizer, model=model.to(device).eval(), shortlist=shortlist,
                       calibration=read_calibration(stored.meta.get("calibration"), path))


# --------------------------------------------------------------------------------------------
# Checkpoint averaging (Vaswani et al. 2017, section 6.1: the base model averages the last 5
# checkpoints, written at 10-minute intervals)
# --------------------------------------------------------------------------------------------

def last_checkpoints(directory: str | Path, n: int) -> list[Path]:
    """The newest `n` step<N>.ckpt files of a run's checkpoints/ directory (trainer.save_every_n_steps),
    oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    found = sorted((int(m.group(1)), p) for p in directory.glob("step*.ckpt")
                   if (m := re.fullmatch(r"step(\d+)\.ckpt", p.name)))
    if len(found) < n:
        raise CheckpointError(f"{directory}: {len(found)} step<N>.ckpt file(s), {n} asked for (train with "
                              "trainer.save_every_n_steps and keep_last_checkpoints >= N)")
    return [p for _, p in found[-n:]]


def average_checkpoints(paths: list[str | Path]) -> dict[str, Any]:
    """A checkpoint whose weights are the element-wise mean of the given checkpoints' (same run
    or at least the same architecture and vocabulary); config and tokenizer from the last one.
    Holds no optimizer state: it translates, fine-tunes (--init-from) and averages again."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    stored = [read_stored_model(p) for p in paths]
    first, last = stored[0], stored[-1]
    for path, s in zip(paths[1:], stored[1:]):
        if s.tokenizer.state_dict() != first.tokenizer.state_dict():
            raise CheckpointError(f"{path}: another vocabulary than {paths[0]}; only checkpoints of one model can be averaged")
        if s.cfg.model != first.cfg.model or s.state.keys() != first.state.keys():
            raise CheckpointError(f"{path}: another architecture than {paths[0]}; only checkpoints of one model can be averaged")
        for name, tensor in s.state.items():
            if tensor.shape != first.state[name].shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, {paths[0]} has "
                                      f"{tuple(first.state[name].shape)}")
    averaged = {}
    for name, tensor in last.state.items():
        if tensor.is_floating_point():  # sum in float64, store in the checkpoint's dtype
            total = stored[0].state[name].to(torch.float64)
            for s in stored[1:]:
                total = total + s.state[name].to(torch.float64)
            averaged[f"model.{name}"] = (total / len(stored)).to(tensor.dtype)
        else:
            averaged[f"model.{name}"] = tensor
    meta = {**last.meta, "averaged_from": [Path(p).name for p in paths]}
    return {"state_dict": averaged, "nmt": meta}
