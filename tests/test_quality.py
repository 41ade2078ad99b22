"""The quality levers of the Tatoeba recipe: script normalisation, several training corpora,
checkpoint averaging, fine-tuning from a checkpoint, the sweep script."""

import json
import subprocess
import sys

import pytest
import torch

from nmt.checkpoint import average_checkpoints, last_checkpoints, load_model, read_stored_model, write_checkpoint
from nmt.cli import average as average_cli
from nmt.cli import train as train_cli
from nmt.config import ConfigError, TokenizerConfig, from_dict, load_config
from nmt.data import load_raw
from nmt.errors import CheckpointError
from nmt.tokenizer import Tokenizer, train_tokenizer
from tests.conftest import ROOT
from tests.test_reliability import QUICK, TOY, assert_one_line, call

TRAD = ["我們的電腦壞了。", "這個問題很難。", "請給我一杯咖啡。", "他們說話很快。"] * 10
SIMP = ["我们的电脑坏了。", "这个问题很难。", "请给我一杯咖啡。", "他们说话很快。"] * 10
EN = ["Our computer is broken.", "This question is hard.", "A coffee, please.", "They speak fast."] * 10


def test_zh_hans_maps_traditional_input_to_the_simplified_pieces():
    tok = train_tokenizer(SIMP + TRAD, EN * 2, TokenizerConfig(vocab_size=90, src_normalize=["zh_hans"]))
    assert tok.encode_src(TRAD[:4]) == tok.encode_src(SIMP[:4])
    assert "電" not in "".join(tok.src_pieces([i for ids in tok.encode_src(TRAD[:4]) for i in ids]))
    plain = train_tokenizer(SIMP + TRAD, EN * 2, TokenizerConfig(vocab_size=90))
    assert plain.encode_src(TRAD[:1]) != plain.encode_src(SIMP[:1])  # without the step they differ


def test_normalisation_travels_with_the_tokenizer(tmp_path):
    tok = train_tokenizer(SIMP, EN, TokenizerConfig(vocab_size=70, src_normalize=["zh_hans", "nfkc"]))
    for again in (Tokenizer.from_state_dict(tok.state_dict()), Tokenizer.load(tok.save(tmp_path)[0].parent)):
        assert again.src_normalize == ["zh_hans", "nfkc"]
        assert again.encode_src(["我們，好嗎？"]) == tok.encode_src(["我们,好吗?"])
    old = {"src_model": tok.src_model, "tgt_model": None}  # a checkpoint from before normalisation existed
    assert Tokenizer.from_state_dict(old).src_normalize == []


def test_bad_normalisation_step_and_list_of_corpora_are_config_errors():
    with pytest.raises(ConfigError, match="tokenizer.src_normalize: 'zh_hant' is not one of nfkc, zh_hans"):
        from_dict({"tokenizer": {"src_normalize": ["zh_hant"]}, "trainer": {"max_steps": 1}})
    with pytest.raises(ConfigError, match="data.train: a list of training corpora needs data.source text"):
        from_dict({"data": {"source": "hsk", "train": ["train", "valid"]}, "trainer": {"max_steps": 1}})


def test_exponent_floats_without_a_dot_are_floats():
    cfg = from_dict({"optim": {"peak_lr": "1e-3"}, "trainer": {"max_steps": 1}}, ["optim.label_smoothing=2e-1"])
    assert cfg.optim.peak_lr == 0.001 and cfg.optim.label_smoothing == 0.2
    with pytest.raises(ConfigError, match="optim.peak_lr: expected float, got 'fast'"):
        from_dict({"optim": {"peak_lr": "fast"}, "trainer": {"max_steps": 1}})


def test_a_list_of_training_corpora_is_read_in_order(parallel_files, tmp_path):
    (tmp_path / "extra.zh").write_text("一。\n二。\n", encoding="utf-8")
    (tmp_path / "extra.en").write_text("One.\nTwo.\n", encoding="utf-8")
    cfg = from_dict({"data": {"source": "text", "train": [str(parallel_files / "train"), str(tmp_path / "extra")]},
                     "trainer": {"max_steps": 1}})
    ds = load_raw(cfg.data, "train")
    assert len(ds) == 40 + 2
    assert ds["tgt"][-2:] == ["One.", "Two."] and ds["tgt"][0] == "Hello."


# -- checkpoint averaging ---------------------------------------------------------------------------

def _scaled_copy(ckpt_path, factor, out):
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k: v * factor if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    write_checkpoint(ckpt, out)
    return out


def test_average_is_the_elementwise_mean_and_translates(toy_ckpt, tmp_path):
    a = _scaled_copy(toy_ckpt, 1.0, tmp_path / "step10.ckpt")
    b = _scaled_copy(toy_ckpt, 3.0, tmp_path / "step20.ckpt")
    c = _scaled_copy(toy_ckpt, 2.0, tmp_path / "step9.ckpt")  # older by step number, not by name
    assert last_checkpoints(tmp_path, 2) == [a, b]
    write_checkpoint(average_checkpoints([a, b]), tmp_path / "avg.ckpt")
    avg, ref = read_stored_model(tmp_path / "avg.ckpt"), read_stored_model(c)
    for name, tensor in ref.state.items():
        torch.testing.assert_close(avg.state[name], tensor)  # (1x + 3x) / 2 = 2x
    assert avg.meta["averaged_from"] == ["step10.ckpt", "step20.ckpt"]
    assert load_model(tmp_path / "avg.ckpt").model is not None


def test_nmt_average_cli_and_its_errors(toy_ckpt, tmp_path, capsys, monkeypatch):
    for step in (10, 20, 30):
        _scaled_copy(toy_ckpt, 1.0, tmp_path / f"step{step}.ckpt")
    code, out, _ = call(capsys, monkeypatch, average_cli.main, ["--last", "2", str(tmp_path), "-o", str(tmp_path / "a.ckpt")])
    assert code == 0 and "averaged 2 checkpoints (step20.ckpt, step30.ckpt)" in out
    code, _, err = call(capsys, monkeypatch, average_cli.main, ["--last", "5", str(tmp_path), "-o", str(tmp_path / "b.ckpt")])
    assert_one_line(code, err, "3 step<N>.ckpt file(s), 5 asked for")
    other = torch.load(toy_ckpt, map_location="cpu", weights_only=True)
    other["nmt"]["config"]["model"]["d_ff"] = 64
    write_checkpoint(other, tmp_path / "other.ckpt")
    code, _, err = call(capsys, monkeypatch, average_cli.main,
                        [str(tmp_path / "step10.ckpt"), str(tmp_path / "other.ckpt"), "-o", str(tmp_path / "c.ckpt")])
    assert_one_line(code, err, "another architecture than")


# -- fine-tuning ------------------------------------------------------------------------------------

def test_init_from_starts_from_the_checkpoints_weights(toy_ckpt, tmp_path, capsys, monkeypatch):
    run = tmp_path / "ft"
    args = [TOY, "--output-dir", str(run), "--no-test", "--init-from", str(toy_ckpt),
            "--set", "trainer.max_steps=1", "--set", "optim.peak_lr=1e-12", "--set", "model.dropout=0.3",
            *[a for kv in QUICK for a in ("--set", kv)]]
    code, out, err = call(capsys, monkeypatch, train_cli.main, args)
    assert code == 0, err
    assert "initialised from" in out
    before, after = read_stored_model(toy_ckpt), read_stored_model(run / "checkpoints" / "last.ckpt")
    for name, tensor in before.state.items():
        torch.testing.assert_close(after.state[name], tensor, atol=1e-6, rtol=0)  # one step at lr 1e-12
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1  # a fresh count
    assert json.loads((run / "environment.json").read_text())[0]["init_from"] == str(toy_ckpt)


@pytest.mark.parametrize("change, message", [
    ("tokenizer.vocab_size=99", "tokenizer.vocab_size is 99 but the checkpoint's vocabulary was built with"),
    ("model.d_model=32", "model.d_model is 32 but the checkpoint's model has"),
])
def test_init_from_a_mismatched_model_is_a_one_line_error(toy_ckpt, tmp_path, capsys, monkeypatch, change, message):
    code, _, err = call(capsys, monkeypatch, train_cli.main,
                        [TOY, "--output-dir", str(tmp_path / "x"), "--init-from", str(toy_ckpt), "--set", change])
    assert_one_line(code, err, message)
    assert not (tmp_path / "x").exists()  # checked before anything is written


# -- the sweep script -------------------------------------------------------------------------------

def test_sweep_trains_each_variant_and_ranks_them_on_valid(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep.py"), TOY, "--budget", "00:00:00:04", "--beam-size", "1",
         "--vary", "model.dropout=0.3", "--set", "data.limit_train=2000", "--set", "trainer.val_check_interval=1000",
         "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["overrides"] for r in results] == [[], ["model.dropout=0.3"]]
    assert all(r["steps"] > 0 and 0 <= r["valid_bleu"] <= 100 and r["valid_sentences"] == 200 for r in results)
    assert load_config(out / "model.dropout=0.3".replace("model.", "") / "config.yaml").model.dropout == 0.3
    table = (out / "results.md").read_text()
    assert "(baseline)" in table and "`model.dropout=0.3`" in table


# -- the GPU recipe's data path, offline ------------------------------------------------------------

def test_wmt_base_config_prepares_a_hub_layout_dataset_offline(tmp_path):
    """configs/wmt_zh_en_base.yaml as shipped (prepared data), pointed at a local directory in the layout of
    wmt/wmt19 (config zh-en, `translation` records, parquet shards) and shrunk to a tiny model on CPU."""
    import datasets

    from nmt.training.run import train

    repo = tmp_path / "wmt19_like"
    (repo / "zh-en").mkdir(parents=True)
    pairs = list(zip(SIMP + TRAD, EN * 2))
    for split in ("train", "validation"):
        datasets.Dataset.from_dict({"translation": [{"zh": z, "en": e} for z, e in pairs]}).to_parquet(
            str(repo / "zh-en" / f"{split}-00000-of-00001.parquet"))
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: zh-en\n  data_files:\n"
                                    "  - split: train\n    path: zh-en/train-*\n"
                                    "  - split: validation\n    path: zh-en/validation-*\n---\n", encoding="utf-8")
    tiny = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.n_encoder_layers=1",
            "model.n_decoder_layers=1", "tokenizer.vocab_size=120", "data.max_tokens=400",
            "trainer.max_steps=4", "trainer.accelerator=cpu", "trainer.precision=32-true",
            "trainer.accumulate_grad_batches=1", "trainer.val_check_interval=2", "trainer.val_bleu_sentences=8",
            "trainer.save_every_n_steps=2"]
    cfg = load_config(ROOT / "configs" / "wmt_zh_en_base.yaml",
                      [f"data.hub_name={repo}", f"data.prepared_dir={tmp_path / 'prepared'}", "data.num_proc=2", *tiny])
    assert cfg.data.hub_config == "zh-en"
    result = train(cfg, tmp_path / "run", test=False)
    prepared = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert prepared["stats"]["read"] == len(pairs) and prepared["pairs"] > 0  # both readers' shares, once
    stored = read_stored_model(result.run_dir / "checkpoints" / "last.ckpt")
    assert stored.tokenizer.src_normalize == ["zh_hans"]
    assert torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert len(last_checkpoints(result.run_dir / "checkpoints", 2)) == 2


def test_tune_decoding_picks_a_checkpoint_then_an_alpha_on_the_dev_set(toy_ckpt, tmp_path):
    from nmt.data import toy_reverse_split

    pairs = toy_reverse_split("valid")[:40]
    (tmp_path / "dev.src").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    (tmp_path / "dev.ref").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    other = _scaled_copy(toy_ckpt, 0.0, tmp_path / "zeros.ckpt")  # all-zero weights: a useless model
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tune_decoding.py"), str(other), str(toy_ckpt), "--src",
         str(tmp_path / "dev.src"), "--ref", str(tmp_path / "dev.ref"), "--alphas", "0,1", "--beam-size", "2",
         "--out", str(tmp_path / "tuning")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chosen, alpha = proc.stdout.strip().splitlines()[-1].split()
    report = json.loads((tmp_path / "tuning" / "tuning.json").read_text())
    first = report["rows"][:2]  # both checkpoints at the base alpha, then the winner at each alpha
    assert [(r["checkpoint"], r["alpha"]) for r in first] == [(str(other), 0.6), (str(toy_ckpt), 0.6)]
    assert chosen == max(first, key=lambda r: r["bleu"])["checkpoint"] == report["best_checkpoint"]
    assert [(r["checkpoint"], r["alpha"]) for r in report["rows"][2:]] == [(chosen, 0.0), (chosen, 1.0)]
    rows = [r for r in report["rows"] if r["checkpoint"] == chosen]
    assert float(alpha) == max(rows, key=lambda r: r["bleu"])["alpha"]
