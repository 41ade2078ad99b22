"""Vocabulary shortlists (nmt/shortlist.py): the table is the Dice ranking computed by hand; the
decoding vocabulary of a batch holds every piece it must (frequent, the table's, forced); with a
shortlist of the whole vocabulary every decoder gives exactly its full-vocabulary output; the
CLI stores it in the checkpoint and both engines decode with it."""

from __future__ import annotations

import pytest
import torch

from nmt.checkpoint import load_model
from nmt.config import ModelConfig
from nmt.decoding.beam import beam_search
from nmt.decoding.greedy import greedy_decode
from nmt.decoding.options import DecodingOptions
from nmt.decoding.sampling import sample_decode
from nmt.models.transformer import Transformer
from nmt.shortlist import Shortlist, build_shortlist
from nmt.tokenizer import PAD_ID
from nmt.translator import TorchEngine
from tests.test_cli import assert_one_line_error, run


def test_the_table_ranks_target_pieces_by_dice_and_adds_the_most_frequent():
    # c(5)=2 c(6)=2; c(7)=2 c(8)=1 c(9)=1; c(5,7)=2 c(5,8)=1 c(6,7)=1 c(6,8)=1 c(6,9)=1 (repeats count once)
    # Dice 2c(s,t)/(c(s)+c(t)): (5,7)=1, (5,8)=2/3, (6,7)=1/2, (6,8)=2/3, (6,9)=2/3
    pairs = [([5, 6, 5], [7, 8]), ([5], [7, 7]), ([6], [9])]
    sl = build_shortlist(pairs, src_vocab=10, tgt_vocab=10, k=2, n_frequent=1, chunk=2)  # chunks split the pairs
    assert sl.table[5].tolist() == [7, 8]
    assert sl.table[6].tolist() == [8, 9]  # ties at 2/3: the lower id first; 7 (1/2) is cut by k=2
    assert sl.table[4].tolist() == [-1, -1]  # never seen
    assert sl.frequent.tolist() == [0, 1, 2, 3, 7]  # the special ids and the target piece in most pairs


def test_a_batch_decodes_over_the_frequent_the_tables_and_the_forced_pieces():
    g = torch.Generator().manual_seed(0)
    table = torch.randint(4, 500, (300, 8), generator=g, dtype=torch.int32)
    table[::7, 5:] = -1  # rows with fewer than k pieces
    sl = Shortlist(table=table, frequent=torch.tensor([0, 1, 2, 3, 40, 41], dtype=torch.int32))
    for trial in range(20):
        src = torch.randint(4, 300, (3, 6), generator=g)
        src[0, 4:] = PAD_ID
        forced = torch.randint(4, 500, (trial % 4,), generator=g).tolist()
        vocab = sl.candidates(src, forced)
        assert vocab[:4].tolist() == [0, 1, 2, 3] and bool((vocab.diff() > 0).all())  # sorted, no repeats
        expected = {*sl.frequent.tolist(), *forced, *(t for s in src.flatten().tolist() for t in table[s].tolist() if t >= 0)}
        assert set(vocab.tolist()) == expected


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=2, dropout=0.0, max_positions=64)
    return Transformer(cfg, src_vocab_size=60, tgt_vocab_size=60, shared_vocab=True).eval()


def test_a_shortlist_of_the_whole_vocabulary_gives_the_full_vocabulary_outputs():
    model = tiny_model()
    src = torch.randint(4, 60, (5, 7))
    src[2, 3:] = PAD_ID
    everything = torch.arange(60)
    for opts in (DecodingOptions(beam_size=4, n_best=3, min_len=0), DecodingOptions(beam_size=3, no_repeat_ngram_size=2)):
        full, listed = beam_search(model, src, opts), beam_search(model, src, opts, everything)
        assert [[h.tokens for h in n] for n in full] == [[h.tokens for h in n] for n in listed]
        assert [h.score for n in full for h in n] == pytest.approx([h.score for n in listed for h in n], abs=1e-5)
    assert greedy_decode(model, src) == greedy_decode(model, src, vocab=everything)
    sample = lambda vocab: sample_decode(model, src, top_k=5, generator=torch.Generator().manual_seed(1), vocab=vocab)  # noqa: E731
    assert sample(None) == sample(everything)


def test_every_output_token_comes_from_the_shortlist_and_a_bad_vocabulary_is_refused():
    model = tiny_model(1)
    src = torch.randint(4, 60, (4, 6))
    vocab = torch.tensor([0, 1, 2, 3, 10, 11, 12, 30])
    for nbest in beam_search(model, src, DecodingOptions(beam_size=3, n_best=3, no_repeat_ngram_size=1), vocab):
        for h in nbest:
            assert set(h.tokens) <= {1, 10, 11, 12, 30} and len(set(h.tokens)) == len(h.tokens)  # and the ban holds
    for ids in greedy_decode(model, src, vocab=vocab):
        assert set(ids) <= {1, 10, 11, 12, 30}  # UNK (1) is a candidate, as in full decoding
    with pytest.raises(ValueError, match="special ids 0-3"):
        beam_search(model, src, DecodingOptions(), torch.tensor([0, 2, 3, 10]))


def test_nmt_shortlist_stores_it_and_both_engines_decode_with_it(toy_ckpt, tmp_path):
    out = tmp_path / "listed.ckpt"
    proc = run("nmt.cli.shortlist", str(toy_ckpt), "-o", str(out), "--k", "3", "--frequent", "2")
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(out)
    assert loaded.shortlist is not None and loaded.shortlist.k == 3
    assert loaded.shortlist.frequent[:4].tolist() == [0, 1, 2, 3] and len(loaded.shortlist.frequent) == 6
    engine = TorchEngine(loaded)
    rows = [loaded.tokenizer.encode_src([line])[0] + [3] for line in ("a b c", "d e")]
    for nbest, row in zip(engine.decode(rows, DecodingOptions(shortlist=True)), rows):
        allowed = set(loaded.shortlist.candidates(torch.tensor([row])).tolist())
        assert set(nbest[0].tokens) <= allowed
    xx_yy = ("--src", "xx", "--tgt", "yy", "--shortlist")
    no_list = run("nmt.cli.translate", "--checkpoint", str(toy_ckpt), *xx_yy, stdin="a b c\n")
    assert_one_line_error(no_list, "no vocabulary shortlist")
    listed = run("nmt.cli.translate", "--checkpoint", str(out), *xx_yy, stdin="a b c\n")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1, listed.stderr
    # CTranslate2: nmt-export writes the vocabulary map; use_vmap decodes with it
    assert run("nmt.cli.export", str(out), str(tmp_path / "ct2")).returncode == 0
    vmap = (tmp_path / "ct2" / "vmap.txt").read_text(encoding="utf-8").splitlines()
    pieces = loaded.tokenizer.tgt_pieces(loaded.shortlist.frequent.tolist())
    assert vmap[0] == "\t" + " ".join(pieces)
    assert all(len(line.split("\t")) == 2 for line in vmap)
    ct2 = run("nmt.cli.translate", "--engine", "ctranslate2", "--checkpoint", str(tmp_path / "ct2"), *xx_yy,
              stdin="a b c\nd e\n")
    assert ct2.returncode == 0 and len(ct2.stdout.splitlines()) == 2, ct2.stderr
