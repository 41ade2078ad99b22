"""One training run, start to finish: run directory, tokenizer, data, Trainer, fit, test report.

    config --> run_dir/{config.yaml, tokenizer/, checkpoints/{last,best-*}.ckpt, logs/metrics.csv, test/}
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loops.progress import _ProcessedTracker

from nmt.api import Translator
from nmt.checkpoint import StoredModel, checkpoint_bytes, load_weights, read_stored_model
from nmt.config import ExperimentConfig, save_config
from nmt.data import Prepared, TranslationDataModule, load_raw, open_prepared, prepare_corpus, training_pairs
from nmt.training.checkpoint_io import AtomicCheckpointIO
from nmt.training.ema import WeightsEMA
from nmt.evaluation import corpus_scores
from nmt.models import count_parameters, describe_model
from nmt.provenance import environment
from nmt.tokenizer import Tokenizer, train_tokenizer
from nmt.training.module import TranslationModule
from nmt.training.precision import resolve_precision
from nmt.training.schedule import seconds


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0  # type: ignore[attr-defined]  # Lightning sets it at start


# Keys that may change between a run and its resumption (how long to train), all in `trainer`.
RESUMABLE_CHANGES = {"max_steps", "max_epochs", "max_time", "early_stopping_patience", "num_workers", "checkpoint_every"}


class RunError(RuntimeError):
    pass


def say(message: str = "") -> None:
    if is_rank_zero():
        print(message, flush=True)


# What a run writes into its directory; --overwrite removes exactly these (nothing else of the user's).
RUN_OUTPUTS = ("checkpoints", "logs", "tokenizer", "test", "config.yaml", "environment.json")


def prepare_run_dir(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, init_from: Path | None = None,
                    overwrite: bool = False) -> None:
    """Create/check the run directory before any expensive work; save the resolved config. A
    directory that holds checkpoints is continued (--resume) or replaced (--overwrite), never
    mixed with a second run (Lightning would version the new files beside the old ones)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = run_dir / "config.yaml"
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other: continue the run or start it again")
    if resume:
        if not last.is_file():
            weights = sorted(p.name for p in last.parent.glob("*.ckpt"))
            raise RunError(f"--resume: no checkpoint to resume from at {last}"
                           + (f" ({', '.join(weights)} hold weights only; start again with --overwrite, or fine-tune "
                              f"from one with --init-from)" if weights else ""))
        for stale in last.parent.glob(".*.tmp*"):  # a write cut short by a kill; the target file is intact
            stale.unlink(missing_ok=True)
        if saved.is_file():
            _check_same_experiment(yaml.safe_load(saved.read_text(encoding="utf-8")), cfg.to_dict(), saved)
    elif overwrite:
        if is_rank_zero():
            for name in RUN_OUTPUTS:
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    elif (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.ckpt")):
        raise RunError(f"{run_dir} already holds a run (checkpoints/): pass --resume to continue it, --overwrite to "
                       "start it again, or choose another --output-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as err:
        raise RunError(f"output directory {run_dir} is not writable ({err.strerror})") from None
    if is_rank_zero():
        save_config(cfg, saved)
        # seed, versions, git commit and machine; a resumed run appends its own record
        record = run_dir / "environment.json"
        history = json.loads(record.read_text(encoding="utf-8")) if resume and record.is_file() else []
        history.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": resume,
                        **({"init_from": str(init_from)} if init_from else {}), **environment(cfg.trainer.seed)})
        record.write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")


def check_disk_space(run_dir: Path, checkpoint_size: int) -> None:
    """Fail before training, not at the first save: last.ckpt, best-*.ckpt and the temporary file
    of an atomic write can exist at once."""
    free = shutil.disk_usage(run_dir).free
    if free < 3 * checkpoint_size:
        raise RunError(f"not enough free disk space in {run_dir}: {free / 1e6:,.0f} MB free, checkpoints need "
                       f"about {3 * checkpoint_size / 1e6:,.0f} MB (3 x {checkpoint_size / 1e6:,.0f} MB)")


def _check_same_experiment(old: dict, new: dict, where: Path) -> None:
    """The resumed run's settings equal the saved ones but for RESUMABLE_CHANGES. A key the saved
    config lacks (added to the toolkit after the run began) had its default then."""
    defaults = ExperimentConfig().to_dict()
    for section, values in new.items():
        for key, value in values.items():
            may_change = section == "trainer" and key in RESUMABLE_CHANGES
            if key == "num_workers" and new["data"]["streaming"] and not new["data"]["prepared_dir"]:
                may_change = False  # a resumed stream replays each worker's round-robin share
            before = old.get(section, {}).get(key, defaults.get(section, {}).get(key))
            if before != value and not may_change:
                raise RunError(f"--resume: {section}.{key} is {value!r} but the run in {where.parent} used "
                               f"{before!r}; only trainer.{{{', '.join(sorted(RESUMABLE_CHANGES))}}} may change")


# Model settings that fine-tuning (--init-from) may change: regularisation, not the architecture.
FINE_TUNABLE = {"dropout", "attention_dropout", "activation_dropout"}
# Tokenizer settings that define the vocabulary and the text it sees.
VOCABULARY_KEYS = ("type", "vocab_size", "joint", "src_normalize", "tgt_normalize")


def check_init_from(cfg: ExperimentConfig, init: StoredModel, path: Path) -> None:
    """Fine-tuning keeps the checkpoint's architecture and vocabulary: the config must say so."""
    for key in VOCABULARY_KEYS:
        ours, theirs = getattr(cfg.tokenizer, key), getattr(init.cfg.tokenizer, key)
        if ours != theirs:
            raise RunError(f"--init-from {path}: tokenizer.{key} is {ours!r} but the checkpoint's vocabulary was built "
                           f"with {theirs!r}; fine-tuning keeps the checkpoint's vocabulary, so set it to {theirs!r}")
    for key, theirs in init.cfg.model.__dict__.items():
        ours = getattr(cfg.model, key)
        if key not in FINE_TUNABLE and ours != theirs:
            raise RunError(f"--init-from {path}: model.{key} is {ours!r} but the checkpoint's model has {theirs!r}; "
                           f"only model.{{{', '.join(sorted(FINE_TUNABLE))}}} may change when fine-tuning")


def _wait_for(path: Path, what: str) -> None:
    """Other ranks (torchrun/SLURM start them together) wait for rank 0 to write `path`."""
    for _ in range(24 * 3600):
        if path.exists():
            return
        time.sleep(1)
    raise RunError(f"timed out waiting for rank 0 to write {what} ({path})")


def prepare_data(cfg: ExperimentConfig, run_dir: Path, init: StoredModel | None = None) -> Prepared:
    """data.prepared_dir: open it, or prepare it first (rank 0; the others wait for it). The
    run directory gets a copy of its tokenizer, so the run stays self-contained."""
    assert cfg.data.prepared_dir is not None  # only called with prepared data
    path = Path(cfg.data.prepared_dir)
    if is_rank_zero():
        if (path / "meta.json").is_file():
            say(f"prepared data: {path}")
        else:
            prepare_corpus(cfg, path, tokenizer=init.tokenizer if init is not None else None, say=say)
    else:
        _wait_for(path / "meta.json", "the prepared data")
    prepared = open_prepared(path, cfg)
    tokenizer = prepared.tokenizer()
    if init is not None and tokenizer.state_dict() != init.tokenizer.state_dict():
        raise RunError(f"--init-from: {path} was prepared with another tokenizer than the checkpoint's; "
                       "set data.prepared_dir to a new directory (it is then prepared with the checkpoint's)")
    directory = run_dir / "tokenizer"
    if is_rank_zero() and not (directory / "DONE").is_file():
        tokenizer.save(directory)
        (directory / "DONE").touch()
    return prepared


def prepare_tokenizer(cfg: ExperimentConfig, run_dir: Path, init: StoredModel | None = None) -> Tokenizer:
    """Train SentencePiece on the training split once (rank 0), or reuse the run's own, or take
    the one of the checkpoint being fine-tuned."""
    directory = run_dir / "tokenizer"
    if (directory / "DONE").is_file():  # written after the models: never a half-written file
        return Tokenizer.load(directory)
    if init is not None and is_rank_zero():
        init.tokenizer.save(directory)
        (directory / "DONE").touch()
        return init.tokenizer
    if not is_rank_zero():
        _wait_for(directory / "DONE", "the tokenizer")
        return Tokenizer.load(directory)
    src = (ex["src"] for ex in training_pairs(cfg.data, streaming=cfg.data.streaming))
    tgt = (ex["tgt"] for ex in training_pairs(cfg.data, streaming=cfg.data.streaming))
    tokenizer = train_tokenizer(src, tgt, cfg.tokenizer, domains=cfg.data.train_tags)
    tokenizer.save(directory)
    (directory / "DONE").touch()
    return tokenizer


class ProgressBar(TQDMProgressBar):
    """Lightning's bar without the logger's version number (loss, lr and tok/s stay)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def _validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning validates right after the batch that just ended (asked with its own rule).

    A resumable checkpoint must not be written between such a batch and its validation: Lightning
    resumes from it as from a batch whose validation is done and skips it (lightning 2.6,
    `_TrainingEpochLoop.advance`), so a kill in between lost that validation, its best checkpoint
    and its early-stopping count. LastCheckpoint saves after the validation instead.
    """
    loop = trainer.fit_loop
    return trainer.enable_validation and loop._data_fetcher is not None \
        and loop.epoch_loop._should_check_val_fx(loop._data_fetcher)


class LastCheckpoint(Checkpoint):
    """The run's one resumable checkpoint, checkpoints/last.ckpt (weights, optimizer, schedule,
    batch position, elapsed time), and the time limit `trainer.max_time`.

    Written at the end of a training batch: every `trainer.checkpoint_every` of wall-clock time
    (a kill loses at most that much, plus a validation), at the final batch, and after each
    validation (so it also holds the best-checkpoint bookkeeping); a save due at a batch that a
    validation follows waits for the validation's end. Saving at the end of a batch resumes
    exactly; a checkpoint written in `on_train_end` would mark the epoch as finished and break the
    resumed batch order. The time limit lives here (instead of Lightning's Timer, which runs after this
    callback) so the final batch is known when it ends; training time spent before a resume
    counts towards it. Under several processes rank 0's clock decides for all of them, so every
    rank stops and saves at the same step (trainer.save_checkpoint is collective).

    A `Checkpoint` subclass only so that Lightning runs it after ModelCheckpoint (listed before
    it): the checkpoint written after a validation then includes that validation's best score.
    """

    def __init__(self, path: Path, max_time: str | None, every: str | None) -> None:
        self.path = path
        self.max_seconds = seconds(max_time) if max_time else None
        self.every = seconds(every) if every else None
        self.elapsed_before, self._start, self._saved_at, self._step_seen = 0.0, time.monotonic(), 0.0, -1
        # training seconds at the end of the last optimizer step, the same on every rank (rank 0's
        # clock when there is a time limit): what optim.lr_schedule linear reads its progress from
        self.step_elapsed = 0.0
        self._rng: tuple = (None, None)  # (torch, cuda) random state from a resumed checkpoint

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        # Lightning 2.6, resumed from a checkpoint written at the last batch of an epoch, starts the
        # next epoch without counting it as started (FitLoop.on_advance_start skips that after a
        # "mid-epoch" restart). A checkpoint written later in that epoch then resumed into the
        # previous epoch's batch order. Count it as an uninterrupted run does.
        epochs = trainer.fit_loop.epoch_progress
        current = epochs.current
        if isinstance(current, _ProcessedTracker) and current.started == current.processed:
            epochs.increment_ready()
            epochs.increment_started()

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        # Decide only at the end of an optimizer step: with trainer.accumulate_grad_batches a
        # checkpoint between two accumulated batches would lose the gradients gathered so far.
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if not stepped and not trainer.should_stop:
            return
        elapsed = self.elapsed()
        if trainer.world_size > 1 and (self.max_seconds is not None or self.every is not None):
            elapsed = trainer.strategy.broadcast(elapsed)  # rank 0's clock, the same decision everywhere
        self.step_elapsed = elapsed
        if self.max_seconds is not None and elapsed >= self.max_seconds:
            trainer.should_stop = True
        final = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step or (
            trainer.is_last_batch and 0 < (trainer.max_epochs or 0) <= trainer.current_epoch + 1)
        if (final or (self.every is not None and elapsed - self._saved_at >= self.every)) \
                and not _validation_follows(trainer):
            self._save(trainer, elapsed)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer, self.elapsed())

    def _save(self, trainer: L.Trainer, elapsed: float) -> None:
        self._saved_at = elapsed
        trainer.save_checkpoint(self.path)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # wall-clock seconds of the run so far (validation included): x axis of learning curves
        if not trainer.sanity_checking:
            pl_module.log("wall_s", round(self.elapsed(), 1), rank_zero_only=True)

    def state_dict(self) -> dict:
        # torch's random state too: the resumed run draws the dropout masks the killed one would have
        state = {"elapsed": self.elapsed(), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.elapsed_before = self.step_elapsed = float(state.get("elapsed", 0.0))
        self._rng = state.get("torch_rng"), state.get("cuda_rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        self._saved_at, self._step_seen = self.elapsed(), trainer.global_step
        torch_rng, cuda_rng = self._rng
        if torch_rng is not None:  # restored here, after Lightning's own set-up has drawn what it draws
            torch.set_rng_state(torch_rng)
        if cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda_rng)
        self._rng = None, None


class LogLines(Callback):
    """Output to a file or a pipe is a log, not a terminal: no progress bar (its redraws would fill
    the file), but a plain line every `every` optimizer steps and one after each validation."""

    def __init__(self, every: int, clock: LastCheckpoint) -> None:
        self.every, self.clock, self._last = max(1, every), clock, -1

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        step = trainer.global_step
        if step == self._last or step % self.every:
            return
        self._last = step
        m = trainer.progress_bar_metrics
        of = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        speed = f"  tok/s {m['tok/s']:,.0f}" if "tok/s" in m else ""
        say(f"step {step}{of}  epoch {trainer.current_epoch}  loss {m.get('loss', float('nan')):.3f}  "
            f"lr {m.get('lr', 0.0):.3g}{speed}  elapsed {_clock(self.clock.elapsed())}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        m = trainer.callback_metrics
        if "val_bleu" in m:
            say(f"validation at step {trainer.global_step}: BLEU {float(m['val_bleu']):.2f}  chrF "
                f"{float(m['val_chrf']):.2f}  loss {float(m['val_loss']):.3f}  elapsed {_clock(self.clock.elapsed())}")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _DropLightningNoise(logging.Filter):
    """Lightning's start-up lines that a user of nmt-train cannot act on (our own summary says
    which device is used): GPU/TPU availability, advertising tips, checkpoint-loading defaults."""

    NOISE = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "`weights_only` was not set",
             "LOCAL_RANK:", "You are using a CUDA device", "`Trainer.fit` stopped:", "Restoring states from",
             "Restored all states from", "Detected KeyboardInterrupt")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lstrip()
        return not message.startswith(self.NOISE)


def quiet_lightning() -> None:
    noise = _DropLightningNoise()
    for handler in logging.getLogger("lightning.pytorch").handlers:
        if not any(isinstance(f, _DropLightningNoise) for f in handler.filters):
            handler.addFilter(noise)


class KeepMetricsOnResume(Callback):
    """Lightning's CSV logger starts metrics.csv afresh; on resume, carry over the rows of the
    steps the checkpoint already covers, so one file holds the whole loss curve."""

    def __init__(self, path: Path) -> None:
        self.rows: list[dict] = []
        if path.is_file():
            with path.open(encoding="utf-8", newline="") as f:
                self.rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is not None and self.rows and trainer.is_global_zero:
            kept = [row for row in self.rows if int(row["step"]) < trainer.global_step]
            logger.experiment.metrics[:0] = kept


def build_trainer(cfg: ExperimentConfig, run_dir: Path, *, resume: bool = False,
                  extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best-step{step}-bleu{val_bleu:.2f}",
        auto_insert_metric_name=False, monitor="val_bleu", mode="max", save_top_k=1,
        # a run resumed after a kill between this file and last.ckpt validates that step again, with the
        # same weights: it writes the same file again, not a "-v1" copy beside it
        enable_version_counter=False)
    last = LastCheckpoint(run_dir / "checkpoints" / "last.ckpt", t.max_time, t.checkpoint_every)
    terminal = sys.stdout.isatty() and not os.environ.get("CI")
    show = ProgressBar(refresh_rate=1) if terminal else LogLines(t.log_every_n_steps, last)
    callbacks = [checkpoint, last, show, *extra_callbacks]
    quiet_lightning()
    if t.save_every_n_steps:  # the newest N sets of weights, for checkpoint averaging (nmt-average)
        callbacks.append(ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step{step}", auto_insert_metric_name=False, monitor="step",
            mode="max", save_top_k=t.keep_last_checkpoints, every_n_train_steps=t.save_every_n_steps,
            save_weights_only=True, enable_version_counter=False))
    if t.ema_decay:
        callbacks.append(WeightsEMA(t.ema_decay))
    if resume:
        callbacks.append(KeepMetricsOnResume(run_dir / "logs" / "metrics.csv"))
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_bleu", mode="max", patience=t.early_stopping_patience))
    loggers: list[Logger] = [CSVLogger(run_dir, name="", version="logs")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401  (optional)
        loggers.append(TensorBoardLogger(run_dir, name="", version="logs"))
    except ImportError:
        pass
    devices = t.devices if not t.devices.isdigit() else int(t.devices)
    try:
        return L.Trainer(
            default_root_dir=run_dir, max_steps=t.max_steps, max_epochs=t.max_epochs,
            accelerator=t.accelerator, devices=devices, num_nodes=t.num_nodes, strategy=t.strategy,
            precision=resolve_precision(t.precision, t.accelerator),  # type: ignore[arg-type]  # Lightning checks the name
            accumulate_grad_batches=t.accumulate_grad_batches,
            gradient_clip_val=t.gradient_clip_val or None, val_check_interval=t.val_check_interval,
            check_val_every_n_epoch=None, log_every_n_steps=t.log_every_n_steps, callbacks=callbacks,
            logger=loggers, plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
            num_sanity_val_steps=0, enable_model_summary=False, deterministic=False, enable_progress_bar=terminal)
    except MisconfigurationException as err:  # no GPU, unknown strategy, ... in Lightning's words
        raise RunError(f"trainer.accelerator={t.accelerator}, devices={t.devices}, strategy={t.strategy}, "
                       f"precision={t.precision}: {err}") from None


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path | None
    best_bleu: float | None
    test_scores: dict | None
    wall_s: float
    train_tokens_per_s: float  # target tokens (incl. EOS) per second of training steps, this process
    skipped_steps: int = 0  # steps skipped for a non-finite loss (this process, since the last start)


def return_freed_memory_to_the_os() -> None:
    """trainer.low_memory, glibc: serve allocations above 2 MB with mmap, so freed activations go
    back to the OS at once. By default glibc raises that threshold after the first frees (up to
    32 MB) and keeps freed buffers of every batch shape in its heap. On the benchmark's training
    run (scripts/bench.py) peak RSS drops from 1.58 to 1.21 GB, but the page faults of fresh
    mappings make steps slower on 2 cores (docs/performance.md), so it is off by default."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): leave the allocator alone
        return
    m_mmap_threshold = -3  # from malloc.h
    libc.mallopt(m_mmap_threshold, 2 * 1024 * 1024)


def train(cfg: ExperimentConfig, run_dir: Path, *, resume: bool = False, test: bool = True,
          callbacks: Sequence[Callback] = (), init_from: Path | None = None, overwrite: bool = False) -> RunResult:
    """nmt-train's whole job. `callbacks`: extra Lightning callbacks (own logging, benchmarks).
    `init_from`: a checkpoint to fine-tune (its weights and vocabulary; a fresh optimizer and
    schedule). A resumed run takes its weights from its own last checkpoint instead."""
    if cfg.trainer.low_memory:
        return_freed_memory_to_the_os()
    start = time.perf_counter()
    init = None
    if init_from is not None:
        init = read_stored_model(init_from)
        check_init_from(cfg, init, init_from)
    prepare_run_dir(cfg, run_dir, resume=resume, init_from=init_from, overwrite=overwrite)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    prepared = prepare_data(cfg, run_dir, init) if cfg.data.prepared_dir else None
    tokenizer = prepared.tokenizer() if prepared else prepare_tokenizer(cfg, run_dir, init)
    data = TranslationDataModule(cfg, tokenizer, prepared)
    data.setup("fit")
    module = TranslationModule(cfg=cfg, tokenizer=tokenizer)
    if init is not None and init_from is not None and not resume:
        load_weights(module.model, init.state, init_from)
        say(f"initialised from {init_from} (weights and vocabulary; new optimizer state and schedule)")
    check_disk_space(run_dir, checkpoint_bytes(module.model))
    n_batches = None if data.streaming else len(data.train_sampler())
    trainer = build_trainer(cfg, run_dir, resume=resume, extra_callbacks=list(callbacks))
    clock = next(c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint))
    module.clock = lambda: clock.step_elapsed  # (optim.lr_schedule linear: the budget spent)
    _print_start_summary(cfg, data, module, trainer, run_dir, n_batches)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit code 1; say it was an interrupt (130)
            raise KeyboardInterrupt from None
        raise
    if module.stop_reason:
        raise RunError(f"{module.stop_reason}; the last checkpoint, {last}, holds the weights from before them")
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)  # build_trainer adds one
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    best_bleu = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    test_scores = None
    if test and cfg.data.test and trainer.is_global_zero:
        test_scores = run_test(cfg, best or last, run_dir / "test")
    result = RunResult(run_dir, best, best_bleu, test_scores, time.perf_counter() - start,
                       module.train_tokens / max(module.train_seconds, 1e-9), module.nonfinite_steps)
    _print_end_summary(result, trainer)
    return result


def run_test(cfg: ExperimentConfig, checkpoint: Path, out_dir: Path, n_samples: int = 5) -> dict:
    """Translate the test split with the given checkpoint; write src/ref/hyp and scores."""
    translator = Translator.from_checkpoint(checkpoint)
    options = translator.defaults  # the config's decoding section, as nmt-translate would use it
    raw = load_raw(cfg.data, "test")
    src = [s.strip() for s in raw["src"]]
    ref = [t.strip() for t in raw["tgt"]]
    t0 = time.perf_counter()
    hyp = [t.text for t in translator.translate(src, options)]
    seconds = time.perf_counter() - t0
    scores = corpus_scores(hyp, [ref], tgt_lang=cfg.data.tgt_lang)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in (("src.txt", src), ("ref.txt", ref), ("hyp.txt", hyp)):
        (out_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    report = {"checkpoint": str(checkpoint), "split": cfg.data.test, "sentences": len(src), "decoding": options.describe(),
              "options": dataclasses.asdict(options),
              "seconds": round(seconds, 2), "scores": scores,
              "environment": environment(cfg.trainer.seed)}
    (out_dir / "scores.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    say(f"\nTest ({len(src)} held-out sentences, {options.describe()}, {seconds:.1f} s), checkpoint {checkpoint.name}:")
    for name in ("bleu", "chrf"):
        say(f"  {scores[name]['text']}")
        say(f"    signature: {scores[name]['signature']}")
    say("Sample translations:")
    for i in range(0, len(src), max(1, len(src) // n_samples))[:n_samples]:
        say(f"  SRC: {src[i]}\n  REF: {ref[i]}\n  HYP: {hyp[i]}")
    return report


def _print_start_summary(cfg, data, module, trainer, run_dir, n_batches) -> None:
    d, m = cfg.data, cfg.model
    tok = module.tokenizer
    vocab = f"joint {tok.src_vocab_size}" if tok.joint else f"src {tok.src_vocab_size}, tgt {tok.tgt_vocab_size}"
    train_line = "streaming (tokenised on the fly, repeated until the step or time limit)" if data.streaming \
        else f"{data.train_stats}{' (prepared: ' + d.prepared_dir + ')' if d.prepared_dir else ''}"
    say("=" * 78)
    say(f"nmt: {d.src_lang}->{d.tgt_lang} {m.type}, run directory {run_dir}")
    say(f"  data       source {d.source}; train: {train_line}")
    say(f"             valid: {data.valid_stats}")
    if n_batches:
        say(f"             {n_batches} training batches per epoch (max_tokens {d.max_tokens}) per device")
    say(f"  tokenizer  sentencepiece {cfg.tokenizer.type}, vocabulary {vocab}")
    say(f"  model      {count_parameters(module.model):,} parameters: {describe_model(m)}")
    say(f"  device     {trainer.accelerator.__class__.__name__.replace('Accelerator', '')} x{trainer.num_devices}, "
        f"{trainer.num_nodes} node(s), precision {trainer.precision}{' (auto)' if cfg.trainer.precision == 'auto' else ''}, "
        f"torch threads {torch.get_num_threads()}")
    say("=" * 78)


def _print_end_summary(result: RunResult, trainer: L.Trainer) -> None:
    say("=" * 78)
    say(f"done in {result.wall_s / 60:.1f} min, {trainer.global_step} optimizer steps, "
        f"{result.train_tokens_per_s:,.0f} target tokens/s while training (per device)")
    if result.skipped_steps:
        say(f"  {result.skipped_steps} step(s) skipped for a non-finite loss")
    if result.best_checkpoint:
        say(f"  best validation BLEU {result.best_bleu:.2f}: {result.best_checkpoint}")
    say(f"  last checkpoint: {result.run_dir / 'checkpoints' / 'last.ckpt'}")
    if result.test_scores:
        s = result.test_scores["scores"]
        say(f"  test BLEU {s['bleu']['score']:.2f}, chrF {s['chrf']['score']:.2f} ({result.test_scores['decoding']}): "
            f"{result.run_dir / 'test'}")
    say("=" * 78)
