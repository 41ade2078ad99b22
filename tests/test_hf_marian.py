"""Hugging Face Marian (OPUS-MT) models as nmt Transformers (nmt/hf_marian.py): a tiny random
MarianMTModel built here with `transformers` (offline), converted, computes the same logits as
ours on a padded batch, and greedy search picks the same tokens."""

from __future__ import annotations

import pytest
import torch
import transformers  # the test extra installs it: a broken install fails here, it is not skipped

from nmt.hf_marian import MarianError, convert_weights, model_config, vocabulary_order
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
    torch.testing.assert_close(mine[..., BOS_ID], mine[..., PAD_ID])  # both rows are Marian's start row


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


@pytest.mark.parametrize("change, message", [
    ({"model_type": "bart"}, "model_type is 'bart'"),
    ({"activation_function": "gelu"}, "activation_function 'gelu'"),
    ({"scale_embedding": False}, "scale_embedding is false"),
    ({"share_encoder_decoder_embeddings": False}, "separate source and target vocabularies"),
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


def marian_directory(tmp_path) -> tuple[object, object]:
    """A tiny random Marian model in the hub's layout, as `save_pretrained` and OPUS-MT lay it out:
    two SentencePiece models (their own ids unk 0, bos 1, eos 2, as OPUS-MT's), one vocab.json."""
    import sentencepiece as spm

    texts = {"src": ["a b c d e", "b c d", "c d e a", "e d c b a"] * 5, "tgt": ["f g h i j", "g h i", "h i j f"] * 5}
    models = {}
    for side, lines in texts.items():
        buffer = __import__("io").BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buffer, vocab_size=14,
                                       model_type="unigram", hard_vocab_limit=False, minloglevel=2)
        models[side] = buffer.getvalue()
    pieces = []
    for blob in models.values():
        proc = spm.SentencePieceProcessor(model_proto=blob)
        pieces += [proc.id_to_piece(i) for i in range(3, proc.get_piece_size()) if proc.id_to_piece(i) not in pieces]
    vocab = {"</s>": 0, "<unk>": 1, **{p: 2 + i for i, p in enumerate(pieces)}}
    vocab["<pad>"] = len(vocab)
    n = len(vocab)
    config = transformers.MarianConfig(vocab_size=n, d_model=16, encoder_layers=2, decoder_layers=2,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                       decoder_ffn_dim=32, activation_function="swish", scale_embedding=True,
                                       pad_token_id=n - 1, decoder_start_token_id=n - 1, eos_token_id=0,
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
    (tmp_path / "marian" / "tokenizer_config.json").write_text(json.dumps({"source_lang": "xx", "target_lang": "yy"}))
    return model, transformers.MarianTokenizer.from_pretrained(str(tmp_path / "marian"))


def test_nmt_import_gives_a_checkpoint_that_translates_as_marian_does(tmp_path):
    from nmt import Translator
    from tests.test_cli import run

    model, hf_tokenizer = marian_directory(tmp_path)
    proc = run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "marian"), str(tmp_path / "m.ckpt"))
    assert proc.returncode == 0, proc.stderr
    assert "xx->yy" in proc.stdout and "swish" in proc.stdout
    translator = Translator.from_checkpoint(tmp_path / "m.ckpt")
    assert translator.defaults.beam_size == 3  # generation_config.json's num_beams
    texts = ["a b c d", "e d c b a c", "b"]
    ours_ids = translator.tokenizer.encode_src(texts)
    order = vocabulary_order(hf_tokenizer.get_vocab(), model.config.to_dict())
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


def test_an_exported_checkpoint_runs_in_transformers_as_it_runs_here(toy_ckpt, tmp_path):
    """The toy model (interleaved positions, relu, no output bias: the paper's) written for
    transformers: MarianTokenizer gives our ids, MarianMTModel our logits and our greedy
    translations; imported again, the checkpoint computes the same logits."""
    from nmt import Translator
    from nmt.checkpoint import load_model
    from tests.test_cli import run

    proc = run("nmt.cli.export", "--format", "hf-marian", str(toy_ckpt), str(tmp_path / "hf"))
    assert proc.returncode == 0, proc.stderr
    hf_tokenizer = transformers.MarianTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.MarianMTModel.from_pretrained(str(tmp_path / "hf")).eval()
    ours = load_model(toy_ckpt)
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
    assert "# xx→yy Transformer trained with nmt" in (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    proc = run("nmt.cli.import_model", "--from", "hf-marian", str(tmp_path / "hf"), str(tmp_path / "again.ckpt"))
    assert proc.returncode == 0, proc.stderr
    again = load_model(tmp_path / "again.ckpt")
    assert again.tokenizer.tgt_vocab_size == ours.tokenizer.tgt_vocab_size  # our own layout: no extra row
    with torch.no_grad():
        torch.testing.assert_close(again.model(batch["input_ids"], make_pad_mask(batch["input_ids"]), tgt), mine,
                                   atol=1e-4, rtol=1e-4)


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
