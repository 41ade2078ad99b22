"""The Python API: its contract, that it matches `nmt-translate`, and that docs/api.md runs."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch

from nmt import Translator
from nmt.cli import translate as translate_cli

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def translator(toy_ckpt):
    return Translator.from_checkpoint(toy_ckpt)


def test_translate_keeps_order_and_gives_n_best(translator):
    texts = ["a b c", "", "d e f g h", "j"]
    results = translator.translate(texts, beam_size=4, n_best=3)
    assert [r.source for r in results] == texts
    assert results[1].text == "" and [(h.text, h.score) for h in results[1].hypotheses] == [("", 0.0)]
    for r in (results[0], results[2], results[3]):
        assert len(r.hypotheses) == 3
        scores = [h.score for h in r.hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert r.text == r.hypotheses[0].text and r.score == scores[0]
        assert all(h.text == translator.tokenizer.decode_tgt(h.tokens) for h in r.hypotheses)
    assert [r.text for r in translator.translate(texts[0], beam_size=4)] == [results[0].text]  # a str: one sentence


def test_greedy_scores_are_nan_and_attention_has_the_documented_shape(translator):
    (greedy,) = translator.translate("a b c", beam_size=1)
    assert math.isnan(greedy.hypotheses[0].score)
    (r,) = translator.translate("a b c", attention=True)
    assert r.attention.shape == (len(r.target_ids) + 1, len(r.source_ids) + 1)
    torch.testing.assert_close(r.attention.sum(-1), torch.ones(r.attention.size(0)))


def test_worker_processes_give_the_outputs_of_one_process(toy_ckpt):
    """--workers 2 decodes batches in 2 forked processes: same n-best, scores, attention and samples
    as one process, in input order (batches of 2 sentences, so both workers get several)."""
    texts = ["a b c", "d e f g h", "j", "k l", "a a b", "m n o p", "c"]
    one = Translator.from_checkpoint(toy_ckpt, max_sentences=2)
    two = Translator.from_checkpoint(toy_ckpt, max_sentences=2, workers=2)
    try:
        for options in (dict(beam_size=3, n_best=2, attention=True), dict(sampling=True, seed=5)):
            expected, got = one.translate(texts, **options), two.translate(texts, **options)
            assert two.engine._pool is not None  # the batches did go to the workers
            assert [r.source for r in got] == texts
            for a, b in zip(expected, got):
                assert [h.tokens for h in b.hypotheses] == [h.tokens for h in a.hypotheses]
                assert [h.score for h in b.hypotheses] == pytest.approx([h.score for h in a.hypotheses], nan_ok=True)
                if a.attention is not None:
                    torch.testing.assert_close(b.attention, a.attention)
    finally:
        two.engine.close()
    with pytest.raises(ValueError, match="workers"):
        Translator.from_checkpoint(toy_ckpt, workers=0)


def test_bad_options_raise_value_error(translator):
    with pytest.raises(ValueError, match="beam_size must be >= 1, got 0"):
        translator.translate("a", beam_size=0)
    with pytest.raises(ValueError, match=r"n_best \(3\) cannot exceed beam_size \(2\)"):
        translator.translate("a", beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="unknown decoding option 'beam'"):
        translator.translate("a", beam=2)
    with pytest.raises(ValueError, match="top_p must be > 0 and <= 1"):
        translator.translate("a", sampling=True, top_p=1.5)
    with pytest.raises(ValueError, match="engine"):
        Translator.from_checkpoint("x.ckpt", engine="onnx")


def test_translate_file_matches_the_command_line(translator, toy_ckpt, tmp_path, capsys, monkeypatch):
    lines = ["a b c", "j i h", "", "c c d"] * 3
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    n = translator.translate_file(tmp_path / "in.txt", tmp_path / "api.txt", beam_size=3, chunk_lines=5)
    assert n == len(lines)
    api = (tmp_path / "api.txt").read_text(encoding="utf-8")
    assert api.splitlines() == [r.text for r in translator.translate(lines, beam_size=3)]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code = translate_cli.main(["--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "--beam-size", "3",
                               "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "cli.txt")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "cli.txt").read_text(encoding="utf-8") == api


def test_the_examples_in_docs_api_md_run(toy_ckpt, capsys):
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 6
    code = "\n".join(blocks).replace("runs/quickstart/checkpoints/last.ckpt", str(toy_ckpt))
    code = code.replace('"Peking"', '"j i"').replace('"machine translation"', '"a b"')  # terms the toy's letters can spell
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("xx -> yy\n")
    assert "'' -> ''" in out and "2 lines:" in out
    assert "[('我们走吧。', " in out and ", ('谢谢你！', " in out and ", ('他是老师。', " in out  # document mode's sentences
    assert "beam 8, GNMT length penalty alpha 1, max length 1.5*src+10" in out  # DecodingOptions' own defaults
    assert "j i ['j i'] True" in out and "a b ['a b']" in out  # the terms block
