"""Loss and learning-rate schedule: the paper's formulas, checked against hand computations; the recipe script."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import ROOT, needs_shared
from nmt.tokenizer import PAD_ID
from nmt.training.loss import label_smoothed_nll
from nmt.training.schedule import budget_progress, inverse_sqrt_lr, linear_lr, noam_lr


def test_label_smoothing_equals_nll_at_epsilon_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    target = torch.tensor([[4, 5, PAD_ID], [6, 4, 5]])
    loss, nll, n = label_smoothed_nll(logits, target, 0.0)
    expected = F.cross_entropy(logits.view(-1, 7), target.view(-1), ignore_index=PAD_ID, reduction="sum")
    assert n == 5
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, expected)


def test_label_smoothing_by_hand_on_uniform_logits():
    # Uniform over V=4: every -log p = log 4, so the smoothed loss is log 4 per token for any epsilon.
    logits = torch.zeros(1, 2, 4)
    target = torch.tensor([[1, 2]])
    loss, _, n = label_smoothed_nll(logits, target, 0.1)
    assert loss.item() == pytest.approx(2 * math.log(4), rel=1e-6)
    # A confident correct prediction costs more with smoothing than without.
    logits = torch.tensor([[[0.0, 10.0, 0.0, 0.0]]])
    sharp, _, _ = label_smoothed_nll(logits, torch.tensor([[1]]), 0.1)
    plain, _, _ = label_smoothed_nll(logits, torch.tensor([[1]]), 0.0)
    assert sharp > plain


def test_padding_is_ignored_by_the_loss():
    logits = torch.randn(1, 3, 5)
    a = label_smoothed_nll(logits, torch.tensor([[4, PAD_ID, PAD_ID]]), 0.1)
    b = label_smoothed_nll(logits[:, :1], torch.tensor([[4]]), 0.1)
    torch.testing.assert_close(a[0], b[0])
    assert a[2] == b[2] == 1


def test_noam_schedule_peaks_at_warmup():
    lrs = [noam_lr(s, d_model=512, warmup_steps=4000) for s in range(1, 20001)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == 4000
    assert lrs[3999] == pytest.approx(512**-0.5 * 4000**-0.5)
    assert noam_lr(2000, d_model=512, warmup_steps=4000) == pytest.approx(lrs[3999] / 2)  # linear rise
    assert noam_lr(16000, d_model=512, warmup_steps=4000) == pytest.approx(lrs[3999] / 2)  # 1/sqrt decay


def test_inverse_sqrt_schedule_reaches_peak_lr_at_warmup():
    assert inverse_sqrt_lr(100, peak_lr=1e-3, warmup_steps=400) == pytest.approx(2.5e-4)
    assert inverse_sqrt_lr(400, peak_lr=1e-3, warmup_steps=400) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(1600, peak_lr=1e-3, warmup_steps=400) == pytest.approx(5e-4)


def test_linear_schedule_over_the_budget_by_hand():
    # warm-up over the first 20% of the budget, then down to 0 at its end
    assert linear_lr(0.1, peak_lr=1e-3, warmup_fraction=0.2) == pytest.approx(5e-4)
    assert linear_lr(0.2, peak_lr=1e-3, warmup_fraction=0.2) == pytest.approx(1e-3)
    assert linear_lr(0.6, peak_lr=1e-3, warmup_fraction=0.2) == pytest.approx(5e-4)
    assert linear_lr(1.0, peak_lr=1e-3, warmup_fraction=0.2) == 0.0
    # the budget: whichever of the step and the time limits runs out first
    assert budget_progress(50, 10.0, max_steps=100, max_seconds=None) == 0.5
    assert budget_progress(50, 90.0, max_steps=100, max_seconds=100.0) == 0.9
    assert budget_progress(90, 50.0, max_steps=100, max_seconds=100.0) == 0.9
    assert budget_progress(10, 150.0, max_steps=-1, max_seconds=100.0) == 1.0
    with pytest.raises(ValueError):
        budget_progress(10, 1.0, max_steps=-1, max_seconds=None)


def test_the_linear_schedule_follows_the_runs_clock_under_a_time_limit():
    """With trainer.max_time, the schedule reads training seconds from the run's clock (which
    counts the time before a resume): warm-up over the first 10% of 100 s, then down to 0."""
    from nmt.config import load_config
    from nmt.tokenizer import train_tokenizer
    from nmt.training.module import TranslationModule

    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml",
                      ["optim.lr_schedule=linear", "optim.peak_lr=0.002", "optim.warmup_fraction=0.1",
                       "trainer.max_steps=-1", "trainer.max_time=00:00:01:40"])
    tokenizer = train_tokenizer(["a b c d e f g h i j"] * 20, ["a b c d e f g h i j"] * 20, cfg.tokenizer)
    module = TranslationModule(cfg=cfg, tokenizer=tokenizer)
    now = [0.0]
    module.clock = lambda: now[0]
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for t in (5.0, 10.0, 55.0, 100.0, 130.0):
        now[0] = t
        scheduler.optimizer.step()  # (no gradients: nothing moves)
        scheduler.step()
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3, 2e-3, 1e-3, 0.0, 0.0])


def test_a_time_budgeted_run_warms_up_and_decays_to_zero_on_its_clock(tmp_path):
    """nmt-train with optim.lr_schedule linear and only a time limit: the logged lr rises to near
    the peak and falls to near 0 by the end, on the run's own clock (no step limit to go by)."""
    import csv

    from nmt.config import load_config
    from nmt.training.run import train

    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml",
                      ["optim.lr_schedule=linear", "optim.peak_lr=0.002", "optim.warmup_fraction=0.3",
                       "trainer.max_steps=-1", "trainer.max_time=00:00:00:06", "trainer.val_check_interval=100000",
                       "trainer.log_every_n_steps=1", "data.limit_train=500"])
    run = train(cfg, tmp_path / "run", test=False)
    with open(run.run_dir / "logs" / "metrics.csv", encoding="utf-8") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f) if row.get("lr")]
    assert len(lrs) >= 20 and max(lrs) > 0.0015 and lrs[-1] < 0.0005
    peak = lrs.index(max(lrs))
    assert 0.1 < peak / len(lrs) < 0.6  # (steps are not evenly spread in time: roughly the warm-up's 30%)


def test_validation_bleu_uses_the_first_pairs_in_file_order_not_the_shortest():
    """Validation batches come shortest first; BLEU must still be computed on validation pairs
    0..N-1 of the file, whatever batch they land in."""
    from nmt.config import load_config
    from nmt.tokenizer import train_tokenizer
    from nmt.training.module import TranslationModule

    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml", ["trainer.val_bleu_sentences=3"])
    tokenizer = train_tokenizer(["a b c d e f g h i j"] * 20, ["a b c d e f g h i j"] * 20, cfg.tokenizer)
    module = TranslationModule(cfg=cfg, tokenizer=tokenizer)
    module.on_validation_epoch_start()
    batches = [([7, 1], ["ref7", "ref1"]), ([0, 9, 2], ["ref0", "ref9", "ref2"]), ([5], ["ref5"])]
    for index, refs in batches:
        src = torch.randint(4, tokenizer.src_vocab_size, (len(index), 4))
        tgt = torch.randint(4, tokenizer.tgt_vocab_size, (len(index), 3))
        with torch.no_grad():  # as Lightning runs validation
            module.validation_step({"src": src, "tgt_in": tgt, "tgt_out": tgt, "tgt_text": refs, "index": index}, 0)
    assert module._val["refs"] == ["ref1", "ref0", "ref2"]
    assert len(module._val["hyps"]) == 3


def test_smoothed_cross_entropy_gradient_is_p_minus_q():
    """The hand-written backward equals autograd through log_softmax on the written-out formula,
    for the loss, the NLL and both together, in float64."""
    import torch.nn.functional as F

    from nmt.training.loss import _SmoothedCrossEntropy

    torch.manual_seed(0)
    logits = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 2, 3, 4, 5, 6])
    eps = 0.1

    def reference(z):
        lprobs = F.log_softmax(z, dim=-1)
        nll = -lprobs.gather(-1, target[:, None])[:, 0]
        return (1 - eps) * nll - eps * lprobs.mean(-1), nll

    for weights in ((1.0, 0.0), (0.0, 1.0), (0.7, 0.3)):
        mine = _SmoothedCrossEntropy.apply(logits, target, eps)
        theirs = reference(logits)
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b)
        (g_mine,) = torch.autograd.grad(weights[0] * mine[0].sum() + weights[1] * mine[1].sum(), logits)
        (g_ref,) = torch.autograd.grad(weights[0] * theirs[0].sum() + weights[1] * theirs[1].sum(), logits)
        torch.testing.assert_close(g_mine, g_ref)
    assert torch.autograd.gradcheck(lambda z: _SmoothedCrossEntropy.apply(z, target, eps)[0], (logits,))


def test_bf16_mixed_training_on_the_cpu_multiplies_in_bfloat16_and_keeps_float32_weights(tmp_path):
    """trainer.precision=bf16-mixed on the CPU (1.4x the recipe's tokens/s where the CPU has
    bfloat16 instructions, docs/results.md): the linear layers compute in bfloat16 during training
    steps, the loss still falls, and the checkpoint holds float32 weights (the master copy autocast keeps)."""
    import csv

    from lightning.pytorch.callbacks import Callback

    from nmt.checkpoint import read_stored_model
    from nmt.config import load_config
    from nmt.training.run import train

    from tests.conftest import ROOT

    class LinearDtypes(Callback):
        def __init__(self) -> None:
            self.seen: set[torch.dtype] = set()

        def on_fit_start(self, trainer, pl_module) -> None:
            linear = next(m for m in pl_module.model.modules() if isinstance(m, torch.nn.Linear))
            linear.register_forward_hook(lambda mod, args, out: self.seen.add(out.dtype) if mod.training else None)

    dtypes = LinearDtypes()
    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml",
                      ["trainer.precision=bf16-mixed", "trainer.max_steps=40", "trainer.val_check_interval=40",
                       "trainer.val_bleu_sentences=20", "trainer.log_every_n_steps=1", "data.limit_train=2000"])
    run = train(cfg, tmp_path / "run", test=False, callbacks=[dtypes])
    assert dtypes.seen == {torch.bfloat16}
    with open(run.run_dir / "logs" / "metrics.csv", encoding="utf-8") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f) if row.get("loss")]
    assert len(losses) >= 30 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    state = read_stored_model(run.run_dir / "checkpoints" / "last.ckpt").state
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_precision_auto_is_bf16_mixed_only_where_the_cpu_has_bfloat16_instructions(tmp_path):
    """trainer.precision=auto (the Tatoeba recipe's): bf16-mixed on a CPU that lists AVX512-BF16 or
    AMX, float32 on one without (bfloat16 would be emulated there) or where the flags are unknown;
    Lightning's own names pass unchanged, and the trainer gets the resolved name."""
    from nmt.config import load_config
    from nmt.training.precision import resolve_precision
    from nmt.training.run import build_trainer

    from tests.conftest import ROOT

    cpus = {"avx512": "fpu sse avx2 avx512f avx512bw", "zen4": "fpu avx512f avx512_bf16", "xeon": "avx512f amx_bf16 amx_tile"}
    for name, flags in cpus.items():
        (tmp_path / name).write_text("".join(f"processor\t: {i}\nflags\t\t: {flags}\n\n" for i in range(2)))
    assert resolve_precision("auto", "cpu", tmp_path / "avx512") == "32-true"
    assert resolve_precision("auto", "cpu", tmp_path / "zen4") == "bf16-mixed"
    assert resolve_precision("auto", "cpu", tmp_path / "xeon") == "bf16-mixed"
    assert resolve_precision("auto", "cpu", tmp_path / "missing") == "32-true"
    assert resolve_precision("32-true", "cpu", tmp_path / "xeon") == "32-true"
    assert resolve_precision("16-mixed", "cpu", tmp_path / "avx512") == "16-mixed"
    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml", ["trainer.precision=auto", "trainer.accelerator=cpu"])
    assert build_trainer(cfg, tmp_path / "run").precision == resolve_precision("auto", "cpu")


def _recipe(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "recipe_tatoeba.sh"), *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=600)


def test_the_recipe_on_other_data_chooses_on_all_its_valid_splits_and_can_stop_before_scoring(tmp_path, parallel_files):
    """scripts/domain_table.sh runs the recipe on other corpora: CONFIG, DEV (several valid splits are
    one development set) and SCORE=0 (stop after the choice, the last line of tuning/choice.log)."""
    needs_shared("tatoeba-cmn", "test.zh")  # the script checks for the recipe's data first
    p = parallel_files
    env = {"CONFIG": str(ROOT / "configs" / "toy_reverse.yaml"), "DEV": f"{p / 'valid'} {p / 'test'}", "SCORE": "0"}
    sets = ["data.source=text", f"data.train={p / 'train'}", f"data.valid={p / 'valid'}", "data.test=null",
            "data.src_lang=zh", "data.tgt_lang=en", "tokenizer.vocab_size=60", "trainer.max_steps=6",
            "trainer.val_check_interval=6", "trainer.save_every_n_steps=2", "trainer.keep_last_checkpoints=8"]
    run_dir = tmp_path / "run"
    proc = _recipe(env, str(run_dir), *(a for s in sets for a in ("--set", s)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    dev = (run_dir / "tuning" / "dev.zh").read_text(encoding="utf-8").splitlines()
    valid = (p / "valid.zh").read_text(encoding="utf-8").splitlines()
    assert dev == valid + (p / "test.zh").read_text(encoding="utf-8").splitlines()
    assert json.loads((run_dir / "tuning" / "tuning.json").read_text(encoding="utf-8"))["sentences"] == len(dev)
    best, alpha = (run_dir / "tuning" / "choice.log").read_text(encoding="utf-8").splitlines()[-1].split()
    assert Path(best).is_file() and float(alpha) >= 0
    assert not (run_dir / "test").exists()  # SCORE=0: neither the Tatoeba test nor WMT22 scored
    # PREFIX=TAG: that split's lines are decoded with the domain tag TAG (this model has none: refused)
    tagged = _recipe({**env, "DEV": f"{p / 'valid'}=X {p / 'test'}"}, str(run_dir))
    domains = (run_dir / "tuning" / "dev.domains").read_text(encoding="utf-8").splitlines()
    assert domains == ["X"] * len(valid) + [""] * (len(dev) - len(valid))
    assert tagged.returncode == 2 and "unknown domain 'X'" in tagged.stderr and "Traceback" not in tagged.stderr

    bad = _recipe({**env, "DEV": f"{p / 'valid'} {p / 'missing'}"}, str(tmp_path / "bad"))
    assert bad.returncode == 2 and f"DEV: no {p / 'missing'}.zh" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before training
