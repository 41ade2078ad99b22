"""CTranslate2 export and int8 inference: the exported model computes what ours computes.

Property 1 (exact mapping): CTranslate2's log-probabilities of a given target (score_batch) equal
our teacher-forced ones, for post-norm and pre-norm models, tied and untied, and with Marian's
swish activation, sinusoid layout and output bias. Property 2: beam
search through `nmt-translate --engine ctranslate2` gives our beam search's output. Property 3:
int8 (torch dynamic quantisation) changes the log-probabilities only a little.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import ctranslate2  # the test extra installs it: a broken install fails here, it is not skipped

from nmt.api import Translator, quantize_int8
from nmt.checkpoint import LoadedModel, load_model
from nmt.cli import export as export_cli
from nmt.cli import translate as translate_cli
from nmt.data import toy_reverse_split
from nmt.ct2 import LIMIT_TIER, CTranslate2Engine
from nmt.decoding.options import DecodingOptions, from_flags
from nmt.errors import CheckpointError, ExportError
from nmt.export import export_ctranslate2
from nmt.masks import make_pad_mask
from nmt.models import build_model
from nmt.tokenizer import BOS_ID, EOS_ID



def our_logprobs(model, src_ids: list[int], tgt_ids: list[int]) -> torch.Tensor:
    """Teacher-forced log P(y_t | y_<t, x) of tgt_ids + EOS: (len(tgt_ids) + 1,)"""
    src = torch.tensor([src_ids + [EOS_ID]])
    tgt_in = torch.tensor([[BOS_ID] + tgt_ids])
    with torch.no_grad():
        lprobs = F.log_softmax(model(src, make_pad_mask(src), tgt_in).float(), dim=-1)[0]  # (T, V)
    return lprobs.gather(1, torch.tensor(tgt_ids + [EOS_ID])[:, None])[:, 0]


@pytest.mark.parametrize("variant", [dict(norm_first=False), dict(norm_first=True),
                                     dict(activation="swish", positions="halves", output_bias=True)],  # Marian's
                         ids=["post-norm", "pre-norm", "swish-halves-bias"])
def test_ctranslate2_scores_equal_ours(toy_ckpt, tmp_path, variant):
    loaded = load_model(toy_ckpt)
    cfg = dataclasses.replace(loaded.cfg, model=dataclasses.replace(loaded.cfg.model, **variant, dropout=0.0))
    torch.manual_seed(3)
    model = build_model(cfg.model, loaded.tokenizer).eval()  # random weights: every parameter matters
    for p in model.parameters():  # non-trivial LayerNorm parameters and biases too
        if p.dim() == 1:
            torch.nn.init.normal_(p, std=0.5)
    export_ctranslate2(LoadedModel(cfg, loaded.tokenizer, model), tmp_path / "ct2")
    ct2 = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    tok = loaded.tokenizer
    pairs = [(src, tgt) for src, tgt in toy_reverse_split("test")][:8]
    for src, tgt in pairs:
        src_ids, tgt_ids = tok.encode_src([src])[0], tok.encode_tgt([tgt])[0]
        (result,) = ct2.score_batch([tok.src_pieces(src_ids) + ["</s>"]], [tok.tgt_pieces(tgt_ids)])
        theirs = torch.tensor(result.log_probs)
        assert result.tokens == tok.tgt_pieces(tgt_ids) + ["</s>"]
        torch.testing.assert_close(theirs, our_logprobs(model, src_ids, tgt_ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tie", [False, True])
def test_separate_vocabularies_and_untied_embeddings_map_each_to_its_side(toy_ckpt, parallel_files, tmp_path, tie):
    """The quickstart's shape: one SentencePiece model per language (Chinese and English pieces,
    vocabularies of different sizes) with separate source and target embeddings. A swap of the
    two embeddings or vocabularies in the export changes every score."""
    from nmt.tokenizer import train_tokenizer

    loaded = load_model(toy_ckpt)
    zh = (parallel_files / "train.zh").read_text(encoding="utf-8").splitlines()
    en = (parallel_files / "train.en").read_text(encoding="utf-8").splitlines()
    tok_cfg = dataclasses.replace(loaded.cfg.tokenizer, joint=False, vocab_size=40, type="unigram")
    tok = train_tokenizer(zh, en, tok_cfg)
    assert not tok.joint and tok.src_vocab_size != tok.tgt_vocab_size
    cfg = dataclasses.replace(loaded.cfg, tokenizer=tok_cfg,
                              model=dataclasses.replace(loaded.cfg.model, tie_embeddings=tie, dropout=0.0))
    torch.manual_seed(5)
    model = build_model(cfg.model, tok).eval()
    assert model.src_embed is not model.tgt_embed
    export_ctranslate2(LoadedModel(cfg, tok, model), tmp_path / "ct2")
    ct2 = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    for src, tgt in zip(zh[:8], en[:8]):
        src_ids, tgt_ids = tok.encode_src([src])[0], tok.encode_tgt([tgt])[0]
        (result,) = ct2.score_batch([tok.src_pieces(src_ids) + ["</s>"]], [tok.tgt_pieces(tgt_ids)])
        assert result.tokens == tok.tgt_pieces(tgt_ids) + ["</s>"]
        torch.testing.assert_close(torch.tensor(result.log_probs), our_logprobs(model, src_ids, tgt_ids),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("flags", [[], ["--length-penalty", "length", "--alpha", "1"], ["--beam-size", "1"]])
def test_the_same_options_give_the_same_translations_on_both_engines(toy_ckpt, tmp_path, capsys, flags):
    """The same nmt-translate command, once per engine. Every output that ends in EOS before the
    length limit is identical; at the limit the two differ by definition: our search forces EOS
    there and scores it, CTranslate2 stops without it. No flags: the checkpoint's options (beam 5,
    GNMT's penalty, which CTranslate2 lacks and nmt applies to its finished hypotheses)."""
    assert export_cli.main([str(toy_ckpt), str(tmp_path / "ct2")]) == 0, capsys.readouterr().err
    sources = [src for src, _ in toy_reverse_split("test")][:80]
    (tmp_path / "in.xx").write_text("\n".join(sources) + "\n", encoding="utf-8")
    outputs = {}
    for engine, model in (("torch", toy_ckpt), ("ctranslate2", tmp_path / "ct2")):
        code = translate_cli.main(["--checkpoint", str(model), "--engine", engine, "--src", "xx", "--tgt", "yy",
                                   "-i", str(tmp_path / "in.xx"), "-o", str(tmp_path / f"{engine}.yy"), *flags])
        assert code == 0, capsys.readouterr().err
        outputs[engine] = (tmp_path / f"{engine}.yy").read_text(encoding="utf-8").splitlines()
    translator = Translator.from_checkpoint(toy_ckpt)
    args = translate_cli.parse_args(["--checkpoint", "x", "--src", "xx", "--tgt", "yy", *flags])
    ours = translator.translate(sources, from_flags(args, translator.defaults))
    assert [t.text for t in ours] == outputs["torch"]  # the API with the same options gives the CLI's output
    d = translator.defaults
    below_limit = [i for i, r in enumerate(ours)
                   if len(r.target_ids) < int((len(r.source_ids) + 1) * d.max_len_a + d.max_len_b)]
    assert len(outputs["ctranslate2"]) == len(sources) and len(below_limit) >= 10  # a 30-step toy: many reach it
    assert [outputs["ctranslate2"][i] for i in below_limit] == [outputs["torch"][i] for i in below_limit]
    assert sum(a == b for a, b in zip(outputs["ctranslate2"], outputs["torch"])) >= 0.95 * len(sources)


def test_gnmt_ranking_of_ctranslate2s_finished_hypotheses_gives_our_n_best(toy_ckpt, tmp_path):
    """GNMT's penalty on the CTranslate2 engine: its beam_size finished hypotheses, unpenalised,
    ranked by nmt. Compared where every one of our hypotheses ended before the length limit (at
    the limit the engines differ by definition, see above). With min_len 1, CTranslate2
    renormalises the first step's distribution without EOS and our search does not (fairseq's
    way): its log-probabilities are then ours plus one constant per sentence, log 1/(1 - P(EOS))."""
    export_ctranslate2(load_model(toy_ckpt), tmp_path / "ct2")
    ours = Translator.from_checkpoint(toy_ckpt)
    theirs = Translator.from_checkpoint(tmp_path / "ct2", engine="ctranslate2")
    d = ours.defaults
    sources = [src for src, _ in toy_reverse_split("test")][:60]
    winners = set()
    for alpha in (0.0, 1.0, 3.0):  # alpha changes which finished hypothesis wins
        a = ours.translate(sources, beam_size=4, n_best=3, alpha=alpha)
        b = theirs.translate(sources, beam_size=4, n_best=3, alpha=alpha)
        ended = [i for i, t in enumerate(a)
                 if all(len(h.tokens) < int((len(t.source_ids) + 1) * d.max_len_a + d.max_len_b) for h in t.hypotheses)]
        assert len(ended) >= 10
        same = [i for i in ended if [h.tokens for h in a[i].hypotheses] == [h.tokens for h in b[i].hypotheses]]
        assert len(same) >= 0.9 * len(ended), (alpha, len(same), len(ended))
        for i in same:
            shift = [hb.logprob - ha.logprob for ha, hb in zip(a[i].hypotheses, b[i].hypotheses)]
            assert shift == pytest.approx([shift[0]] * len(shift), abs=1e-3) and shift[0] >= -1e-4
        winners |= {(i, tuple(a[i].target_ids)) for i in same}
    assert len(winners) > len({i for i, _ in winners})  # alpha changed some winner: the ranking was exercised


def test_ctranslate2_engine_through_the_api(toy_ckpt, tmp_path):
    export_ctranslate2(load_model(toy_ckpt), tmp_path / "ct2")
    ours = Translator.from_checkpoint(toy_ckpt)
    for int8 in (False, True):
        theirs = Translator.from_checkpoint(tmp_path / "ct2", engine="ctranslate2", int8=int8)
        assert (theirs.src_lang, theirs.tgt_lang) == (ours.src_lang, ours.tgt_lang)
        results = theirs.translate(["a b c", "", "d e"], beam_size=3, n_best=2, attention=True)
        assert [r.source for r in results] == ["a b c", "", "d e"] and results[1].text == ""
        assert len(results[0].hypotheses) == 2 and results[0].hypotheses[0].score >= results[0].hypotheses[1].score
        att = torch.from_numpy(results[0].attention)  # (target pieces + EOS, source pieces + EOS), rows sum to 1
        assert att.shape == (len(results[0].target_ids) + 1, len(results[0].source_ids) + 1)
        torch.testing.assert_close(att.sum(-1), torch.ones(att.size(0)), atol=1e-4, rtol=0)


def test_both_engines_stop_outputs_at_the_positional_table(toy_ckpt, tmp_path):
    """a * src_len + b beyond the model's positions (64 in the toy): both engines stop at 63 tokens
    (BOS and all but the final EOS take a position) instead of CTranslate2 failing on position 64."""
    export_ctranslate2(load_model(toy_ckpt), tmp_path / "ct2")
    cap = load_model(toy_ckpt).cfg.model.max_positions - 1
    options = dict(beam_size=2, max_len_b=500, min_len=cap)  # no EOS before the cap: every output reaches it
    for translator in (Translator.from_checkpoint(toy_ckpt),
                       Translator.from_checkpoint(tmp_path / "ct2", engine="ctranslate2")):
        results = translator.translate(["a b c d e f g h", "j"], **options)
        assert [len(r.target_ids) for r in results] == [cap, cap]


class NeverEndingTranslator:
    """A scripted ctranslate2.Translator: every hypothesis runs to max_decoding_length without EOS.
    Records (number of examples, max_decoding_length, asynchronous) per call."""

    def __init__(self, piece: str) -> None:
        self.piece, self.calls = piece, []

    def translate_batch(self, pieces, *, max_decoding_length, asynchronous=False, **_):
        self.calls.append((len(pieces), max_decoding_length, asynchronous))
        results = [SimpleNamespace(hypotheses=[[self.piece] * max_decoding_length], scores=[-1.0]) for _ in pieces]
        return [SimpleNamespace(result=lambda r=r: r) for r in results] if asynchronous else results


def test_ctranslate2_engine_keeps_each_sentences_own_length_limit(toy_ckpt, tmp_path):
    """CTranslate2 takes one length limit per call. With a translator that never ends, each of 38
    rows of many limits int(0.5 * (len + 1)), several of the engine's tiers, must stop at its own
    limit; the calls (one per tier, then one per limit that was overrun) run asynchronously."""
    export_ctranslate2(load_model(toy_ckpt), tmp_path / "ct2")
    engine = CTranslate2Engine(tmp_path / "ct2")
    engine.translator = scripted = NeverEndingTranslator(engine.tokenizer.tgt_pieces([10])[0])
    rows = [[10] * n + [EOS_ID] for n in range(3, 41)]  # n source pieces + EOS
    limits = [int(len(row) * 0.5) for row in rows]
    results = engine.decode(rows, DecodingOptions(beam_size=3, max_len_a=0.5, max_len_b=0))
    assert [len(nbest[0].tokens) for nbest in results] == limits
    tiers = {limit // LIMIT_TIER for limit in limits}
    assert len(tiers) >= 3
    tier_max = {t: max(limit for limit in limits if limit // LIMIT_TIER == t) for t in tiers}
    assert sorted(m for _, m, _ in scripted.calls[: len(tiers)]) == sorted(m + 1 for m in tier_max.values())
    # one call per tier, then one per other limit (a tier's largest was decoded at its own limit)
    assert len(scripted.calls) == len(set(limits))
    assert all(asynchronous for _, _, asynchronous in scripted.calls)


def test_int8_logprobs_stay_close_to_float32(toy_ckpt):
    loaded = load_model(toy_ckpt)
    quantized = quantize_int8(load_model(toy_ckpt).model)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(quantized.generator, dynamic_linear) and isinstance(quantized.encoder.layers[0].ffn.w1, dynamic_linear)
    tok = loaded.tokenizer
    for src, tgt in [(s, t) for s, t in toy_reverse_split("test")][:5]:
        src_ids, tgt_ids = tok.encode_src([src])[0], tok.encode_tgt([tgt])[0]
        fp32, int8 = our_logprobs(loaded.model, src_ids, tgt_ids), our_logprobs(quantized, src_ids, tgt_ids)
        assert not torch.equal(fp32, int8)  # it did quantize
        torch.testing.assert_close(int8, fp32, atol=0.1, rtol=0.05)


def test_export_and_engine_errors_are_one_line(toy_ckpt, tmp_path, capsys):
    loaded = load_model(toy_ckpt)
    rnn = dataclasses.replace(loaded, cfg=dataclasses.replace(loaded.cfg, model=dataclasses.replace(loaded.cfg.model, type="rnn")))
    with pytest.raises(ExportError, match="only Transformer checkpoints"):
        export_ctranslate2(rnn, tmp_path / "x")
    with pytest.raises(CheckpointError, match="not a CTranslate2 export"):
        CTranslate2Engine(tmp_path)
    cases = [
        (["--checkpoint", str(tmp_path), "--engine", "ctranslate2"], "not a CTranslate2 export by nmt-export"),
        (["--checkpoint", str(toy_ckpt), "--engine", "ctranslate2"], "not a CTranslate2 export by nmt-export"),
        (["--checkpoint", str(toy_ckpt), "--int8", "--device", "cuda"], "--device cuda"),
    ]
    for extra, message in cases:
        assert translate_cli.main([*extra, "--src", "xx", "--tgt", "yy", "-i", str(toy_ckpt)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert export_cli.main([str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
