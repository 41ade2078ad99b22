"""trainer.ema_decay: an exponential moving average of the weights (nmt/training/ema.py)."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from nmt.cli import train as train_cli
from nmt.config import load_config
from nmt.training.run import train

from tests.conftest import ROOT

TOY = ROOT / "configs" / "toy_reverse.yaml"
QUICK = ["trainer.log_every_n_steps=1", "trainer.val_bleu_sentences=5", "data.limit_train=2000"]


class RecordWeights(Callback):
    """One encoder matrix after every optimizer step (the current weights, not the average)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.after_step: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        params = dict(pl_module.named_parameters())
        self.name = self.name or next(n for n, p in params.items() if "encoder" in n and p.dim() == 2)
        self.after_step.append(params[self.name].detach().clone())


def test_checkpoints_hold_the_moving_average_of_the_weights_after_each_step(tmp_path):
    """decay 0.2 over 3 steps, by hand, d = min(0.2, (1 + n) / (10 + n)) after n updates:
    e1 = w1; e2 = 2/11 e1 + 9/11 w2 (the warm-up: 2/11 < 0.2); e3 = 0.2 e2 + 0.8 w3 (3/12 > 0.2).
    last.ckpt holds e3 (and the current w3 for resuming); the weights-only step2.ckpt holds e2."""
    record = RecordWeights()
    cfg = load_config(TOY, ["trainer.ema_decay=0.2", "trainer.max_steps=3", "trainer.val_check_interval=3",
                            "optim.warmup_steps=1", "optim.peak_lr=0.01",  # steps that move the weights visibly
                            "trainer.save_every_n_steps=1", "trainer.keep_last_checkpoints=3", *QUICK])
    run = train(cfg, tmp_path / "run", test=False, callbacks=[record])
    w1, w2, w3 = record.after_step
    e1 = w1
    e2 = 2 / 11 * e1 + 9 / 11 * w2
    e3 = 0.2 * e2 + 0.8 * w3
    last = torch.load(run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(last["state_dict"][record.name], e3)
    torch.testing.assert_close(last["current_model_state"][record.name], w3)
    assert not torch.allclose(e3, w3) and not torch.allclose(e2, 0.2 * e1 + 0.8 * w2)  # the warm-up shows
    step2 = torch.load(run.run_dir / "checkpoints" / "step2.ckpt", weights_only=True)
    assert "optimizer_states" not in step2
    torch.testing.assert_close(step2["state_dict"][record.name], e2)


def test_a_run_with_the_average_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """Stopped at an epoch end and resumed, both the average and the current weights end equal to
    those of a run that was never stopped (the average's state is in last.ckpt)."""
    base = [str(TOY), "--no-test", "--set", "trainer.ema_decay=0.9", "--set", "trainer.max_steps=-1",
            "--set", "trainer.val_check_interval=20", *[a for kv in QUICK for a in ("--set", kv)]]
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "straight"), "--set", "trainer.max_epochs=3"]) == 0
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "split"), "--set", "trainer.max_epochs=2"]) == 0
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "split"), "--set", "trainer.max_epochs=3",
                           "--resume"]) == 0
    a, b = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True) for run in ("straight", "split"))
    assert a["global_step"] == b["global_step"] > 0
    for key in ("state_dict", "current_model_state"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}: {name}"
    assert any(not torch.equal(a["state_dict"][n], a["current_model_state"][n]) for n in a["state_dict"])
