"""SentencePiece wrapper: special ids in one place, joint/separate vocabularies, plain-data state."""

import pickle

import pytest

from nmt.config import TokenizerConfig
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, TokenizerError, train_tokenizer

ZH = ["我爱你。", "你好。", "谢谢你。", "他是老师。"] * 10
EN = ["I love you.", "Hello.", "Thank you.", "He is a teacher."] * 10


def test_special_ids_are_the_fixed_ones():
    tok = train_tokenizer(ZH, EN, TokenizerConfig(vocab_size=60))
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert tok.tgt_pieces([PAD_ID, UNK_ID, BOS_ID, EOS_ID]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_joint_vocabulary_round_trips_both_sides():
    tok = train_tokenizer(ZH, EN, TokenizerConfig(vocab_size=60))
    assert tok.joint and tok.src_vocab_size == tok.tgt_vocab_size
    ids = tok.encode_tgt(["Thank you."])[0]
    assert tok.decode_tgt(ids + [EOS_ID, 9, 9]) == "Thank you."  # stops at EOS
    assert tok.encode_src(["你好。"])[0] == tok.encode_tgt(["你好。"])[0]


def test_separate_vocabularies_and_plain_state(tmp_path):
    tok = train_tokenizer(ZH, EN, TokenizerConfig(type="bpe", vocab_size=40, joint=False))
    assert not tok.joint
    state = tok.state_dict()
    assert set(state) == {"src_model", "tgt_model", "src_normalize", "tgt_normalize", "vocab", "tgt_vocab"}
    assert state["vocab"] is None and state["tgt_vocab"] is None
    assert isinstance(state["src_model"], bytes) and isinstance(state["tgt_model"], bytes)
    assert state["src_normalize"] == [] and state["tgt_normalize"] == []  # plain types: no pickled objects
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode_src(["我爱你。"]) == tok.encode_src(["我爱你。"])
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path).encode_tgt(["Hello."]) == tok.encode_tgt(["Hello."])


def test_a_piece_table_gives_both_models_one_id_space(tmp_path):
    """Two models cut the text (as Marian's source.spm and target.spm do); the table's index is the
    id: its own order, shared by both sides; a piece it lacks is UNK."""
    models = train_tokenizer(ZH, EN, TokenizerConfig(vocab_size=40, joint=False))
    pieces = sorted({p for text in ZH for p in models._src.encode(text, out_type=str)} |
                    {p for text in EN for p in models._tgt.encode(text, out_type=str)}, reverse=True)
    table = ["<pad>", "<unk>", "<s>", "</s>"] + [p for p in pieces if "师" not in p]  # 师 left out
    tok = Tokenizer(src_model=models.src_model, tgt_model=models.tgt_model, vocab=table)
    assert tok.joint and tok.src_vocab_size == tok.tgt_vocab_size == len(table)
    (ids,) = tok.encode_src(["他是老师。"])
    assert tok.src_pieces(ids) == [p if p in table else "<unk>" for p in models._src.encode("他是老师。", out_type=str)]
    assert UNK_ID in ids and ids == [table.index(p) if p in table else UNK_ID
                                     for p in models._src.encode("他是老师。", out_type=str)]
    (en,) = tok.encode_tgt(["Thank you."])
    assert en == [table.index(p) for p in models._tgt.encode("Thank you.", out_type=str)]  # the table's ids
    assert tok.decode_tgt(en + [EOS_ID, 5]) == "Thank you." and tok.tgt_ids(tok.tgt_pieces(en)) == en
    again = Tokenizer.from_state_dict(pickle.loads(pickle.dumps(tok.state_dict())))
    assert again.vocab == table and again.encode_tgt(["Hello."]) == tok.encode_tgt(["Hello."])
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path).encode_src(["我爱你。"]) == tok.encode_src(["我爱你。"])
    with pytest.raises(TokenizerError, match="starts with <pad>, <unk>, <s>, </s>"):
        Tokenizer(src_model=models.src_model, vocab=["</s>", "<unk>", "<s>", "<pad>", "a"])


def test_a_target_piece_table_gives_the_target_side_ids_of_its_own(tmp_path):
    """Marian's separate vocabularies: a table per side, each its own id order."""
    models = train_tokenizer(ZH, EN, TokenizerConfig(vocab_size=40, joint=False))
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    src_table = specials + sorted({p for text in ZH for p in models._src.encode(text, out_type=str)})
    tgt_table = specials + sorted({p for text in EN for p in models._tgt.encode(text, out_type=str)}, reverse=True)
    tok = Tokenizer(src_model=models.src_model, tgt_model=models.tgt_model, vocab=src_table, tgt_vocab=tgt_table)
    assert not tok.joint and (tok.src_vocab_size, tok.tgt_vocab_size) == (len(src_table), len(tgt_table))
    (zh,) = tok.encode_src(["我爱你。"])
    assert zh == [src_table.index(p) for p in models._src.encode("我爱你。", out_type=str)]
    (en,) = tok.encode_tgt(["Thank you."])
    assert en == [tgt_table.index(p) for p in models._tgt.encode("Thank you.", out_type=str)]
    assert tok.decode_tgt(en) == "Thank you." and tok.tgt_ids(tok.tgt_pieces(en)) == en
    for again in (Tokenizer.from_state_dict(pickle.loads(pickle.dumps(tok.state_dict()))),
                  Tokenizer.load(tok.save(tmp_path)[0].parent)):
        assert again.tgt_vocab == tgt_table and again.encode_tgt(["Thank you."]) == [en]
        assert again.encode_src(["我爱你。"]) == [zh]
    with pytest.raises(TokenizerError, match="needs a source piece table"):
        Tokenizer(src_model=models.src_model, tgt_model=models.tgt_model, tgt_vocab=tgt_table)
