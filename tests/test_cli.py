"""The console scripts end to end, as a user runs them (subprocesses, real files)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "configs" / "toy_reverse.yaml")
# A few quick steps of the toy task; dropout is 0 in that config, so losses are deterministic.
QUICK = ["--set", "trainer.val_check_interval=20", "--set", "trainer.log_every_n_steps=1",
         "--set", "trainer.val_bleu_sentences=50", "--set", "data.limit_train=5000"]


def run(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "logs" / "metrics.csv", encoding="utf-8") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")}


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    proc = run("nmt.cli.train", TOY, "--output-dir", str(run_dir), "--set", "trainer.max_steps=40", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test BLEU" in proc.stdout
    return run_dir


def test_train_writes_a_complete_run_directory(toy_run):
    for name in ("config.yaml", "tokenizer/spm.model", "checkpoints/last.ckpt", "logs/metrics.csv",
                 "test/hyp.txt", "test/scores.json"):
        assert (toy_run / name).is_file(), name
    assert len(list((toy_run / "checkpoints").glob("best-*.ckpt"))) == 1
    ckpt = torch.load(toy_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 40
    assert ckpt["nmt"]["config"]["trainer"]["max_steps"] == 40  # resolved config inside the checkpoint
    assert isinstance(ckpt["nmt"]["tokenizer"]["src_model"], bytes)


def test_resume_continues_at_the_same_step_with_the_same_data(toy_run, tmp_path):
    """Stop at step 15 (mid-epoch, between validations), resume to 40: the losses of steps 16-40
    are those of the uninterrupted run, which only holds if the model, optimizer, schedule and
    batch order resume."""
    run_dir = tmp_path / "run"
    first = run("nmt.cli.train", TOY, "--output-dir", str(run_dir), "--set", "trainer.max_steps=15", "--no-test", *QUICK)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run("nmt.cli.train", TOY, "--output-dir", str(run_dir), "--set", "trainer.max_steps=20", *QUICK)
    assert_one_line_error(again, "already holds a run")
    resumed = run("nmt.cli.train", TOY, "--output-dir", str(run_dir), "--resume", "--set", "trainer.max_steps=40",
                  "--no-test", *QUICK)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
    straight, split = losses(toy_run), losses(run_dir)
    assert sorted(split) == sorted(straight)
    for step in range(15, 40):
        assert split[step] == pytest.approx(straight[step], rel=1e-4), step


def test_translate_reads_stdin_and_keeps_one_line_per_input(toy_run):
    ckpt = str(toy_run / "checkpoints" / "last.ckpt")
    proc = run("nmt.cli.translate", "--checkpoint", ckpt, "--src", "xx", "--tgt", "yy", stdin="a b c\n\nj i\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split("\n")
    assert len(out) == 4 and out[1] == "" and out[3] == ""


def test_two_process_ddp_on_cpu(tmp_path):
    """DDP with the gloo backend: two ranks, distinct batch shares, one consistent checkpoint."""
    run_dir = tmp_path / "ddp"
    proc = run("nmt.cli.train", TOY, "--output-dir", str(run_dir), "--set", "trainer.max_steps=6",
               "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp",
               "--set", "trainer.val_check_interval=3", "--set", "trainer.val_bleu_sentences=20",
               "--set", "data.limit_train=5000", "--no-test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU x2" in proc.stdout
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_streaming_mode_trains_end_to_end(tmp_path, parallel_files):
    run_dir = tmp_path / "stream"
    proc = run("nmt.cli.train", TOY, "--output-dir", str(run_dir), "--set", "data.source=text",
               "--set", f"data.train={parallel_files / 'train'}", "--set", f"data.valid={parallel_files / 'valid'}",
               "--set", f"data.test={parallel_files / 'test'}", "--set", "data.src_lang=zh", "--set", "data.tgt_lang=en",
               "--set", "data.streaming=true", "--set", "data.stream_buffer=16", "--set", "tokenizer.vocab_size=60",
               "--set", "trainer.max_steps=8", "--set", "trainer.val_check_interval=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "streaming" in proc.stdout and "test BLEU" in proc.stdout
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


def test_translate_jsonl_and_n_best_outputs(toy_run):
    ckpt = str(toy_run / "checkpoints" / "last.ckpt")
    proc = run("nmt.cli.translate", "--checkpoint", ckpt, "--src", "xx", "--tgt", "yy", "--beam-size", "3",
               "--n-best", "2", "--output-format", "jsonl", stdin="a b c\n\n")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and rows[0]["source"] == "a b c"
    assert len(rows[0]["hypotheses"]) == 2 and rows[0]["hypotheses"][0]["score"] >= rows[0]["hypotheses"][1]["score"]
    assert rows[1]["hypotheses"][0]["text"] == ""
    assert rows[0]["text"] == rows[0]["hypotheses"][0]["text"] and rows[0]["truncated"] is False  # Translation.as_dict
    moses = run("nmt.cli.translate", "--checkpoint", ckpt, "--src", "xx", "--tgt", "yy", "--beam-size", "3",
                "--n-best", "2", stdin="a b c\nd e\n")
    ids = [line.split(" ||| ")[0] for line in moses.stdout.splitlines()]
    assert ids == ["0", "0", "1", "1"]


def test_evaluate_reports_scores_with_signatures_and_compares_systems(tmp_path):
    refs = ["the cat sat on the mat .", "a dog ran in the park .", "it is cold today .", "we go home now ."]
    close = ["the cat sat on a mat .", "a dog ran in the park .", "it is cold today .", "we go home ."]
    far = ["cat", "dog park", "cold", "home"]
    for name, lines in (("ref.en", refs), ("good.en", close), ("bad.en", far)):
        (tmp_path / name).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    proc = run("nmt.cli.evaluate", "--hyp", f"good={tmp_path / 'good.en'}", "--hyp", f"bad={tmp_path / 'bad.en'}",
               "--ref-file", str(tmp_path / "ref.en"), "--ref-file", str(tmp_path / "ref.en"),
               "--output-dir", str(tmp_path / "eval"), "--bootstrap-samples", "200")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    assert report["system"] == "good" and report["segments"] == 4
    assert set(report["scores"]) == {"bleu", "chrf", "ter"}
    assert report["scores"]["bleu"]["signature"].startswith("nrefs:2|")  # both references used
    rows = {r["system"]: r for r in report["comparison"]["systems"]}
    assert rows["bad"]["BLEU"]["score"] < rows["good"]["BLEU"]["score"]
    same = run("nmt.cli.evaluate", "--hyp", f"a={tmp_path / 'good.en'}", "--hyp", f"b={tmp_path / 'good.en'}",
               "--ref-file", str(tmp_path / "ref.en"), "--output-dir", str(tmp_path / "same"))
    assert same.returncode == 0, same.stderr
    row = json.loads((tmp_path / "same" / "report.json").read_text(encoding="utf-8"))["comparison"]["systems"][1]
    assert row["identical_to_baseline"] and not row["BLEU"]["significant"]
    assert "## Comparison" in (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")


def test_evaluate_a_checkpoint_on_the_toy_test_split(toy_run, tmp_path):
    test = toy_run / "test"
    proc = run("nmt.cli.evaluate", "--checkpoint", str(toy_run / "checkpoints" / "last.ckpt"),
               "--src-file", str(test / "src.txt"), "--ref-file", str(test / "ref.txt"),
               "--output-dir", str(tmp_path / "eval"), "--beam-size", "2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    assert report["speed"]["sentences_per_s"] > 0 and report["config"]["data"]["src_lang"] == "xx"
    hyps = (tmp_path / "eval" / f"hypotheses.{report['config']['data']['tgt_lang']}").read_text(encoding="utf-8")
    for example in report["examples"]["best"] + report["examples"]["worst"]:  # the translations, line-aligned
        assert hyps.splitlines()[example["line"] - 1] == example["hypothesis"]
    assert len(hyps.splitlines()) == report["segments"]


def test_translate_writes_attention_heatmaps(toy_run, tmp_path):
    proc = run("nmt.cli.translate", "--checkpoint", str(toy_run / "checkpoints" / "last.ckpt"), "--src", "xx",
               "--tgt", "yy", "--attention", str(tmp_path / "att"), stdin="a b c\n\nd e\n")
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in (tmp_path / "att").glob("*.png"))
    assert pngs == ["000001.png", "000003.png"]  # none for the empty line
    assert (tmp_path / "att" / "000001.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_translate_sampling_with_top_k_one_matches_greedy(toy_run):
    ckpt = str(toy_run / "checkpoints" / "last.ckpt")
    common = ["nmt.cli.translate", "--checkpoint", ckpt, "--src", "xx", "--tgt", "yy"]
    greedy = run(*common, "--beam-size", "1", stdin="a b c\nd e f g\n")
    sampled = run(*common, "--sampling", "--top-k", "1", "--seed", "3", stdin="a b c\nd e f g\n")
    assert greedy.returncode == sampled.returncode == 0, sampled.stderr
    assert sampled.stdout == greedy.stdout
