"""Bad input, crashes and resumes, safe loading, reproducibility (docs/reliability.md).

Bad input goes through the console scripts' `main` in this process (fast) and must end in one
stderr line that names the problem, exit code 2 and no traceback. Kills use real subprocesses.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.checkpoint import CheckpointError, load_model
from nmt.training.checkpoint_io import AtomicCheckpointIO
from nmt.cli import evaluate as evaluate_cli
from nmt.cli import train as train_cli
from nmt.cli import translate as translate_cli
from nmt.config import load_config
from nmt.data import load_raw
from nmt.decoding.options import DecodingOptions
from nmt.training.run import train
from nmt.api import Translator
from nmt.translator import TorchEngine

from tests.conftest import ROOT

TOY = str(ROOT / "configs" / "toy_reverse.yaml")
QUICK = ["trainer.val_check_interval=20", "trainer.log_every_n_steps=1", "trainer.val_bleu_sentences=20",
         "data.limit_train=2000"]


def call(capsys, monkeypatch, main, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """Run a console script's main(argv) here; stdin from bytes. -> (exit code, stdout, stderr)"""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert pattern in lines[0], lines[0]


# -- bad input, one line each -------------------------------------------------------------------

@dataclass
class Ctx:
    tmp: Path
    ckpt: Path

    def file(self, name: str, content: bytes) -> str:
        (self.tmp / name).write_bytes(content)
        return str(self.tmp / name)

    def pair(self, zh: bytes, en: bytes, name: str = "train") -> str:
        (self.tmp / f"{name}.zh").write_bytes(zh)
        (self.tmp / f"{name}.en").write_bytes(en)
        return str(self.tmp / name)

    def text_data(self, prefix: str) -> list[str]:
        return ["--set", "data.source=text", "--set", f"data.train={prefix}", "--set", "data.src_lang=zh",
                "--set", "data.tgt_lang=en", "--set", f"data.valid={prefix}", "--set", "data.test=null"]

    def modified_ckpt(self, change) -> str:
        ckpt = torch.load(self.ckpt, weights_only=True)
        change(ckpt)
        path = self.tmp / "changed.ckpt"
        torch.save(ckpt, path)
        return str(path)


def _damage(blob: bytes) -> bytes:
    """Overwrite the middle of a checkpoint: still a zip archive, but its contents are corrupt."""
    middle = len(blob) // 2
    return blob[:middle] + b"\0" * 4096 + blob[middle + 4096 :]


def _future_config(ckpt: dict) -> None:
    ckpt["nmt"]["config"]["model"]["mixture_of_experts"] = 8


TRAIN_CASES = {  # name: (argv after the config, expected part of the message)
    "line counts differ": (lambda c: c.text_data(c.pair("一\n二\n".encode(), b"one\n")), "has 2 lines but"),
    "missing file": (lambda c: c.text_data(str(c.tmp / "nothing")), "file not found"),
    "empty files": (lambda c: c.text_data(c.pair(b"", b"")), "train.zh is empty"),
    "invalid UTF-8": (lambda c: c.text_data(c.pair(b"\xe4\xb8\x80\n\xff\xfe\n", b"one\ntwo\n")), "train.zh:2: invalid UTF-8"),
    "whitespace-only lines": (lambda c: c.text_data(c.pair(b"  \n\t\n", b" \n \n")),
                              "no text to train the tokenizer on: every training line is empty or whitespace"),
    "missing field": (lambda c: ["--set", "data.source=jsonl", "--set", "data.src_field=chinese", "--set", "data.test=null",
                                 "--set", "data.train=" + c.file("train.jsonl", '{"zh": "你好", "en": "hi"}\n'.encode()),
                                 "--set", f"data.valid={c.tmp / 'train.jsonl'}"],
                      "data.src_field 'chinese' not found (fields: zh, en)"),
    "unknown config key": (lambda c: ["--set", "model.colour=red"], "unknown key 'model.colour'"),
    "wrong type": (lambda c: ["--set", "trainer.max_steps=many"], "trainer.max_steps: expected int"),
    "impossible value": (lambda c: ["--set", "model.dropout=1.5"], "model.dropout must be in [0, 1)"),
    "not a choice": (lambda c: ["--set", "model.type=lstm"], "model.type: 'lstm' is not one of transformer, rnn"),
    "missing device": (lambda c: ["--set", "trainer.accelerator=gpu"],
                       "trainer.accelerator=gpu, devices=auto, strategy=auto, precision=32-true: No supported gpu backend"),
    "unwritable output": (lambda c: ["--output-dir", c.file("afile", b"x") + "/run"], "is not writable"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_nmt_train_bad_input_is_one_line(case, tmp_path, capsys, monkeypatch):
    build, message = TRAIN_CASES[case]
    argv = [TOY, "--output-dir", str(tmp_path / "run"), *build(Ctx(tmp_path, Path("unused")))]
    code, _, err = call(capsys, monkeypatch, train_cli.main, argv)
    assert_one_line(code, err, message)


def test_nmt_train_checks_free_disk_space_before_training(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    code, _, err = call(capsys, monkeypatch, train_cli.main, [TOY, "--output-dir", str(tmp_path / "run")])
    assert_one_line(code, err, "not enough free disk space")


TRANSLATE_CASES = {  # name: (argv, stdin, expected part of the message)
    "checkpoint missing": (lambda c: ["--checkpoint", str(c.tmp / "no.ckpt")], b"a\n", "checkpoint not found"),
    "checkpoint empty": (lambda c: ["--checkpoint", c.file("e.ckpt", b"")], b"a\n", "e.ckpt: not a readable checkpoint"),
    "not a checkpoint": (lambda c: ["--checkpoint", c.file("t.ckpt", b"hello")], b"a\n",
                         "t.ckpt: not a readable checkpoint (not a PyTorch zip archive"),
    "checkpoint truncated": (lambda c: ["--checkpoint", c.file("cut.ckpt", c.ckpt.read_bytes()[:50_000])], b"a\n",
                             "cut.ckpt: not a readable checkpoint (not a PyTorch zip archive: empty, truncated"),
    "checkpoint damaged inside": (lambda c: ["--checkpoint", c.file("bad.ckpt", _damage(c.ckpt.read_bytes()))], b"a\n",
                                  "bad.ckpt: not a readable checkpoint"),
    "other language pair": (lambda c: ["--checkpoint", str(c.ckpt), "--src", "zh", "--tgt", "en"], b"a\n",
                            "translates xx->yy, not zh->en"),
    "incompatible format": (lambda c: ["--checkpoint", c.modified_ckpt(lambda k: k["nmt"].update(format=99))], b"a\n",
                            "checkpoint format 99 is not the format this version of nmt reads (1)"),
    "config of a newer version": (lambda c: ["--checkpoint", c.modified_ckpt(_future_config)], b"a\n",
                                  "stored config is incompatible with this version"),
    "Lightning checkpoint, not nmt": (lambda c: ["--checkpoint", c.modified_ckpt(lambda k: k.pop("nmt"))], b"a\n",
                                      "not an nmt checkpoint"),
    "beam size 0": (lambda c: ["--checkpoint", str(c.ckpt), "--beam-size", "0"], b"a\n",
                    "--beam-size: beam_size must be >= 1, got 0"),
    "n-best above beam": (lambda c: ["--checkpoint", str(c.ckpt), "--beam-size", "2", "--n-best", "3"], b"a\n",
                          "--n-best: n_best (3) cannot exceed beam_size (2)"),
    "negative length": (lambda c: ["--checkpoint", str(c.ckpt), "--max-len-a", "-1"], b"a\n",
                        "--max-len-a: max_len_a must be >= 0 and <= 100, got -1.0"),
    "negative min length": (lambda c: ["--checkpoint", str(c.ckpt), "--min-len", "-2"], b"a\n",
                            "--min-len: min_len must be >= 0 and <= 10000, got -2"),
    "nucleus above 1": (lambda c: ["--checkpoint", str(c.ckpt), "--sampling", "--top-p", "1.5"], b"a\n",
                        "--top-p: top_p must be > 0 and <= 1, got 1.5"),
    "missing device": (lambda c: ["--checkpoint", str(c.ckpt), "--device", "cuda:3"], b"a\n", "--device cuda:3: no such CUDA device"),
    "unknown device": (lambda c: ["--checkpoint", str(c.ckpt), "--device", "banana"], b"a\n", "--device banana: not a device"),
    "missing input": (lambda c: ["--checkpoint", str(c.ckpt), "-i", str(c.tmp / "none.txt")], b"", "cannot read"),
    "invalid UTF-8 input": (lambda c: ["--checkpoint", str(c.ckpt)], b"a b\n\xc3\x28\n", "<stdin>:2: invalid UTF-8"),
}


@pytest.mark.parametrize("case", list(TRANSLATE_CASES))
def test_nmt_translate_bad_input_is_one_line(case, toy_ckpt, tmp_path, capsys, monkeypatch):
    build, stdin, message = TRANSLATE_CASES[case]
    argv = build(Ctx(tmp_path, toy_ckpt))
    if "--src" not in argv:
        argv += ["--src", "xx", "--tgt", "yy"]
    code, _, err = call(capsys, monkeypatch, translate_cli.main, argv, stdin)
    assert_one_line(code, err, message)


@pytest.mark.parametrize("hyp, ref, message", [
    ("a\n", "a\nb\n", "hyp.txt has 1 lines but"),
    ("a\n", None, "file not found"),
    ("\xff", "a\n", "invalid UTF-8"),
])
def test_nmt_evaluate_bad_input_is_one_line(hyp, ref, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "hyp.txt").write_bytes(hyp.encode("latin-1"))
    if ref is not None:
        (tmp_path / "ref.txt").write_text(ref, encoding="utf-8")
    argv = ["--hyp", str(tmp_path / "hyp.txt"), "--ref-file", str(tmp_path / "ref.txt"), "--output-dir", str(tmp_path / "e")]
    code, _, err = call(capsys, monkeypatch, evaluate_cli.main, argv)
    assert_one_line(code, err, message)


def test_invalid_utf8_lines_can_be_skipped_and_are_counted(toy_ckpt, tmp_path, capsys, monkeypatch):
    code, out, err = call(capsys, monkeypatch, translate_cli.main,
                          ["--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "--skip-invalid-utf8",
                           "--beam-size", "1"], b"a b c\n\xff\nd e\n")
    assert code == 0, err
    assert out.split("\n")[1] == "" and len(out.split("\n")) == 4  # 3 lines, the bad one empty
    assert "<stdin>:2: invalid UTF-8, empty output line" in err
    prefix = Ctx(tmp_path, toy_ckpt).pair("一\n二\n三\n".encode() + b"\xff\n", b"one\n\xfe\nthree\nfour\n")
    cfg = load_config(TOY, ["data.source=text", f"data.train={prefix}", "data.src_lang=zh", "data.tgt_lang=en",
                            "data.skip_invalid_utf8=true"])
    rows = load_raw(cfg.data, "train")
    assert list(rows["src"]) == ["一", "三"] and list(rows["tgt"]) == ["one", "three"]
    assert "skipped 2 line pair(s) with invalid UTF-8" in capsys.readouterr().err


# -- fuzzing the text path ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_model(toy_ckpt):
    return load_model(toy_ckpt)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_unicode_gives_exactly_one_output_line_per_input_line(text, toy_model, tmp_path, capsys, monkeypatch):
    """Whatever the text (control characters, \\r, U+2028, emoji, combining marks...), the
    output has one line per input line, as `nmt-translate` reads them (split on \\n only)."""
    data = text.encode("utf-8")
    monkeypatch.setattr("nmt.checkpoint.load_model", lambda path, device="cpu": toy_model)
    code, out, err = call(capsys, monkeypatch, translate_cli.main,
                          ["--checkpoint", "toy", "--src", "xx", "--tgt", "yy", "--beam-size", "2",
                           "--max-len-a", "0", "--max-len-b", "4"], data)
    assert code == 0, err
    n_in = len(io.BytesIO(data).readlines())
    assert out.count("\n") == n_in and (out == "" or out.endswith("\n"))


# -- nothing is lost ----------------------------------------------------------------------------

def _losses(run_dir: Path) -> dict[int, float]:
    import csv

    with open(run_dir / "logs" / "metrics.csv", encoding="utf-8") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")}


# A checkpoint write that lingers between the temporary file and the rename, so a kill can land
# inside it; everything else is nmt-train's own main.
SLOW_WRITE = """
import sys, time, torch
real = torch.save
def slow(obj, f, *args, **kwargs):
    real(obj, f, *args, **kwargs)
    if isinstance(obj, dict) and "global_step" in obj:
        time.sleep(2)
torch.save = slow
from nmt.cli import train
sys.exit(train.main(sys.argv[1:]))
"""


def _weights(path: Path) -> dict:
    ckpt = torch.load(path, weights_only=True)
    return {"step": ckpt["global_step"], **ckpt["state_dict"]}


@pytest.mark.slow  # about 2 minutes: 5 real runs; CI runs the slow tests too (.ci/run)
def test_sigkill_at_random_moments_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """Kill a real nmt-train (SIGKILL: no handler runs) three times, at moments drawn at random:
    before its first validation (only the periodic last.ckpt exists), mid-epoch, and inside a
    checkpoint write (the temporary file on disk). Each time --resume continues; the final weights
    equal those of an uninterrupted run (dropout on: the random state resumes too)."""
    seed = int(os.environ.get("NMT_KILL_SEED", time.time_ns() % 10_000))  # printed on failure: rerun with it
    rng = random.Random(seed)
    settings_ = ["trainer.max_steps=100", "trainer.val_check_interval=40", "trainer.log_every_n_steps=1",
                 "trainer.val_bleu_sentences=20", "data.limit_train=2000", "model.dropout=0.1",
                 "trainer.checkpoint_every=00:00:00:01"]
    args = ["--no-test", *[a for kv in settings_ for a in ("--set", kv)]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run([sys.executable, "-m", "nmt.cli.train", TOY, "--output-dir", str(straight), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpts, last = killed / "checkpoints", killed / "checkpoints" / "last.ckpt"

    def start(resume: bool, script: list[str]) -> subprocess.Popen:
        return subprocess.Popen([*script, TOY, "--output-dir", str(killed), *args, *(["--resume"] if resume else [])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def kill_when(proc: subprocess.Popen, ready, delay: float = 0.0) -> None:
        deadline = time.monotonic() + 300
        while not ready() and time.monotonic() < deadline:
            assert proc.poll() is None, f"seed {seed}: the run ended before the kill: {proc.stderr.read()[-2000:]}"
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, f"seed {seed}: the run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL

    def step() -> int:
        return torch.load(last, weights_only=True)["global_step"]

    plain = [sys.executable, "-m", "nmt.cli.train"]
    # 1. before the first validation: a periodic last.ckpt, no best-*.ckpt yet
    proc = start(False, plain)
    kill_when(proc, lambda: last.is_file())
    assert not list(ckpts.glob("best-*.ckpt")) and 0 < step() < 40, f"seed {seed}"
    # 2. mid-epoch, a random moment after the resumed run's first new checkpoint
    first = step()
    proc = start(True, plain)
    kill_when(proc, lambda: step() > first, delay=rng.uniform(0.0, 1.0))
    # 3. inside a checkpoint write: the temporary file exists, the rename has not happened
    proc = start(True, [sys.executable, "-c", SLOW_WRITE])
    kill_when(proc, lambda: bool(list(ckpts.glob(".*.tmp*"))))
    assert list(ckpts.glob(".*.tmp*")), f"seed {seed}"
    resumed = subprocess.run([*plain, TOY, "--output-dir", str(killed), *args, "--resume"], capture_output=True,
                             text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(ckpts.glob(".*tmp*")), f"seed {seed}: a temporary checkpoint file was left behind"
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(p.name for p in (straight / "checkpoints").iterdir()), \
        f"seed {seed}"  # rerun with NMT_KILL_SEED
    a, b = _weights(straight / "checkpoints" / "last.ckpt"), _weights(last)
    assert a["step"] == b["step"] == 100
    for name in a:
        assert torch.allclose(torch.as_tensor(a[name]), torch.as_tensor(b[name]), rtol=1e-4, atol=1e-6), \
            f"seed {seed}: {name} differs from the uninterrupted run"


class _Killed(BaseException):
    """Stands in for a SIGKILL in this process: no handler of nmt's catches it."""


def test_a_run_killed_in_a_validation_resumes_to_redo_that_validation(tmp_path, monkeypatch):
    """Lightning resumes from a checkpoint written at the end of a batch as if that batch's
    validation had already run, so last.ckpt must never be written between a batch and its
    validation. Here a save is due after every batch (a clock that jumps 10 s per reading) and
    the run dies inside the validation at step 20: resumed, it validates at step 20 again and
    ends with the checkpoints and weights of an uninterrupted run."""
    from nmt.training import module, run

    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(run.LastCheckpoint, "elapsed", lambda self: float(next(clock)))
    base = [TOY, "--no-test", "--set", "model.dropout=0.1", "--set", "trainer.max_steps=30",
            "--set", "trainer.checkpoint_every=00:00:00:01", *[a for kv in QUICK for a in ("--set", kv)]]
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "straight")]) == 0
    validation_step = module.TranslationModule.validation_step

    def dies_at_step_20(self, batch, batch_idx):
        if self.trainer.global_step == 20:
            raise _Killed()
        return validation_step(self, batch, batch_idx)

    monkeypatch.setattr(module.TranslationModule, "validation_step", dies_at_step_20)
    with pytest.raises(_Killed):
        train_cli.main([*base, "--output-dir", str(tmp_path / "killed")])
    ckpts = tmp_path / "killed" / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 19  # the save at 20 waited
    monkeypatch.setattr(module.TranslationModule, "validation_step", validation_step)
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "killed"), "--resume"]) == 0
    names = sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir())
    assert names[0].startswith("best-step20-") and sorted(p.name for p in ckpts.iterdir()) == names
    a, b = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"), _weights(ckpts / "last.ckpt")
    assert a["step"] == b["step"] == 30
    for name in a:
        assert torch.equal(torch.as_tensor(a[name]), torch.as_tensor(b[name])), name


def test_a_run_stopped_at_two_epoch_ends_resumes_to_the_same_weights(tmp_path):
    """A checkpoint written at the last batch of an epoch (here by trainer.max_epochs=1, then 2)
    resumes with the batches and dropout masks of an uninterrupted run, twice in a row. The next
    epoch's loader must not draw from the random state that LastCheckpoint restores (without its
    own generator it does, before the restore), and the resumed run must count the epoch it
    starts (Lightning does not: the second resume then replayed the second epoch's batches)."""
    base = [TOY, "--no-test", "--set", "model.dropout=0.1", "--set", "trainer.max_steps=-1",
            *[a for kv in QUICK for a in ("--set", kv)]]
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "straight"), "--set", "trainer.max_epochs=3"]) == 0
    assert train_cli.main([*base, "--output-dir", str(tmp_path / "split"), "--set", "trainer.max_epochs=1"]) == 0
    for epochs in (2, 3):
        assert train_cli.main([*base, "--output-dir", str(tmp_path / "split"), "--set", f"trainer.max_epochs={epochs}",
                               "--resume"]) == 0
    a, b = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"), _weights(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert a["step"] == b["step"] > 0
    for name in a:
        assert torch.equal(torch.as_tensor(a[name]), torch.as_tensor(b[name])), name


def _terminal_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    """SIGINT (Ctrl-C) while training: exit code 130 and `nmt-train: interrupted`, no traceback
    (Lightning itself would exit with 1)."""
    # The child starts with Ctrl-C as a terminal gives it (SIGINT unblocked, default disposition),
    # whatever the test process has: in two full-suite runs the child ignored SIGINT for 120 s,
    # while the test alone passed; a child inherits a blocked mask and an ignored SIGINT.
    proc = subprocess.Popen([sys.executable, "-m", "nmt.cli.train", TOY, "--output-dir", str(tmp_path / "run"),
                             "--no-test", "--set", "trainer.max_steps=100000", "--set", "trainer.log_every_n_steps=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_terminal_sigint)
    for line in proc.stdout:  # the first step's log line: training has begun
        if line.startswith("step "):
            break
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # a child that ignored the signal must not train on through the rest of the suite
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "nmt-train: interrupted", err[-2000:]


def test_training_time_before_a_resume_counts_towards_max_time(tmp_path):
    """The elapsed training time is stored in last.ckpt and restored: a run stopped by
    trainer.max_time (6 s) and resumed with the same limit stops after one more step (without the
    restore it would train for another 6 s, dozens of toy steps)."""
    run_dir = tmp_path / "run"
    quick = [a for kv in QUICK for a in ("--set", kv)]
    limit = ["--set", "trainer.max_steps=100000", "--set", "trainer.max_time=00:00:00:06"]
    assert train_cli.main([TOY, "--output-dir", str(run_dir), "--no-test", *limit, *quick]) == 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    elapsed = next(v["elapsed"] for k, v in ckpt["callbacks"].items() if k.startswith("LastCheckpoint"))
    assert elapsed >= 6.0
    assert train_cli.main([TOY, "--output-dir", str(run_dir), "--no-test", "--resume", *limit, *quick]) == 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == ckpt["global_step"] + 1


def test_a_run_saved_before_a_key_existed_resumes_with_its_default():
    """A config.yaml written by an older toolkit lacks the keys added since: it resumes when the
    new key keeps its default, and a changed value is refused naming the default the run had."""
    from nmt.config import ExperimentConfig
    from nmt.training.run import RunError, _check_same_experiment

    new = ExperimentConfig().to_dict()
    old = ExperimentConfig().to_dict()
    del old["tokenizer"]["sampling_alpha"]  # as in a run saved before subword sampling existed
    _check_same_experiment(old, new, Path("run/config.yaml"))
    new["tokenizer"]["sampling_alpha"] = 0.3
    with pytest.raises(RunError, match=r"tokenizer.sampling_alpha is 0.3 but the run in run used 0.0;"):
        _check_same_experiment(old, new, Path("run/config.yaml"))


def test_a_run_directory_is_resumed_or_overwritten_never_mixed(tmp_path, capsys, monkeypatch):
    """A directory that holds only weights-only step checkpoints (killed before last.ckpt) cannot be
    resumed and is not silently trained into again; --overwrite starts afresh, leaving no file of
    the old run (no step10-v1.ckpt beside step10.ckpt), and one resumable last.ckpt."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, run_dir / "checkpoints" / "step10.ckpt")
    (run_dir / "keep.txt").write_text("the user's own file")
    base = [TOY, "--output-dir", str(run_dir), "--no-test", "--set", "trainer.max_steps=20", "--set",
            "trainer.save_every_n_steps=10", *[a for kv in QUICK for a in ("--set", kv)]]
    code, _, err = call(capsys, monkeypatch, train_cli.main, base)
    assert_one_line(code, err, "already holds a run (checkpoints/): pass --resume to continue it, --overwrite")
    code, _, err = call(capsys, monkeypatch, train_cli.main, [*base, "--resume"])
    assert_one_line(code, err, "step10.ckpt hold weights only; start again with --overwrite")
    code, _, err = call(capsys, monkeypatch, train_cli.main, [*base, "--overwrite"])
    assert code == 0, err
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best-step20-bleu%.2f.ckpt" % _best_bleu(run_dir), "last.ckpt", "step10.ckpt", "step20.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "step10.ckpt", weights_only=True).get("global_step") == 10
    assert (run_dir / "keep.txt").read_text() == "the user's own file"


def _best_bleu(run_dir: Path) -> float:
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    return float(best.stem.rsplit("bleu", 1)[1])


def test_a_log_file_gets_plain_lines_not_bar_redraws(tmp_path):
    """Output to a file: no carriage returns, no line longer than a few hundred characters, one
    line per log interval with loss, lr, tokens/s and elapsed time, and none of Lightning's
    start-up noise."""
    log = tmp_path / "train.log"
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "nmt.cli.train", TOY, "--output-dir", str(tmp_path / "run"),
                               "--no-test", "--set", "trainer.max_steps=40", "--set", "trainer.log_every_n_steps=10",
                               "--set", "trainer.val_check_interval=20", "--set", "trainer.val_bleu_sentences=20",
                               "--set", "data.limit_train=2000"],
                              stdout=f, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items() if k != "CI"})
    text = log.read_text(encoding="utf-8")
    assert done.returncode == 0, text[-2000:]
    assert "\r" not in text
    assert max(len(line) for line in text.splitlines()) <= 300
    steps = [line for line in text.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["10/40", "20/40", "30/40", "40/40"]
    assert all(k in steps[-1] for k in ("loss ", "lr ", "tok/s ", "elapsed "))
    assert sum(line.startswith("validation at step ") for line in text.splitlines()) == 2
    for noise in ("GPU available", "TPU available", "Tip:", "weights_only", "Trainer.fit"):
        assert noise not in text, noise


def test_no_script_tees_into_dev_stderr_which_truncates_a_redirected_log():
    """`cmd | tee /dev/stderr` reopens the file that stderr points to: with `script > run.log 2>&1`
    that truncates run.log, and the shell then writes on at its old offset behind a hole of NUL
    bytes (the recipe's log had a 562,404-byte "line" before "test split:"). Tee to a file instead."""
    scripts = [*ROOT.glob("scripts/**/*.sh"), ROOT / ".ci" / "run"]
    assert len(scripts) > 3
    for path in scripts:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"tee\s+(-a\s+)?/dev/(stderr|stdout|fd/[12])\b", code), f"{path}:{n}: {line.strip()}"


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io_plugin, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io_plugin.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint there is unchanged"):
        io_plugin.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_disk_full_during_training_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_save = torch.save

    def save_until_step_20(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step", 0) > 20:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_step_20)
    code, _, err = call(capsys, monkeypatch, train_cli.main,
                        [TOY, "--output-dir", str(tmp_path / "run"), "--no-test", "--set", "trainer.max_steps=25",
                         *[a for kv in QUICK for a in ("--set", kv)]])
    assert_one_line(code, err, "No space left on device; the previous checkpoint there is unchanged")
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20


def test_translate_reads_and_writes_in_chunks(toy_ckpt, tmp_path, capsys, monkeypatch):
    """Bounded memory on huge files: input is read, translated and written chunk by chunk."""
    import nmt.api

    seen, real = [], nmt.api.Translator.translate

    def spy(self, lines, *args, **kwargs):
        seen.append((len(lines), (tmp_path / "out.txt").stat().st_size))
        return real(self, lines, *args, **kwargs)

    monkeypatch.setattr(nmt.api, "CHUNK_LINES", 3)
    monkeypatch.setattr(nmt.api.Translator, "translate", spy)
    (tmp_path / "in.txt").write_text("a b\n" * 10, encoding="utf-8")
    code, _, err = call(capsys, monkeypatch, translate_cli.main,
                        ["--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "-i", str(tmp_path / "in.txt"),
                         "-o", str(tmp_path / "out.txt"), "--beam-size", "1"])
    assert code == 0, err
    assert [n for n, _ in seen] == [3, 3, 3, 1]
    assert [size > 0 for _, size in seen] == [False, True, True, True]  # earlier chunks already written
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").count("\n") == 10


class _ExplodingLoss:
    """Replaces the loss: NaN at the given steps (by call count), the real loss otherwise."""

    def __init__(self, real, bad_steps):
        self.real, self.bad, self.calls = real, bad_steps, 0

    def __call__(self, logits, target, epsilon):
        loss_sum, nll_sum, n = self.real(logits, target, epsilon)
        self.calls += torch.is_grad_enabled()  # counts training steps only
        if not torch.is_grad_enabled() or self.calls not in self.bad:  # validation (no_grad) untouched
            return loss_sum, nll_sum, n
        return loss_sum * float("nan"), nll_sum, n


def test_non_finite_losses_are_skipped_and_counted(tmp_path, monkeypatch):
    import nmt.training.module as module

    exploding = _ExplodingLoss(module.label_smoothed_nll, bad_steps={5, 6, 7})
    monkeypatch.setattr(module, "label_smoothed_nll", exploding)
    cfg = load_config(TOY, [*QUICK, "trainer.max_steps=15", "trainer.val_check_interval=15"])
    result = train(cfg, tmp_path / "run", test=False)
    assert result.skipped_steps == 3
    loaded = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


def test_too_many_non_finite_losses_stop_with_a_usable_checkpoint(tmp_path, capsys, monkeypatch):
    import nmt.training.module as module

    exploding = _ExplodingLoss(module.label_smoothed_nll, bad_steps=set(range(8, 1000)))
    monkeypatch.setattr(module, "label_smoothed_nll", exploding)
    code, _, err = call(capsys, monkeypatch, train_cli.main,
                        [TOY, "--output-dir", str(tmp_path / "run"), "--set", "trainer.max_steps=100",
                         "--set", "trainer.max_nonfinite_steps=4", *[a for kv in QUICK for a in ("--set", kv)]])
    assert_one_line(code, err, "training stopped at step 10: 4 non-finite losses in a row")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 11  # 7 good steps + 4 skipped (a skipped step still counts as a step)
    loaded = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
    (translation,) = Translator(TorchEngine(loaded)).translate(["a b c"], beam_size=1)
    assert isinstance(translation.text, str)


def test_an_out_of_memory_batch_is_split_and_retried(toy_model, capsys):
    sentences = ["a b c", "d e f g", "h i", "j a b", "c d e f g h", "i j"]
    expected = [t.text for t in Translator(TorchEngine(toy_model)).translate(sentences, DecodingOptions(beam_size=3))]
    real_encode, calls = toy_model.model.encode, []

    def encode_small_batches_only(src, src_mask):
        calls.append(src.size(0))
        if src.size(0) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_encode(src, src_mask)

    toy_model.model.encode = encode_small_batches_only
    try:
        got = [t.text for t in Translator(TorchEngine(toy_model)).translate(sentences, DecodingOptions(beam_size=3))]
    finally:
        del toy_model.model.encode
    assert got == expected
    assert calls == [6, 3, 1, 2, 3, 1, 2]  # 6 fails -> 3 + 3; each 3 fails -> 1 + 2
    assert "out of memory on a batch of 6 sentences; splitting it" in capsys.readouterr().err


# -- safe loading -------------------------------------------------------------------------------

class _Payload:
    """Unpickling this would create a file: the code a malicious checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_a_pickled_payload_is_refused_without_running_it(toy_ckpt, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.ckpt"
    ckpt = torch.load(toy_ckpt, weights_only=True)
    ckpt["nmt"]["config"] = _Payload(marker)
    torch.save(ckpt, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(evil)
    code, _, err = call(capsys, monkeypatch, translate_cli.main,
                        ["--checkpoint", str(evil), "--src", "xx", "--tgt", "yy"], b"a\n")
    assert_one_line(code, err, "refused to load (not plain data")
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: unsafe loading runs it
    assert marker.exists()


# -- reproducibility ----------------------------------------------------------------------------

def test_same_seed_gives_identical_losses_and_the_run_records_its_provenance(tmp_path):
    overrides = [*QUICK, "trainer.max_steps=12", "trainer.val_check_interval=12", "model.dropout=0.1"]
    runs = {name: train(load_config(TOY, [*overrides, f"trainer.seed={seed}"]), tmp_path / name, test=False)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))}
    a, b, c = (_losses(runs[name].run_dir) for name in "abc")
    assert len(a) == 12 and a == b  # bit-identical on the same machine
    assert a != c  # the seed matters (dropout, initialisation, batch order)
    (record,) = json.loads((tmp_path / "a" / "environment.json").read_text(encoding="utf-8"))
    assert record["seed"] == 7 and record["resume"] is False
    assert record["versions"]["torch"] == metadata.version("torch")
    assert set(record["versions"]) >= {"nmt", "torch", "lightning", "sentencepiece", "sacrebleu", "datasets", "python"}
    assert "git_commit" in record


def test_evaluation_reports_record_versions_and_commit(tmp_path, capsys, monkeypatch):
    (tmp_path / "hyp.txt").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("the cat\n", encoding="utf-8")
    code, _, err = call(capsys, monkeypatch, evaluate_cli.main,
                        ["--hyp", str(tmp_path / "hyp.txt"), "--ref-file", str(tmp_path / "ref.txt"),
                         "--output-dir", str(tmp_path / "e")])
    assert code == 0, err
    report = json.loads((tmp_path / "e" / "report.json").read_text(encoding="utf-8"))
    assert report["environment"]["versions"]["sacrebleu"] == metadata.version("sacrebleu")
    assert f"sacrebleu {metadata.version('sacrebleu')}" in (tmp_path / "e" / "report.md").read_text(encoding="utf-8")
