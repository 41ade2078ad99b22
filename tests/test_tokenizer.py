"""SentencePiece wrapper: special ids in one place, joint/separate vocabularies, plain-data state."""

import pickle

from nmt.config import TokenizerConfig
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer

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
    assert set(state) == {"src_model", "tgt_model", "src_normalize", "tgt_normalize"}
    assert isinstance(state["src_model"], bytes) and isinstance(state["tgt_model"], bytes)
    assert state["src_normalize"] == [] and state["tgt_normalize"] == []  # plain types: no pickled objects
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode_src(["我爱你。"]) == tok.encode_src(["我爱你。"])
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path).encode_tgt(["Hello."]) == tok.encode_tgt(["Hello."])
