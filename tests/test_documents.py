"""Document mode: sentence splitting, fitting long sentences, joining in the input's layout, and
the Translator's document path (nothing dropped, layout kept), with answers computed by hand."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.api import Translator
from nmt.config import ExperimentConfig
from nmt.decoding.options import DecodingOptions, OptionsError
from nmt.decoding.results import Hypothesis
from nmt.documents import fit_sentence, split_document, split_sentences


@pytest.mark.parametrize("text, sentences", [
    ("我们走吧。谢谢你！他是老师？", ["我们走吧。", "谢谢你！", "他是老师？"]),
    ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),  # the closing quote stays with its sentence
    ("“你好。我很好。”他说。", ["“你好。我很好。”", "他说。"]),  # no split inside a quotation
    ("真的吗?!好的。", ["真的吗?!", "好的。"]),  # ASCII marks before CJK text
    ('不想买。"你看到了吗?" "在桌上。"好。', ["不想买。", '"你看到了吗?"', '"在桌上。"', "好。"]),  # ASCII quotes
    ("他有3.5元。我没有……你呢？", ["他有3.5元。", "我没有……", "你呢？"]),
    ("第一；第二。", ["第一；", "第二。"]),
    ("没有句号的一句", ["没有句号的一句"]),
    ("Hello world. 你好。", ["Hello world.", "你好。"]),
])
def test_chinese_sentences_end_at_their_marks_with_closing_quotes(text, sentences):
    assert split_sentences(text, "zh") == sentences


@pytest.mark.parametrize("text, sentences", [
    ("Dr. Smith came at 3.5 p.m. today. He left.", ["Dr. Smith came at 3.5 p.m. today.", "He left."]),
    ("I met J. K. Rowling. She smiled.", ["I met J. K. Rowling.", "She smiled."]),
    ('"Go!" he said. "Stop!" She ran.', ['"Go!" he said.', '"Stop!"', "She ran."]),
    ("It costs $3.50. E.g. this one. Wait... Really?", ["It costs $3.50.", "E.g. this one.", "Wait...", "Really?"]),
    ("the U.S. Army left. e.g. lower case goes on.", ["the U.S. Army left. e.g. lower case goes on."]),
])
def test_english_sentences_skip_abbreviations_initials_and_decimals(text, sentences):
    assert split_sentences(text, "en") == sentences


def test_full_width_marks_end_sentences_in_any_source_language():
    assert split_sentences("我们走吧。谢谢你！", "xx") == ["我们走吧。", "谢谢你！"]
    assert split_sentences("第一；第二", "xx") == ["第一；第二"]  # the semicolon only for zh and ja
    assert split_sentences("我们走吧。谢谢你！", "zh-Hans") == split_sentences("我们走吧。谢谢你！", "zho") == \
        ["我们走吧。", "谢谢你！"]


def test_whitespace_and_line_breaks_are_kept_between_sentences():
    doc = split_document("  第一句。第二句。 \n\n  第三句！", "zh")
    assert doc.parts == ["  ", "第一句。", "", "第二句。", " \n\n  ", "第三句！", ""]
    assert doc.join(["One.", "Two.", "Three!"], "en") == "  One. Two. \n\n  Three!"
    assert doc.join(["一。", "二。", "三！"], "zh") == "  一。二。 \n\n  三！"  # no space in a target without spaces


def test_long_sentences_are_cut_at_clause_marks_then_within_the_limit():
    assert fit_sentence("短句。", len, 5) == ["短句。"]
    assert fit_sentence("我们走吧，谢谢你，他说你好，然后走了", len, 10) == ["我们走吧，谢谢你，", "他说你好，然后走了"]
    assert fit_sentence("一二三四五六七八九十一二三", len, 6) == ["一二三四五六", "七八九十一二", "三"]
    assert fit_sentence("one two three four five", len, 9) == ["one two", "three", "four five"]  # at spaces


SENTENCE = st.text(alphabet="我们走吧谢你他是老师好的，", min_size=1, max_size=12).map(lambda s: s + "。")
SPACE = st.sampled_from(["", " ", "  "])


@st.composite
def documents(draw) -> tuple[str, list[list[list[str]]]]:
    """A text of lines (some empty), each of sentences with random spaces: (text, lines of sentences)."""
    lines = draw(st.lists(st.lists(SENTENCE, max_size=4), min_size=1, max_size=5))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(
        draw(SPACE) + "".join(s + draw(SPACE) for s in line) for line in lines)
    return text, lines


@settings(max_examples=200, deadline=None)
@given(documents())
def test_splitting_keeps_the_text_and_finds_every_sentence(doc):
    text, lines = doc
    d = split_document(text, "zh")
    assert "".join(d.parts) == text
    assert d.sentences == [s for line in lines for s in line]
    assert all(s == s.strip() and s and "\n" not in s for s in d.sentences)


class IdentityEngine:
    """'Translates' a sentence into itself: one target id per source character."""

    name = "identity"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg, self.tokenizer, self.rows = cfg, CharTokenizer(), []

    def decode(self, rows, options):
        self.rows.append(rows)
        return [[Hypothesis(list(row[:-1]), -1.0)] for row in rows]


class CharTokenizer:
    def encode_src(self, texts):
        return [[ord(c) for c in t] for t in texts]

    def decode_tgt(self, ids):
        return "".join(chr(i) for i in ids)


def identity_translator(max_len: int = 20) -> Translator:
    cfg = ExperimentConfig()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, src_lang="zh", tgt_lang="en", max_len=max_len))
    return Translator(IdentityEngine(cfg))


def test_document_mode_translates_every_sentence_in_one_call_and_joins_them():
    t = identity_translator()
    (line,) = t.translate(["我们走吧。谢谢你！"])
    assert line.text == "我们走吧。谢谢你！" and line.sentences is None  # sentence mode: one row
    (doc,) = t.translate(["我们走吧。谢谢你！\n\n他是老师。"], document=True)
    assert doc.text == "我们走吧。 谢谢你！\n\n他是老师。"
    assert [s.source for s in doc.sentences] == ["我们走吧。", "谢谢你！", "他是老师。"] and doc.split == 0
    assert len(t.engine.rows[-1]) == 3  # one decode call for all of them
    assert doc.as_dict()["sentences"][1]["text"] == "谢谢你！"


def test_a_sentence_over_the_limit_is_translated_in_pieces_and_counted():
    t = identity_translator(max_len=6)
    (doc,) = t.translate(["短句。我们走吧，谢谢你，他说你好。"], document=True)
    assert [s.source for s in doc.sentences] == ["短句。", "我们走吧，", "谢谢你，", "他说你好。"]
    assert doc.split == 1 and doc.text == "短句。 我们走吧， 谢谢你， 他说你好。"
    assert not any(s.truncated for s in doc.sentences)
    (wider,) = t.translate(["短句。我们走吧，谢谢你，他说你好。"], document=True, document_max_tokens=10)
    assert [s.source for s in wider.sentences] == ["短句。", "我们走吧，谢谢你，", "他说你好。"]


@settings(max_examples=100, deadline=None)
@given(documents(), st.integers(3, 30))
def test_nothing_is_dropped_and_lines_and_empty_lines_are_kept(doc, limit):
    text, lines = doc
    (out,) = identity_translator(max_len=limit).translate([text], document=True)
    assert len(out.text.splitlines()) == len(text.splitlines())
    for got, want in zip(out.text.splitlines(), text.splitlines()):
        assert (got.strip() == "") == (want.strip() == "")
        assert got.replace(" ", "") == want.replace(" ", "")  # every character of every sentence, in order
    assert all(len(s.source) <= limit for s in out.sentences)


def test_document_mode_wants_one_hypothesis():
    with pytest.raises(OptionsError, match="n_best must be 1"):
        DecodingOptions(document=True, beam_size=4, n_best=2)


@pytest.mark.parametrize("splitter", ["pysbd", "sentencex"])
def test_a_maintained_splitter_can_replace_the_rules(splitter):
    (doc,) = identity_translator().translate(["我们走吧。谢谢你！\n他是老师。"], document=True, document_splitter=splitter)
    assert [s.source for s in doc.sentences] == ["我们走吧。", "谢谢你！", "他是老师。"]
    assert doc.text == "我们走吧。 谢谢你！\n他是老师。"


def test_a_splitter_that_is_not_installed_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OptionsError, match="pip install sentencex"):
        DecodingOptions(document_splitter="sentencex")
