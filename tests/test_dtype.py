"""Translator.from_checkpoint(dtype=...) and --dtype: decoding in bfloat16 or float16."""

import pytest
import torch

from nmt.api import Translator
from nmt.cli import translate as translate_cli

SOURCES = ["a b c d", "e f g", "h i j k l m", "b a", "c c d e f g h", "d e f", "k l m n", "a a b b", "g h i", "f e"]


def test_bfloat16_casts_the_model_and_translates_as_float32_does(toy_ckpt):
    full = Translator.from_checkpoint(toy_ckpt).translate(SOURCES, beam_size=4)
    half = Translator.from_checkpoint(toy_ckpt, dtype="bfloat16")
    assert {p.dtype for p in half.engine.model.parameters()} == {torch.bfloat16}
    results = half.translate(SOURCES, beam_size=4)
    assert all(r.hypotheses[0].score == r.hypotheses[0].score for r in results)  # not NaN
    assert sum(a.text == b.text for a, b in zip(full, results)) >= len(SOURCES) // 2


def test_attention_of_a_bfloat16_model_comes_back_in_float32(toy_ckpt):
    result = Translator.from_checkpoint(toy_ckpt, dtype="bfloat16").translate(SOURCES[:2], beam_size=2, attention=True)
    assert all(r.hypotheses[0].attention.dtype == torch.float32 for r in result)


def test_ctranslate2_gets_the_dtype_as_its_compute_type(toy_ckpt, tmp_path):
    """Where CTranslate2 has float16 on this device it computes in it; where not (CPUs), the dtype
    is a one-line error that names what it has instead of a silent float32."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from nmt.checkpoint import load_model
    from nmt.errors import TranslationError
    from nmt.export import export_ctranslate2

    export_ctranslate2(load_model(toy_ckpt), tmp_path / "ct2")
    if "float16" in ctranslate2.get_supported_compute_types("cpu"):
        translator = Translator.from_checkpoint(tmp_path / "ct2", engine="ctranslate2", dtype="float16")
        assert translator.engine.translator.compute_type == "float16"
        assert len(translator.translate(SOURCES[:3], beam_size=2)) == 3
    else:
        with pytest.raises(TranslationError, match="dtype float16: CTranslate2 .* on this cpu computes in .*float32"):
            Translator.from_checkpoint(tmp_path / "ct2", engine="ctranslate2", dtype="float16")


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="int4"), "dtype must be one of float32, bfloat16, float16"),
    (dict(dtype="bfloat16", int8=True), "int8 and dtype bfloat16 are two precisions"),
    (dict(dtype="float16", onednn=True), "onednn is for float32"),
])
def test_bad_precisions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Translator.from_checkpoint("unused.ckpt", **kwargs)


def test_the_command_line_refuses_int8_with_another_dtype(toy_ckpt, capsys):
    code = translate_cli.main(["--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "--int8", "--dtype",
                               "bfloat16"])
    err = capsys.readouterr().err
    assert code != 0 and "--int8 and --dtype bfloat16 are two precisions" in err and "Traceback" not in err
