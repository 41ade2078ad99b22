"""Terms from every front door: glossaries (nmt/glossary.py), `Translator.translate(constraints=,
glossary=)`, `nmt-translate --constraints/--glossary` and their errors. The search itself:
tests/test_constraints.py; over HTTP: tests/test_serve.py."""

from __future__ import annotations

import json

import pytest

from nmt import Translator
from nmt.errors import ConstraintError, DataError, TranslationError
from nmt.glossary import Glossary
from tests.test_cli import run
from tests.test_constraints import holds


@pytest.fixture(scope="module")
def translator(toy_ckpt):
    return Translator.from_checkpoint(toy_ckpt)


def test_a_glossary_file_is_read_with_comments_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "terms.tsv"
    path.write_text("# term base\n机器翻译\tmachine translation\n\n翻译\ttranslation\n", encoding="utf-8")
    assert Glossary.read(path).entries == (("机器翻译", "machine translation"), ("翻译", "translation"))
    path.write_text("猫\tcat\n狗 dog\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"terms.tsv:2: expected 'source term<TAB>target term'"):
        Glossary.read(path)
    with pytest.raises(DataError, match="cannot read glossary"):
        Glossary.read(tmp_path / "missing.tsv")


def test_terms_apply_where_their_source_occurs_longest_first_whole_words_ignoring_case():
    g = Glossary.of({"机器翻译": "machine translation", "翻译": "translation", "猫": "cat"})
    assert g.terms_for("我喜欢机器翻译和猫。", "zh") == ["machine translation", "cat"]  # not "translation" as well
    assert g.terms_for("翻译很难。", "zh") == ["translation"]
    assert g.terms_for("狗。", "zh") == []
    en = Glossary.of([("cat", "Katze"), ("New York", "New York")])
    assert en.terms_for("A Cat and a category in new york.", "en") == ["Katze", "New York"]
    assert en.terms_for("categories", "en") == []
    assert Glossary.of({"北京": "Beijing"}).terms_for("I live in北京now", "en") == ["Beijing"]  # no spaces in Han
    traditional = Glossary.of({"機器": "machine"})  # matched after the tokenizer's normalisation
    assert traditional.terms_for("机器", "zh", normalize=lambda s: s.replace("機", "机")) == ["machine"]


def test_every_translation_holds_its_constraints_and_the_others_are_unchanged(translator):
    texts = ["a b c", "d e f g", "h", "k l m"]
    constraints = [["j"], [], ["i j", "e"], []]  # the toy task's letters are a-j
    plain = translator.translate(texts, beam_size=3, n_best=2)
    got = translator.translate(texts, beam_size=3, n_best=2, constraints=constraints)
    for text, terms, p, g in zip(texts, constraints, plain, got):
        if not terms:
            assert [h.tokens for h in g.hypotheses] == [h.tokens for h in p.hypotheses] and g.constraints is None
            continue
        assert g.constraints == terms and g.as_dict()["constraints_met"] is True
        for h in g.hypotheses:
            assert all(holds(h.tokens, ids) for ids in translator.tokenizer.encode_tgt(terms)), (text, h.text)
            assert h.constraints_met is True


def test_a_glossary_adds_the_terms_of_the_sources_it_matches(translator):
    (with_term, without) = translator.translate(["a b c", "d e"], beam_size=2, glossary={"b": "j i"})
    assert with_term.constraints == ["j i"] and "j i" in with_term.text
    assert without.constraints is None
    both = translator.translate(["a b"], beam_size=2, constraints=[["j"]], glossary={"b": "j", "a": "i"})[0]
    assert both.constraints == ["j", "i"]  # a glossary term already given is not asked twice


def test_impossible_terms_are_errors_naming_the_input(translator):
    need = len(translator.tokenizer.encode_tgt(["j " * 30])[0])
    with pytest.raises(ConstraintError, match=f"input 2: its constraints need {need} target tokens, more than its length limit"):
        translator.translate(["a", "b"], beam_size=2, constraints=[[], ["j " * 30]])
    with pytest.raises(ConstraintError, match="input 1: the term 'xyz' has characters the target vocabulary lacks"):
        translator.translate(["a"], constraints=[["xyz"]])
    with pytest.raises(TranslationError, match="need beam search, not sampling"):
        translator.translate(["a"], sampling=True, constraints=[["j"]])
    with pytest.raises(TranslationError, match="document mode: constraints apply to sentences"):
        translator.translate(["a"], document=True, constraints=[["j"]])
    with pytest.raises(ConstraintError, match="input 2: a sentence of it: its constraints need"):
        translator.translate(["a b.", "c d. e."], document=True, glossary={"e": "j " * 30})
    with pytest.raises(ValueError, match="one list per input"):
        translator.translate(["a", "b"], constraints=[["j"]])


def test_the_ctranslate2_engine_refuses_terms_clearly(translator):
    class Exported:  # what Translator sees of a CTranslate2 engine
        name, has_shortlist = "ctranslate2", False
        cfg, tokenizer = translator.cfg, translator.tokenizer

        def decode(self, rows, options, constraints=None):
            raise AssertionError("terms must be refused before decoding")

    with pytest.raises(TranslationError, match="need the torch engine: ctranslate2 has no lexically constrained"):
        Translator(Exported()).translate(["a b"], constraints=[["j"]])


def test_nmt_translate_reads_constraints_as_jsonl_and_names_a_bad_line(toy_ckpt, tmp_path):
    lines = [{"text": "a b c", "constraints": ["j"]}, {"text": "d e"}, {"text": "f", "constraints": ["i", "e"]}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    out = run("nmt.cli.translate", "--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "-i", str(src),
              "--constraints", "--output-format", "jsonl")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["source"] for r in rows] == ["a b c", "d e", "f"]
    assert rows[0]["constraints_met"] is True and "j" in rows[0]["text"].split()
    assert "constraints" not in rows[1]
    assert rows[2]["constraints"] == ["i", "e"] and {"i", "e"} <= set(rows[2]["text"].split())
    src.write_text('{"text": "a"}\n{"text": "b", "constraints": "j"}\n', encoding="utf-8")
    bad = run("nmt.cli.translate", "--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "-i", str(src), "--constraints")
    assert bad.returncode == 2 and "in.jsonl:2: constraints must be a list of non-empty strings" in bad.stderr
    assert "Traceback" not in bad.stderr
    src.write_text(json.dumps({"text": "a", "constraints": ["j " * 20]}) + "\n", encoding="utf-8")
    long = run("nmt.cli.translate", "--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "-i", str(src), "--constraints")
    assert long.returncode == 2 and "in.jsonl:1: its constraints need" in long.stderr and "Traceback" not in long.stderr


def test_nmt_translate_applies_a_glossary_file(toy_ckpt, tmp_path):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("b\tj\n", encoding="utf-8")
    out = run("nmt.cli.translate", "--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "--glossary", str(glossary),
              stdin="a b c\nd e\n")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert "j" in first.split() and second
    bad = run("nmt.cli.translate", "--checkpoint", str(toy_ckpt), "--src", "xx", "--tgt", "yy", "--glossary",
              str(tmp_path / "none.tsv"), stdin="a\n")
    assert bad.returncode == 2 and "cannot read glossary" in bad.stderr and "Traceback" not in bad.stderr
