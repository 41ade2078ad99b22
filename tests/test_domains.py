"""Several corpora in one run: domain tags (data.train_tags, decoding.domain / --domain) and the
per-corpus sampling weights that mixed fine-tuning uses (data.train_weights; the sampler's own
tests are in test_data.py)."""

import json
import subprocess
import sys

import pytest

from nmt.api import Translator
from nmt.cli import translate as translate_cli
from nmt.config import TokenizerConfig, from_dict
from nmt.data import TranslationDataModule, load_raw
from nmt.errors import TranslationError
from nmt.tokenizer import Tokenizer, TokenizerError, domain_piece, train_tokenizer
from nmt.training.run import train
from tests.conftest import ROOT
from tests.test_reliability import assert_one_line, call

SOURCES = ["a b", "b c d", "c a", "d d b", "a c d b", "b a", "c c", "d a c"]


def test_a_domain_tag_is_one_piece_that_leads_every_non_empty_source():
    tok = train_tokenizer(["你好。", "谢谢你。"] * 20, ["Hello.", "Thank you."] * 20,
                          TokenizerConfig(type="bpe", vocab_size=40), domains=["news", "", "chat", "news"])
    assert tok.domains == ["news", "chat"]
    news = tok.domain_id("news")
    assert tok.src_pieces([news]) == [domain_piece("news")] == ["<dom:news>"]
    plain, tagged = tok.encode_src(["你好。", ""]), tok.encode_src(["你好。", ""], domain="news")
    assert tagged == [[news, *plain[0]], []]  # the tag, then the same pieces; an empty source stays empty
    assert Tokenizer.from_state_dict(tok.state_dict()).domain_id("chat") == tok.domain_id("chat")
    with pytest.raises(TokenizerError, match="unknown domain 'law': this model's domains are news, chat"):
        tok.encode_src(["你好。"], domain="law")


def _corpora(tmp_path):
    """One set of sources, two corpora that translate all of them differently: A -> 'alpha', B -> 'beta'."""
    for name, word in (("a", "alpha"), ("b", "beta")):
        (tmp_path / f"{name}.xx").write_text("".join(s + "\n" for s in SOURCES * 5), encoding="utf-8")
        (tmp_path / f"{name}.yy").write_text("".join(word + "\n" for _ in SOURCES * 5), encoding="utf-8")
    return {"data": {"source": "text", "src_lang": "xx", "tgt_lang": "yy", "train_tags": ["A", "B"],
                     "train": [str(tmp_path / "a"), str(tmp_path / "b")], "valid": str(tmp_path / "a"), "test": None,
                     "max_tokens": 256, "max_len": 16, "max_len_ratio": 10.0},
            "tokenizer": {"type": "bpe", "vocab_size": 40},
            "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
                      "dropout": 0.0, "max_positions": 32},
            "optim": {"lr_schedule": "inverse_sqrt", "peak_lr": 0.005, "warmup_steps": 20, "label_smoothing": 0.0},
            "trainer": {"max_steps": 120, "val_check_interval": 120, "val_bleu_sentences": 8, "log_every_n_steps": 10},
            "decoding": {"domain": "A", "max_len_a": 0.0, "max_len_b": 8}}


def test_tagged_corpora_teach_one_model_each_domain_and_the_domain_picks_the_output(tmp_path, capsys, monkeypatch):
    """The same source means 'alpha' in domain A and 'beta' in domain B: without its tag the model
    could not tell them apart (half its outputs would be wrong whatever it learnt)."""
    cfg = from_dict(_corpora(tmp_path))
    run = train(cfg, tmp_path / "run", test=False)
    ckpt = run.run_dir / "checkpoints" / "last.ckpt"
    translator = Translator.from_checkpoint(ckpt)
    assert translator.domains == ["A", "B"]
    a = translator.translate(SOURCES, beam_size=1, domain="A")
    b = translator.translate(SOURCES, beam_size=1, domain="B")
    assert [t.text for t in a] == ["alpha"] * len(SOURCES) and [t.text for t in b] == ["beta"] * len(SOURCES)
    assert a[0].source_ids[0] == translator.tokenizer.domain_id("A") != b[0].source_ids[0]
    assert [t.text for t in translator.translate(SOURCES, beam_size=1)] == [t.text for t in a]  # decoding.domain: A
    with pytest.raises(TranslationError, match="unknown domain 'C'"):
        translator.translate(["a b"], domain="C")
    # the command line: --domain, and an unknown domain as one line
    src = tmp_path / "in.xx"
    src.write_text("a b\nc c\n", encoding="utf-8")
    args = ["--checkpoint", str(ckpt), "--src", "xx", "--tgt", "yy", "--input", str(src)]
    code, out, err = call(capsys, monkeypatch, translate_cli.main, [*args, "--domain", "B", "--beam-size", "1"])
    assert code == 0, err
    assert out.splitlines() == ["beta", "beta"]
    code, _, err = call(capsys, monkeypatch, translate_cli.main, [*args, "--domain", "law"])
    assert_one_line(code, err, "unknown domain 'law': this model's domains are A, B")
    # scripts/tune_decoding.py on a development set that mixes the domains: --domains tags each line
    dev = {"src": SOURCES, "ref": ["alpha"] * 4 + ["beta"] * 4, "domains": ["A"] * 4 + ["B"] * 4}
    for name, lines in dev.items():
        (tmp_path / f"dev.{name}").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    tune = [sys.executable, str(ROOT / "scripts" / "tune_decoding.py"), str(ckpt), "--src", str(tmp_path / "dev.src"),
            "--ref", str(tmp_path / "dev.ref"), "--alphas", "0", "--beam-size", "1", "--out"]
    tagged = subprocess.run([*tune, str(tmp_path / "t1"), "--domains", str(tmp_path / "dev.domains")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    untagged = subprocess.run([*tune, str(tmp_path / "t2")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert tagged.returncode == untagged.returncode == 0, tagged.stderr[-2000:] + untagged.stderr[-2000:]
    chrf = [json.loads((tmp_path / t / "tuning.json").read_text())["rows"][0]["chrf"] for t in ("t1", "t2")]
    assert chrf[0] == 100.0 > chrf[1]  # untagged, every line gets decoding.domain A: the B half is wrong
    (tmp_path / "dev.domains").write_text("A\n" * 7 + "law\n", encoding="utf-8")
    bad = subprocess.run([*tune, str(tmp_path / "t3"), "--domains", str(tmp_path / "dev.domains")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert_one_line(bad.returncode, bad.stderr, "tune_decoding.py: error: unknown domain 'law'")


def test_a_model_without_tags_refuses_a_domain(toy_ckpt):
    with pytest.raises(TranslationError, match="trained without data.train_tags"):
        Translator.from_checkpoint(toy_ckpt).translate(["a b"], domain="news")


def test_tags_go_to_their_corpora_and_the_valid_split_gets_decoding_domain(tmp_path):
    values = _corpora(tmp_path)
    values["data"]["train_tags"] = ["A", ""]  # corpus b untagged
    values["decoding"]["domain"] = "A"
    cfg = from_dict(values)
    raw = load_raw(cfg.data, "train")
    tok = train_tokenizer(raw["src"], raw["tgt"], cfg.tokenizer, domains=cfg.data.train_tags)
    dm = TranslationDataModule(cfg, tok)
    dm.setup("fit")
    tag = tok.domain_id("A")
    firsts = [row[0] for row in dm.train_ds["src_ids"]]
    assert firsts[:40] == [tag] * 40 and tag not in firsts[40:]
    assert all(row[0] == tag for row in dm.valid_ds["src_ids"])
    assert dm.train_ds["src_ids"][40] == tok.encode_src([SOURCES[0]])[0]


def test_fine_tuning_data_with_a_tag_the_model_lacks_is_an_error(tmp_path):
    values = _corpora(tmp_path)
    cfg = from_dict(values)
    raw = load_raw(cfg.data, "train")
    tok = train_tokenizer(raw["src"], raw["tgt"], cfg.tokenizer, domains=["A"])  # a vocabulary without B
    with pytest.raises(TokenizerError, match="unknown domain 'B': this model's domains are A"):
        TranslationDataModule(cfg, tok).setup("fit")
