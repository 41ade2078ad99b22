"""The LightningModule: holds the plain model; loss, optimiser, schedule and metrics live here."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning as L
import torch

from nmt.checkpoint import CHECKPOINT_FORMAT
from nmt.config import ExperimentConfig
from nmt.decoding.greedy import greedy_decode
from nmt.evaluation import corpus_scores
from nmt.masks import make_pad_mask
from nmt.models import build_model
from nmt.tokenizer import PAD_ID, Tokenizer
from nmt.training.loss import label_smoothed_nll
from nmt.training.schedule import budget_progress, inverse_sqrt_lr, linear_lr, noam_lr, seconds


class TranslationModule(L.LightningModule):
    def __init__(self, *, cfg: ExperimentConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.model = build_model(cfg.model, tokenizer)
        # trainer.compile: a compiled forward for training steps; a bound method, not a module, so
        # the state dict (and every checkpoint) keeps the plain parameter names.
        self._train_forward = torch.compile(self.model.forward, dynamic=True) if cfg.trainer.compile else self.model
        self._val: dict[str, Any] = {}
        self._last_time: float | None = None
        self._tokens_per_s: float | None = None
        self.train_tokens, self.train_seconds = 0, 0.0  # for the run's average tokens/s
        self.nonfinite_steps, self.nonfinite_in_a_row = 0, 0  # skipped steps (NaN/inf loss)
        self.stop_reason: str | None = None  # set when training must end with an error
        # seconds of training so far, for optim.lr_schedule linear (nmt.training.run sets it to the
        # run's clock, which counts the time before a resume; without one only steps count)
        self.clock: Callable[[], float] | None = None

    # -- one step, shared by training and validation ---------------------------------------------
    def _shared_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        src_mask = make_pad_mask(batch["src"])  # (B, 1, 1, S)
        keep = batch["tgt_out"] != PAD_ID  # (B, T): the output layer and the loss skip padding
        forward = self._train_forward if stage == "train" else self.model
        logits = forward(batch["src"], src_mask, batch["tgt_in"], keep=keep)  # (N, V)
        epsilon = self.cfg.optim.label_smoothing if stage == "train" else 0.0
        return label_smoothed_nll(logits, batch["tgt_out"][keep], epsilon)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        loss_sum, nll_sum, n_tokens = self._shared_step(batch, "train")
        finite, all_tokens, all_loss = self._sum_over_ranks(loss_sum, n_tokens)
        if not finite:
            self._skip_nonfinite_step()
            return None
        self.nonfinite_in_a_row = 0
        self._update_throughput(n_tokens)
        # Normalised by the target tokens of all ranks (fairseq's sample_size), times W because DDP
        # averages the ranks' gradients: W ranks with parts of a batch then take exactly the step of
        # one process with the whole batch (tests/test_scale.py). With one process: loss_sum / n_tokens.
        loss = loss_sum * (self.trainer.world_size / all_tokens)
        bs = batch["src"].size(0)
        self.log("loss", all_loss / all_tokens, prog_bar=True, batch_size=bs)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=bs)
        if self._tokens_per_s is not None:
            self.log("tok/s", self._tokens_per_s, prog_bar=True, batch_size=bs)
        return loss

    def _sum_over_ranks(self, loss_sum: torch.Tensor, n_tokens: int) -> tuple[bool, float, float]:
        """One host sync per step (one all-reduce under DDP): whether every rank's loss is finite,
        and the target tokens and loss summed over the ranks. Every rank must skip the same steps
        (no backward, no all-reduce of gradients)."""
        totals = torch.stack([torch.isfinite(loss_sum.detach()).to(torch.float64),
                              torch.tensor(float(n_tokens), dtype=torch.float64, device=loss_sum.device),
                              loss_sum.detach().to(torch.float64)])
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        finite, tokens, loss = totals.tolist()
        return finite == self.trainer.world_size, tokens, loss

    def _skip_nonfinite_step(self) -> None:
        """A NaN/inf loss: no backward and no parameter update (returning None makes Lightning skip
        them; Adam leaves parameters without gradients alone). Too many in a row stop the run;
        the last checkpoint then holds the weights from before the first bad step."""
        self.nonfinite_steps += 1
        self.nonfinite_in_a_row += 1
        limit = self.cfg.trainer.max_nonfinite_steps
        self.print(f"warning: non-finite loss at step {self.global_step}, step skipped "
                   f"({self.nonfinite_in_a_row} in a row, {self.nonfinite_steps} in all)")
        if limit and self.nonfinite_in_a_row >= limit:
            self.stop_reason = (f"training stopped at step {self.global_step}: {self.nonfinite_in_a_row} non-finite "
                                f"losses in a row (trainer.max_nonfinite_steps={limit}); lower optim.peak_lr, "
                                "set trainer.gradient_clip_val or check the data")
            self.trainer.should_stop = True
        self._last_time = None
        return None

    def _update_throughput(self, n_tokens: int) -> None:
        """Target tokens (incl. EOS) per second of wall time, smoothed; reset around validation."""
        now = time.perf_counter()
        if self._last_time is not None:  # the first step after start/validation is not timed
            self.train_tokens += n_tokens
            self.train_seconds += now - self._last_time
            rate = n_tokens / max(now - self._last_time, 1e-9)
            self._tokens_per_s = rate if self._tokens_per_s is None else 0.9 * self._tokens_per_s + 0.1 * rate
        self._last_time = now

    # -- validation: loss, perplexity, BLEU of greedy translations -------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"loss": 0.0, "tokens": 0, "hyps": [], "refs": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, nll_sum, n_tokens = self._shared_step(batch, "valid")
        self._val["loss"] += float(nll_sum)
        self._val["tokens"] += n_tokens
        # BLEU of greedy translations of the first `val_bleu_sentences` validation pairs in file
        # order (batches come shortest first, so "the first N batches" would be the N shortest).
        limit = self.cfg.trainer.val_bleu_sentences
        rows = [r for r, i in enumerate(batch["index"]) if limit == 0 or i < limit]
        if rows:
            src = batch["src"][rows]  # (b, S)
            src = src[:, : int((src != PAD_ID).sum(dim=1).max())]  # drop columns only the others needed
            d = self.cfg.decoding
            ids = greedy_decode(self.model, src, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
            self._val["hyps"] += [self.tokenizer.decode_tgt(x) for x in ids]
            self._val["refs"] += [batch["tgt_text"][r] for r in rows]

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val["loss"], self._val["tokens"]], dtype=torch.float64, device=self.device)
        hyps, refs = self._val["hyps"], self._val["refs"]
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, (hyps, refs))
            hyps = [h for part in gathered for h in part[0]]
            refs = [r for part in gathered for r in part[1]]
        val_loss = float(totals[0] / totals[1].clamp(min=1))
        scores = corpus_scores(hyps, [refs], tgt_lang=self.cfg.data.tgt_lang)
        self.log_dict({"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
                       "val_bleu": scores["bleu"]["score"], "val_chrf": scores["chrf"]["score"]},
                      prog_bar=False, sync_dist=False, rank_zero_only=False)
        self.val_scores = scores
        self._last_time = None  # do not count validation time as training time

    # -- optimiser and schedule ------------------------------------------------------------------
    def configure_optimizers(self):
        o, d_model = self.cfg.optim, self.cfg.model.d_model
        # fused: one kernel for all parameters instead of a Python loop of small ops per parameter
        optimizer = torch.optim.Adam(self.model.parameters(), lr=1.0, betas=tuple(o.adam_betas),
                                     eps=o.adam_eps, weight_decay=o.weight_decay, fused=True)
        if o.lr_schedule == "noam":
            fn = partial(noam_lr, d_model=d_model, warmup_steps=o.warmup_steps, scale=o.lr_scale)
        elif o.lr_schedule == "inverse_sqrt":
            fn = partial(inverse_sqrt_lr, peak_lr=o.peak_lr, warmup_steps=o.warmup_steps)
        else:  # linear, over the budget: trainer.max_steps and/or max_time
            t = self.cfg.trainer
            max_seconds = seconds(t.max_time) if t.max_time else None

            def fn(step: int) -> float:
                elapsed = self.clock() if self.clock is not None else 0.0
                # (step - 1: the steps done, so the first step runs at lr 0, as HF's linear schedule)
                progress = budget_progress(step - 1, elapsed, max_steps=t.max_steps, max_seconds=max_seconds)
                return linear_lr(progress, peak_lr=o.peak_lr, warmup_fraction=o.warmup_fraction)
        # LambdaLR counts from 0 before the first step; the paper's step numbers start at 1.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- self-contained checkpoints: config and tokenizer as plain data ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "optimizer_states" not in checkpoint:  # weights only (step<N>.ckpt): Lightning skips the callbacks' hooks
            for callback in getattr(self._trainer, "callbacks", []):
                average = getattr(callback, "average_state_dict", None)
                if average is not None and (weights := average()) is not None:
                    checkpoint["state_dict"] = weights  # trainer.ema_decay: the averaged weights, as in last.ckpt
        checkpoint["nmt"] = {"format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(),
                             "tokenizer": self.tokenizer.state_dict()}
