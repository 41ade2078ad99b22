"""Hugging Face Marian (OPUS-MT) models as nmt Transformers (nmt/hf_marian.py): a tiny random
MarianMTModel built here with `transformers` (offline), converted, computes the same logits as
ours on a padded batch, and greedy and beam search pick the same tokens as `generate`."""

from __future__ import annotations

import pytest
import torch
import transformers  # the test extra installs it: a broken install fails here, it is not skipped

from nmt.hf_marian import BOS_OFFSET, MarianError, convert_weights, model_config, vocabulary_order
from nmt.masks import make_pad_mask
from nmt.models.transformer import Transformer
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


V = 20
VOCAB = {"</s>": 0, "<unk>": 1, **{f"▁{chr(97 + i)}": 2 + i for i in range(V - 3)}, "<pad>": V - 1}


def tiny_marian(tie: bool = True) -> tuple[object, dict]:
    hf = dict(model_type="marian", vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2,
              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
              activation_function="swish", scale_embedding=True, pad_token_id=V - 1, decoder_start_token_id=V - 1,
              eos_token_id=0, forced_eos_token_id=0, max_position_embeddings=64, tie_word_embeddings=tie,
              dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
              init_std=0.3)  # (not 0.02: attention far from uniform, so that q, k and v must each be right)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(transformers.MarianConfig(**{k: v for k, v in hf.items() if k != "model_type"}))
    with torch.no_grad():  # every parameter matters: the bias, the pad row and the LayerNorms are not at their init
        model.final_logits_bias.normal_(std=0.1)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
        model.model.shared.weight[V - 1].normal_()
    return model.eval(), hf


def converted(model, hf: dict) -> tuple[Transformer, list[int]]:
    order = vocabulary_order(VOCAB, hf)
    ours = Transformer(model_config(hf), src_vocab_size=len(order), tgt_vocab_size=len(order), shared_vocab=True)
    ours.load_state_dict(convert_weights(model.state_dict(), hf, order))
    return ours.eval(), order


@pytest.mark.parametrize("tie", [True, False])
def test_converted_logits_equal_marians_on_a_padded_batch(tie):
    model, hf = tiny_marian(tie)
    ours, order = converted(model, hf)
    to_ours = {hf_id: i for i, hf_id in enumerate(order) if i != BOS_ID}  # Marian id -> ours (pad: PAD)
    src_hf = [[5, 6, 7, 8, 0], [9, 10, 0, V - 1, V - 1]]  # ids + </s>, the second padded
    tgt_hf = [[11, 12, 13], [14, 15, 16]]
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(src_hf), attention_mask=torch.tensor(src_hf) != V - 1,
                       decoder_input_ids=torch.tensor([[V - 1] + t for t in tgt_hf])).logits  # (2, 4, V)
        src = torch.tensor([[to_ours[i] for i in row] for row in src_hf])
        assert src[1, -1] == PAD_ID and src[0, -1] == EOS_ID
        tgt_in = torch.tensor([[BOS_ID] + [to_ours[i] for i in t] for t in tgt_hf])
        mine = ours(src, make_pad_mask(src), tgt_in)  # (2, 4, V + 1)
    columns = [to_ours[h] for h in range(V)]  # our logit of each Marian id, in Marian's order
    torch.testing.assert_close(mine[..., columns], theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mine[..., BOS_ID], mine[..., PAD_ID] - BOS_OFFSET)  # Marian's start row, kept out
    torch.testing.assert_close(mine[..., columns].log_softmax(-1), theirs.log_softmax(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mine.log_softmax(-1)[..., columns], theirs.log_softmax(-1), atol=1e-4, rtol=1e-4)


def test_greedy_search_picks_marians_tokens():
    model, hf = tiny_marian(tie=False)  # (a tied random model only repeats its last token)
    ours, order = converted(model, hf)
    from nmt.decoding.greedy import greedy_decode

    src_hf = [[5, 6, 7, 8, 9, 0]]
    to_ours = {hf_id: i for i, hf_id in enumerate(order) if i != BOS_ID}
    with torch.no_grad():
        theirs = model.generate(torch.tensor(src_hf), num_beams=1, do_sample=False, max_new_tokens=13,  # 12 tokens, then EOS (forced at the limit, as ours)
                                bad_words_ids=[[V - 1]])[0, 1:].tolist()
    mine = greedy_decode(ours, torch.tensor([[to_ours[i] for i in src_hf[0]]]), max_len_a=0.0, max_len_b=12)[0]
    theirs = theirs[: theirs.index(0)] if 0 in theirs else theirs
    assert [order[i] for i in mine] == theirs and len(set(theirs)) >= 2


@pytest.mark.parametrize("eos_bias, min_len", [(2.0, 0), (2.5, 1)])
def test_beam_search_of_4_gives_generates_n_best_lists(eos_bias, min_len):
    """Beam 4, 4-best, length penalty |Y|^1 against generate(num_beams=4, early_stopping=True,
    length_penalty=1.0, min_new_tokens=min_len) on 16 random sources: the same best hypothesis
    with the same score every time, and the same 4-best list up to the one way the two searches
    differ by convention. We, as fairseq and CTranslate2, stop at the first K hypotheses that end;
    generate also takes the other candidates that end at that last step and keeps the best K. So
    where the lists differ, what only generate has ended at our last step and outscores what only
    we have. A bias on EOS makes outputs end before the length limit, where the searches differ by
    a second convention: generate gives the EOS it forces there log-probability 0, we its own."""
    import random

    from nmt.decoding.beam import beam_search
    from nmt.decoding.options import DecodingOptions

    model, hf = tiny_marian(tie=False)
    with torch.no_grad():
        model.final_logits_bias[0, 0] += eos_bias  # Marian's </s>
    ours, order = converted(model, hf)
    to_ours = {hf_id: i for i, hf_id in enumerate(order) if i != BOS_ID}
    opts = DecodingOptions(beam_size=4, n_best=4, length_penalty="length", alpha=1.0, min_len=min_len,
                           max_len_a=0.0, max_len_b=39)
    rng = random.Random(1)
    lengths, same, compared = set(), 0, 0
    for _ in range(16):
        src_hf = [rng.randrange(2, V - 1) for _ in range(rng.randrange(1, 9))] + [0]
        with torch.no_grad():
            out = model.generate(torch.tensor([src_hf]), num_beams=4, num_return_sequences=4, early_stopping=True,
                                 length_penalty=1.0, max_new_tokens=40, min_new_tokens=min_len, do_sample=False,
                                 bad_words_ids=[[V - 1]], output_scores=True, return_dict_in_generate=True)
            found = beam_search(ours, torch.tensor([[to_ours[i] for i in src_hf]]), opts)[0]
        rows = [row[1:] for row in out.sequences.tolist()]  # without the start token
        if any(row.index(0) >= 39 for row in rows):
            continue  # one reached the length limit (39 tokens, then EOS)
        theirs = {tuple(row[: row.index(0)]): score for row, score in zip(rows, out.sequences_scores.tolist())}
        mine = {tuple(order[i] for i in h.tokens): h.score for h in found}
        compared += 1
        assert next(iter(mine)) == next(iter(theirs))  # the best
        for tokens in mine.keys() & theirs.keys():
            assert mine[tokens] == pytest.approx(theirs[tokens], abs=1e-4)
        assert all(len(t) == max(map(len, mine)) for t in theirs.keys() - mine.keys())
        assert all(mine[t] <= min(theirs.values()) + 1e-4 for t in mine.keys() - theirs.keys())
        same += list(mine) == list(theirs)
        lengths |= {len(t) for t in theirs}
    assert compared >= 12 and same >= compared // 2  # (the lists differ on a few)
    assert len(lengths) >= 3  # hypotheses of several lengths: the length penalty took part


@pytest.mark.parametrize("change, message", [
    ({"model_type": "bart"}, "model_type is 'bart'"),
    ({"activation_function": "gelu"}, "activation_function 'gelu'"),
    ({"scale_embedding": False}, "scale_embedding is false"),
    ({"share_encoder_decoder_embeddings": False}, "need a whole-number decoder_vocab_size, got None"),
    ({"decoder_vocab_size": 30}, "decoder_vocab_size 30 differs from vocab_size 20"),
    ({"decoder_ffn_dim": 64}, "encoder_ffn_dim 32 and decoder_ffn_dim 64 differ"),
    ({"d_model": None}, "config.json has no 'd_model'"),
    ({"vocab_size": "20"}, "vocab_size must be a whole number, got '20'"),
])
def test_what_our_model_cannot_represent_is_named(change, message):
    _, hf = tiny_marian()
    changed = {k: v for k, v in {**hf, **change}.items() if v is not None}  # None: the key left out
    with pytest.raises(MarianError, match=message):
        model_config(changed)


def test_vocabularies_we_cannot_map_are_named():
    _, hf = tiny_marian()
    with pytest.raises(MarianError, match="has a <s> entry"):
        vocabulary_order({**VOCAB, "<s>": V}, {**hf, "vocab_size": V + 1})
    with pytest.raises(MarianError, match=">>xx<<"):
        vocabulary_order({**{k: v for k, v in VOCAB.items() if v != 5}, ">>fra<<": 5}, hf)
    with pytest.raises(MarianError, match="whole-number ids"):
        vocabulary_order({**VOCAB, "▁b": "3"}, hf)
    with pytest.raises(MarianError, match="vocab_size is 21"):
        vocabulary_order(VOCAB, {**hf, "vocab_size": V + 1})


def marian_directory(tmp_path, separate: bool = False) -> tuple[object, object]:
    """A tiny random Marian model in the hub's layout, as `save_pretrained` and OPUS-MT lay it out:
    two SentencePiece models (their own ids unk 0, bos 1, eos 2, as OPUS-MT's), one vocab.json
    (`separate`: a vocab.json for the source and a target_vocab.json, each `</s>`, `<unk>`, the
    pieces, `<pad>`, as transformers' converter writes them)."""
    import sentencepiece as spm

    texts = {"src": ["a b c d e", "b c d", "c d e a", "e d c b a"] * 5, "tgt": ["f g h i j", "g h i", "h i j f"] * 5}
    models = {}
    for side, lines in texts.items():
        buffer = __import__("io").BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buffer, vocab_size=14,
                                       model_type="unigram", hard_vocab_limit=False, minloglevel=2)
        models[side] = buffer.getvalue()
    tables = []  # the pieces of each vocabulary: one for both models, or one per model
    for blob in models.values():
        proc = spm.SentencePieceProcessor(model_proto=blob)
        if separate or not tables:
            tables.append([])
        tables[-1] += [proc.id_to_piece(i) for i in range(3, proc.get_piece_size()) if proc.id_to_piece(i) not in tables[-1]]
    vocabs = []
    for pieces in tables:
        vocabs.append({"</s>": 0, "<unk>": 1, **{p: 2 + i for i, p in enumerate(pieces)}})
        vocabs[-1]["<pad>"] = len(vocabs[-1])
    if separate:  # a size of its own (ids cannot be mixed up); <pad> at the same id: config.json has one
        vocabs[0]["▁x"] = len(vocabs[0])
    vocab = vocabs[0]
    n, n_tgt = len(vocabs[0]), len(vocabs[-1])
    config = transformers.MarianConfig(vocab_size=n, decoder_vocab_size=n_tgt,
                                       share_encoder_decoder_embeddings=not separate, d_model=16, encoder_layers=2, decoder_layers=2,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                       decoder_ffn_dim=32, activation_function="swish", scale_embedding=True,
                                       pad_token_id=n_tgt - 1, decoder_start_token_id=n_tgt - 1, eos_token_id=0,
                                       forced_eos_token_id=0, max_position_embeddings=64, init_std=0.3,
                                       tie_word_embeddings=False, dropout=0.0)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(std=0.1)
    model.generation_config.num_beams = 3  # (published as the model's beam; nmt-import takes it over)
    model.save_pretrained(tmp_path / "marian")
    (tmp_path / "marian" / "source.spm").write_bytes(models["src"])
    (tmp_path / "marian" / "target.spm").write_bytes(models["tgt"])
    import json

    (tmp_path / "marian" / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    settings = {"source_lang": "xx", "target_lang": "yy"}
    if separate:
        (tmp_path / "marian" / "target_vocab.json").write_text(json.dumps(vocabs[-1]), encoding="utf-8")
        settings["separate_vocabs"] = True
    (tmp_path / "marian" / "tokenizer_config.json").write_text(json.dumps(settings))
    return model, transformers.MarianTokenizer.from_pretrained(str(tmp_path / "marian"))


@pytest.mark.parametrize("separate", [False, True], ids=["joint", "separate"])
def test_nmt_import_gives_a_checkpoint_that_translates_as_marian_does(tmp_path, separate):
    from nmt import Translator
    from tests.test_cli import run

    model, hf_tokenizer = marian_directory(tmp_path, separate)
    proc = run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "marian"), str(tmp_path / "m.ckpt"))
    assert proc.returncode == 0, proc.stderr
    assert "xx->yy" in proc.stdout and "swish" in proc.stdout
    translator = Translator.from_checkpoint(tmp_path / "m.ckpt")
    assert translator.defaults.beam_size == 3  # generation_config.json's num_beams
    texts = ["a b c d", "e d c b a c", "b"]
    ours_ids = translator.tokenizer.encode_src(texts)
    assert translator.tokenizer.joint is not separate
    order = vocabulary_order(hf_tokenizer.encoder, model.config.to_dict(), "source" if separate else "joint")
    assert [[order[i] for i in ids] + [0] for ids in ours_ids] == hf_tokenizer(texts)["input_ids"]  # + </s>
    batch = hf_tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=12)
    expected = hf_tokenizer.batch_decode(out, skip_special_tokens=True)
    got = translator.translate(texts, beam_size=1, max_len_a=0.0, max_len_b=11)
    assert [t.text for t in got] == expected and any(expected)
    from nmt.checkpoint import load_model
    from nmt.export import export_ctranslate2

    export_ctranslate2(load_model(tmp_path / "m.ckpt"), tmp_path / "ct2")  # and on to CTranslate2
    ct2 = Translator.from_checkpoint(tmp_path / "ct2", engine="ctranslate2")
    assert [t.text for t in ct2.translate(texts, beam_size=1, max_len_a=0.0, max_len_b=11)] == expected


def test_nmt_import_names_what_it_cannot_use(tmp_path):
    from tests.test_cli import run

    marian_directory(tmp_path)
    (tmp_path / "marian" / "source.spm").unlink()
    proc = run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "marian"), str(tmp_path / "m.ckpt"))
    assert proc.returncode == 2 and "no source.spm" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "nothing"), str(tmp_path / "m.ckpt"))
    assert proc.returncode == 2 and "not a directory" in proc.stderr


def test_nmt_import_names_separate_vocabularies_that_do_not_fit_together(tmp_path):
    import json

    from tests.test_cli import run

    marian_directory(tmp_path, separate=True)
    directory = tmp_path / "marian"

    def error() -> str:
        proc = run("nmt.cli.import_model", "--from", "hf-marian", str(directory), str(tmp_path / "m.ckpt"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        return proc.stderr

    target = json.loads((directory / "target_vocab.json").read_text(encoding="utf-8"))
    (directory / "target_vocab.json").write_text(json.dumps({**target, "▁y": len(target)}), encoding="utf-8")
    assert f"marian/target_vocab.json has {len(target) + 1} entries but config.json's decoder_vocab_size is " \
           f"{len(target)}" in error()
    (directory / "target_vocab.json").unlink()
    assert "share_encoder_decoder_embeddings is False but there is no target_vocab.json" in error()
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    (directory / "target_vocab.json").write_text(json.dumps(target), encoding="utf-8")
    (directory / "config.json").write_text(json.dumps({**config, "share_encoder_decoder_embeddings": True}))
    assert "share_encoder_decoder_embeddings is True but there is a target_vocab.json" in error()
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer_config.json").write_text(json.dumps({"source_lang": "xx", "target_lang": "yy",
                                                                 "separate_vocabs": False}))
    assert "separate_vocabs is False but config.json's share_encoder_decoder_embeddings is False" in error()


@pytest.fixture(scope="module")
def toy_separate_ckpt(tmp_path_factory):
    """A toy-task checkpoint with a source and a target vocabulary of its own (tokenizer.joint false)."""
    from nmt.config import load_config
    from nmt.training.run import train
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml",
                      ["tokenizer.joint=false", "trainer.max_steps=20", "trainer.val_check_interval=20",
                       "trainer.val_bleu_sentences=8", "trainer.log_every_n_steps=1", "data.limit_train=1000"])
    return train(cfg, tmp_path_factory.mktemp("separate") / "run", test=False).run_dir / "checkpoints" / "last.ckpt"


def untied(ckpt, out):
    """`ckpt` with an output layer of its own (model.tie_embeddings false), not equal to the embeddings."""
    from nmt.checkpoint import read_checkpoint, write_checkpoint

    state = read_checkpoint(ckpt)
    state["nmt"]["config"]["model"] = {**state["nmt"]["config"]["model"], "tie_embeddings": False}
    weights = state["state_dict"]
    torch.manual_seed(0)
    weights["model.generator.weight"] = weights["model.generator.weight"].clone() + 0.5 * torch.randn_like(
        weights["model.generator.weight"])
    write_checkpoint(state, out)
    return out


@pytest.mark.parametrize("variant", ["joint-tied", "joint-untied", "separate-tied"])
def test_an_exported_checkpoint_runs_in_transformers_as_it_runs_here(variant, toy_ckpt, toy_separate_ckpt, tmp_path):
    """The toy model (interleaved positions, relu, no output bias: the paper's) written for
    transformers, with one vocabulary (tied or untied output layer) or two: MarianTokenizer gives
    our ids, MarianMTModel our logits and our greedy translations; imported again, the checkpoint
    computes the same logits."""
    from nmt import Translator
    from nmt.checkpoint import load_model
    from tests.test_cli import run

    toy_ckpt = {"joint-tied": toy_ckpt, "joint-untied": untied(toy_ckpt, tmp_path / "untied.ckpt"),
                "separate-tied": toy_separate_ckpt}[variant]
    proc = run("nmt.cli.export", "--format", "hf-marian", str(toy_ckpt), str(tmp_path / "hf"))
    assert proc.returncode == 0, proc.stderr
    hf_tokenizer = transformers.MarianTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.MarianMTModel.from_pretrained(str(tmp_path / "hf")).eval()
    ours = load_model(toy_ckpt)
    assert (ours.tokenizer.joint, ours.model.cfg.tie_embeddings) == (variant != "separate-tied", variant != "joint-untied")
    assert model.config.share_encoder_decoder_embeddings is ours.tokenizer.joint
    texts = ["a b c d e", "j i h", "c"]
    ids = ours.tokenizer.encode_src(texts)
    assert hf_tokenizer(texts)["input_ids"] == [row + [EOS_ID] for row in ids]
    batch = hf_tokenizer(texts, return_tensors="pt", padding=True)
    tgt = torch.tensor([[BOS_ID, 5, 6, 7], [BOS_ID, 8, 9, 10], [BOS_ID, 11, 12, 13]])
    with torch.no_grad():
        theirs = model(**batch, decoder_input_ids=tgt).logits
        mine = ours.model(batch["input_ids"], make_pad_mask(batch["input_ids"]), tgt)
        torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=1e-4)
        generated = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=12)
    translator = Translator.from_checkpoint(toy_ckpt)
    expected = [t.text for t in translator.translate(texts, beam_size=1, max_len_a=0.0, max_len_b=11)]
    assert hf_tokenizer.batch_decode(generated, skip_special_tokens=True) == expected and any(expected)
    assert model.generation_config.bad_words_ids == [[PAD_ID], [BOS_ID]]  # never generated, as here
    assert model.generation_config.min_new_tokens == translator.defaults.min_len == 1  # no empty output, as here
    assert "# xx→yy Transformer trained with nmt" in (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    proc = run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "hf"), str(tmp_path / "again.ckpt"))
    assert proc.returncode == 0, proc.stderr
    again = load_model(tmp_path / "again.ckpt")
    assert again.tokenizer.tgt_vocab_size == ours.tokenizer.tgt_vocab_size  # our own layout: no extra row
    with torch.no_grad():
        torch.testing.assert_close(again.model(batch["input_ids"], make_pad_mask(batch["input_ids"]), tgt), mine,
                                   atol=1e-4, rtol=1e-4)


def test_an_exported_checkpoint_beam_searches_in_transformers_as_here(toy_ckpt, tmp_path):
    """The export's generation_config.json carries the checkpoint's decoding (beam, |Y|^alpha,
    minimum length, stopping at K ended hypotheses): a plain `generate()` translates as
    nmt-translate does, wherever our output ends before our length limit (a * source + b, which
    generate cannot express: its limit is one max_length)."""
    from nmt import Translator
    from nmt.checkpoint import read_checkpoint, write_checkpoint
    from nmt.data import toy_reverse_split
    from tests.test_cli import run

    ckpt = read_checkpoint(toy_ckpt)
    ckpt["nmt"]["config"]["decoding"] = {**ckpt["nmt"]["config"]["decoding"], "beam_size": 4,
                                         "length_penalty": "length", "alpha": 0.5}
    write_checkpoint(ckpt, tmp_path / "beam4.ckpt")
    assert run("nmt.cli.export", "--format", "hf-marian", str(tmp_path / "beam4.ckpt"), str(tmp_path / "hf")).returncode == 0
    hf_tokenizer = transformers.MarianTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.MarianMTModel.from_pretrained(str(tmp_path / "hf")).eval()
    texts = [src for src, _ in toy_reverse_split("test")][:40]
    with torch.no_grad():
        theirs = hf_tokenizer.batch_decode(model.generate(**hf_tokenizer(texts, return_tensors="pt", padding=True)),
                                           skip_special_tokens=True)
    translator = Translator.from_checkpoint(tmp_path / "beam4.ckpt")
    d = translator.defaults
    mine = translator.translate(texts)
    ended = [i for i, t in enumerate(mine) if len(t.target_ids) < int((len(t.source_ids) + 1) * d.max_len_a + d.max_len_b)]
    assert len(ended) >= 10
    assert [theirs[i] for i in ended] == [mine[i].text for i in ended]


def test_what_marian_cannot_hold_is_refused(toy_ckpt, tmp_path):
    from nmt.checkpoint import read_checkpoint, write_checkpoint
    from tests.test_cli import run

    ckpt = read_checkpoint(toy_ckpt)
    ckpt["nmt"]["config"]["model"] = {**ckpt["nmt"]["config"]["model"], "norm_first": True}
    write_checkpoint(ckpt, tmp_path / "prenorm.ckpt")
    proc = run("nmt.cli.export", "--format", "hf-marian", str(tmp_path / "prenorm.ckpt"), str(tmp_path / "hf"))
    assert proc.returncode == 2 and "post-norm" in proc.stderr and "Traceback" not in proc.stderr


def test_an_imported_model_fine_tunes_then_translates_and_exports(tmp_path):
    """nmt-train --init-from an imported model: a config that repeats its model and vocabulary
    (the checkpoint's own, with other data and a short run), a few steps, then nmt-translate and
    nmt-export to CTranslate2 on the result."""
    import yaml

    from nmt.checkpoint import read_stored_model
    from tests.test_cli import run

    marian_directory(tmp_path)
    assert run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "marian"),
               str(tmp_path / "m.ckpt")).returncode == 0
    config = yaml.safe_load((tmp_path / "m.yaml").read_text(encoding="utf-8"))  # nmt-import wrote it
    assert config == read_stored_model(tmp_path / "m.ckpt").cfg.to_dict()
    config["data"] = {"source": "toy_reverse", "src_lang": "xx", "tgt_lang": "yy", "max_len": 32, "limit_train": 200}
    config["trainer"] = {"max_steps": 3, "val_check_interval": 3, "val_bleu_sentences": 8, "log_every_n_steps": 1}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    train = run("nmt.cli.train", str(tmp_path / "ft.yaml"), "--output-dir", str(tmp_path / "ft"), "--no-test",
                "--init-from", str(tmp_path / "m.ckpt"))
    assert train.returncode == 0, train.stderr[-2000:]
    assert "initialised from" in train.stdout
    tuned = tmp_path / "ft" / "checkpoints" / "last.ckpt"
    before, after = read_stored_model(tmp_path / "m.ckpt"), read_stored_model(tuned)
    assert after.tokenizer.vocab == before.tokenizer.vocab  # the imported vocabulary is kept
    assert not torch.equal(after.state["generator.bias"], before.state["generator.bias"])  # and it trained
    out = run("nmt.cli.translate", "--checkpoint", str(tuned), "--src", "xx", "--tgt", "yy", stdin="a b c\nd e\n")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2
    assert run("nmt.cli.export", str(tuned), str(tmp_path / "ct2")).returncode == 0
