"""Data loading from every source kind, cleaning counts and token-bucket batching."""

import json

import datasets
import numpy as np
import pytest

from nmt.batching import batch_starts, bucket_order, length_order
from nmt.config import DataConfig, TokenizerConfig, load_config
from nmt.data import (DataError, StreamingBatches, TokenBatchSampler, collate, encode_and_clean, hsk_split,
                      load_raw, make_batches, prepare_corpus, training_pairs)
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizer
from tests.conftest import ROOT, needs_shared
from tests.test_cli import TOY

PAIRS = [("你好。", "Hello."), ("谢谢你。", "Thank you."), ("他是老师。", "He is a teacher.")]


def rows(ds):
    return list(zip(ds["src"], ds["tgt"]))


def test_text_files_load_line_aligned(parallel_files):
    cfg = DataConfig(source="text", train=str(parallel_files / "train"))
    ds = load_raw(cfg, "train")
    assert len(ds) == 40 and ds[1] == {"src": "我爱你。", "tgt": "I love you."}


def test_text_files_of_different_lengths_fail_naming_both(tmp_path):
    (tmp_path / "a.zh").write_text("一\n二\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.zh has 2 lines but .*a\.en has 1"):
        load_raw(DataConfig(source="text", train=str(tmp_path / "a")), "train")


def test_invalid_utf8_names_file_and_line(tmp_path):
    (tmp_path / "a.zh").write_bytes("一\n二\n".encode() + b"\xff\xfe\n")
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.zh:3: invalid UTF-8"):
        load_raw(DataConfig(source="text", train=str(tmp_path / "a")), "train")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"file not found: .*nope\.zh"):
        load_raw(DataConfig(source="text", train=str(tmp_path / "nope")), "train")


@pytest.mark.parametrize("kind", ["tsv", "csv", "jsonl"])
def test_field_files_load_named_fields(tmp_path, kind):
    path = tmp_path / f"train.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"zh": z, "en": e, "id": i}, ensure_ascii=False) + "\n"
                                for i, (z, e) in enumerate(PAIRS)), encoding="utf-8")
    else:
        sep = "\t" if kind == "tsv" else ","
        path.write_text(f"id{sep}zh{sep}en\n" + "".join(f"{i}{sep}{z}{sep}{e}\n" for i, (z, e) in enumerate(PAIRS)),
                        encoding="utf-8")
    cfg = DataConfig(source=kind, train=str(path), src_field="zh", tgt_field="en")
    assert rows(load_raw(cfg, "train")) == PAIRS


def test_a_missing_field_is_a_clear_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"zh": "你好", "en": "hi"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data.tgt_field 'english' not found \(fields: zh, en\)"):
        load_raw(DataConfig(source="jsonl", train=str(path), src_field="zh", tgt_field="english"), "train")


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_dataset_with_a_translation_dict_loads_offline(tmp_path, streaming):
    """A local directory in the layout of a hub dataset (WMT-style `translation` dicts)."""
    repo = tmp_path / "wmt_like"
    repo.mkdir()
    for split in ("train", "validation"):
        datasets.Dataset.from_dict({"translation": [{"zh": z, "en": e} for z, e in PAIRS]}).to_parquet(
            str(repo / f"{split}-00000-of-00001.parquet"))
    cfg = DataConfig(source="hub", hub_name=str(repo), train="train", valid="validation",
                     src_field="translation.zh", tgt_field="translation.en")
    ds = load_raw(cfg, "valid", streaming=streaming)
    assert [(ex["src"], ex["tgt"]) for ex in ds] == PAIRS


def test_embedded_hsk_split_is_fixed_and_disjoint():
    train, valid, test = hsk_split("train"), hsk_split("valid"), hsk_split("test")
    assert (len(train), len(valid), len(test)) == (3844, 214, 214)
    assert not set(valid) & set(test) and not set(test) & set(train)
    assert hsk_split("test") == test  # deterministic
    assert len(set(train) | set(valid) | set(test)) == 4272


def test_cleaning_counts_and_drops_bad_pairs():
    ds = datasets.Dataset.from_dict({
        "src": ["a b", "", "a b c d e f g h i j", "a", "a b c"],
        "tgt": ["b a", "x", "j i h g f e d c b a", "a b c d e f", "c b a"]})
    tok = train_tokenizer(ds["src"], ds["tgt"], TokenizerConfig(type="bpe", vocab_size=30))
    kept, stats = encode_and_clean(ds, tok, DataConfig(max_len=8, max_len_ratio=3.0))
    assert (stats.read, stats.empty, stats.too_long, stats.ratio, stats.kept) == (5, 1, 1, 1, 2)
    assert kept["src"] == ["a b", "a b c"]


def test_batches_respect_max_tokens_and_cover_every_index_once():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 40, 500), rng.integers(1, 40, 500)
    batches = make_batches(src, tgt, max_tokens=300)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for b in batches:
        assert len(b) * (max(max(src[b]), max(tgt[b])) + 1) <= 300


def test_bucket_order_is_the_length_order_and_shuffles_only_within_equal_lengths():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, 12, 5000).astype(np.uint16), rng.integers(0, 12, 5000).astype(np.uint16)
    order, widths = bucket_order(src, tgt, chunk=700)  # chunks that split the buckets
    assert order.dtype == np.int32 and (order == length_order(src, tgt)).all()
    assert (widths == np.maximum(src, tgt)[order]).all()
    shuffled, _ = bucket_order(src, tgt, np.random.default_rng(1), chunk=700)
    assert sorted(shuffled.tolist()) == list(range(5000))
    keys = np.stack([np.maximum(src, tgt), tgt, src], axis=1)[shuffled].tolist()
    assert keys == sorted(keys)  # still sorted by (longer side, target, source)
    assert (shuffled != order).mean() > 0.9  # and the ties in a new order
    # the batches it gives are those of the plain sort: same widths, same cuts
    assert (batch_starts(src, tgt, shuffled, max_tokens=60, widths=widths)
            == batch_starts(src, tgt, order, max_tokens=60)).all()


def test_sampler_is_deterministic_for_a_seed_and_reshuffles_per_epoch():
    src = np.arange(1, 201) % 37 + 1
    make = lambda seed: TokenBatchSampler(src, src, max_tokens=100, seed=seed)  # noqa: E731
    a, b, c = make(1), make(1), make(2)
    assert list(a) == list(b)
    assert list(a) != list(c)
    a.set_epoch(1)
    assert list(a) != list(b)


def test_sampler_gives_each_rank_a_distinct_equal_share():
    src = np.arange(1, 301) % 23 + 1
    shares = [list(TokenBatchSampler(src, src, max_tokens=64, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1])
    seen = [i for share in shares for batch in share for i in batch]
    assert len(seen) == len(set(seen))  # no sentence on two ranks
    single = list(TokenBatchSampler(src, src, max_tokens=64, seed=3))
    assert len(single) - len(shares[0]) * 2 <= 1  # at most one batch dropped to even out


def test_sampler_skip_resumes_mid_epoch():
    src = np.arange(1, 101) % 11 + 1
    sampler = TokenBatchSampler(src, src, max_tokens=40, seed=0)
    full = list(sampler)
    sampler.skip(3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # the skip applies once


def weighted(weights, sizes=(100, 200, 50), **kw):
    corpus = np.repeat(np.arange(len(sizes)), sizes)
    lens = np.arange(len(corpus)) % 29 + 1
    return TokenBatchSampler(lens, lens, max_tokens=120, corpus=corpus, weights=weights, **kw), corpus, lens


def test_weighted_corpora_give_each_epoch_whole_copies_plus_a_fresh_share():
    sampler, corpus, lens = weighted([2, 0.25, 0], seed=5)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert all(len(b) * (lens[b].max() + 1) <= 120 for b in batches)
        drawn = np.concatenate(batches)
        counts = np.bincount(drawn, minlength=len(corpus))
        assert (counts[corpus == 0] == 2).all()  # weight 2: every sentence twice
        b = counts[corpus == 1]
        assert b.sum() == 50 and set(b.tolist()) == {0, 1}  # 0.25 of 200: 50 distinct sentences
        assert (counts[corpus == 2] == 0).all()  # weight 0: none
        assert len(drawn) == sampler.epoch_size() == 250
        epochs.append(set(np.flatnonzero(counts).tolist()) - set(np.flatnonzero(corpus == 0).tolist()))
    assert epochs[0] != epochs[1]  # another quarter in the next epoch
    again, _, _ = weighted([2, 0.25, 0], seed=5)
    again.set_epoch(1)
    assert list(again) == batches  # and the same quarter for the same (seed, epoch)


def test_weights_of_one_batch_as_no_weights_and_resume_mid_epoch():
    sampler, _, lens = weighted([1, 1, 1], seed=2)
    assert list(sampler) == list(TokenBatchSampler(lens, lens, max_tokens=120, seed=2))
    sampler, _, _ = weighted([0.5, 3, 1], seed=2)
    full = list(sampler)
    sampler.skip(4)
    assert list(sampler) == full[4:]


def test_weights_that_draw_nothing_are_an_error():
    with pytest.raises(DataError, match=r"draw no sentence per epoch \(corpus sizes \[2, 3\]\)"):
        weighted([0.1, 0], sizes=(2, 3))


def test_weighted_training_corpora_are_tagged_and_mixed_by_the_data_module(parallel_files, caplog):
    from nmt.config import from_dict
    from nmt.data import TranslationDataModule

    (parallel_files / "extra.zh").write_text("一\n二\n三\n四\n", encoding="utf-8")
    (parallel_files / "extra.en").write_text("one\ntwo\nthree\nfour\n", encoding="utf-8")
    cfg = from_dict({"data": {"source": "text", "train": [str(parallel_files / "train"), str(parallel_files / "extra")],
                              "train_weights": [0.5, 3], "valid": str(parallel_files / "valid"), "max_tokens": 64,
                              "max_len": 16},
                     "trainer": {"max_steps": 5}})
    raw = load_raw(cfg.data, "train")
    assert raw["corpus"] == [0] * 40 + [1] * 4
    tok = train_tokenizer(raw["src"], raw["tgt"], TokenizerConfig(type="bpe", vocab_size=100))
    dm = TranslationDataModule(cfg, tok)
    with caplog.at_level("INFO", logger="nmt"):
        dm.setup("fit")
    assert "train: 40 x 0.5 = 20; " in caplog.text and "extra: 4 x 3 = 12" in caplog.text
    drawn = [i for batch in dm.train_sampler() for i in batch]
    texts = [dm.train_ds[i]["tgt"] for i in drawn]
    assert len(drawn) == 32 and sum(t in ("one", "two", "three", "four") for t in texts) == 12


def test_collate_adds_bos_eos_and_pads():
    batch = collate({"src_ids": [[5, 6], [7]], "tgt_ids": [[8], [9, 10]], "src": ["x", "y"], "tgt": ["u", "v"]})
    assert batch["src"].tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert batch["tgt_in"].tolist() == [[BOS_ID, 8, PAD_ID], [BOS_ID, 9, 10]]
    assert batch["tgt_out"].tolist() == [[8, EOS_ID, PAD_ID], [9, 10, EOS_ID]]


def test_streaming_batches_cover_the_corpus_within_max_tokens(parallel_files):
    cfg = DataConfig(source="text", train=str(parallel_files / "train"), max_tokens=40, stream_buffer=16)
    tok = train_tokenizer(load_raw(cfg, "train")["src"], load_raw(cfg, "train")["tgt"],
                          TokenizerConfig(vocab_size=60))
    stream = StreamingBatches(load_raw(cfg, "train", streaming=True), tok, cfg, seed=0, passes=1)
    batches = list(stream)
    assert sum(b["src"].size(0) for b in batches) == stream.stats.kept == 40
    assert all(b["src"].numel() <= 40 and b["tgt_out"].numel() <= 40 for b in batches)


def test_shared_tatoeba_splits_load_as_configured_in_transformer_small():
    needs_shared("tatoeba-cmn", "valid.zh")
    cfg = load_config(ROOT / "configs" / "transformer_small.yaml").data
    cfg.valid = str(ROOT / cfg.valid)  # the config's paths are relative to the repository root
    ds = load_raw(cfg, "valid")
    assert len(ds) == 2000 and all(ds["src"][:50]) and all(ds["tgt"][:50])


def _sampling_module(parallel_files, **tokenizer):
    from nmt.config import from_dict
    from nmt.data import TranslationDataModule

    cfg = from_dict({"data": {"source": "text", "train": str(parallel_files / "train"), "valid": str(parallel_files / "valid"),
                              "max_tokens": 64, "max_len": 16},
                     "tokenizer": {"type": "unigram", "vocab_size": 60, "sampling_alpha": 0.2, **tokenizer},
                     "trainer": {"max_steps": 5, "seed": 3}})
    raw = load_raw(cfg.data, "train")
    tok = train_tokenizer(raw["src"], raw["tgt"], cfg.tokenizer)

    def module():
        dm = TranslationDataModule(cfg, tok)
        dm.setup("fit")
        return dm

    return module, tok


def test_subword_sampling_cuts_every_epoch_anew_the_same_for_a_seed_and_batches_by_the_drawn_lengths(parallel_files):
    """tokenizer.sampling_alpha: each epoch's pieces are another segmentation of the same text, a
    pure function of (seed, epoch); the sampler batches by the drawn lengths and the batches carry
    the drawn ids."""
    from nmt.data import BatchView

    module, tok = _sampling_module(parallel_files)
    dm = module()
    seg, everyone = dm.segmentation, list(range(len(dm.train_ds)))

    def pieces(segmentation, epoch):
        segmentation.set_epoch(epoch)
        return segmentation.rows(everyone)

    best, e0, e1 = list(dm.train_ds["tgt_ids"]), pieces(seg, 0), pieces(seg, 1)
    assert e0[1] != best and e1[1] != best and e0[1] != e1[1]  # (the Chinese side: one piece per character)
    assert np.diff(seg.nbest[1].starts).max() > 16  # some candidates are longer than data.max_len ...
    assert all(len(row) <= 16 for side in e1 for row in side)  # ... and never drawn
    assert [tok.decode_tgt(ids) for ids in e1[1]] == list(dm.train_ds["tgt"])  # the same text, other pieces
    assert pieces(module().segmentation, 1) == e1  # the same seed and epoch, another process's start: the same pieces
    assert [a.tolist() for a in seg.lengths(1)] == [[len(r) for r in side] for side in e1]
    sampler, view = dm.train_sampler(), BatchView(dm.train_ds, segmentation=seg)
    sampler.set_epoch(1)
    served = 0
    for indices in sampler:
        batch = view[indices]
        assert len(indices) * (max(len(e1[1][i]) for i in indices) + 1) <= 64  # drawn lengths + EOS
        for row, i in enumerate(indices):
            assert batch["tgt_out"][row, : len(e1[1][i]) + 1].tolist() == e1[1][i] + [EOS_ID]
            assert batch["src"][row, : len(e1[0][i]) + 1].tolist() == e1[0][i] + [EOS_ID]
        served += len(indices)
    assert served == len(dm.train_ds)


def test_subword_sampling_draws_each_segmentation_with_probability_p_to_the_alpha(parallel_files):
    """Over many epochs a sentence takes its candidate x_j with frequency P(x_j)^a / sum_k P(x_k)^a,
    where log P is the sum of the pieces' unigram log-probabilities (Kudo, 2018, l-best sampling)."""
    module, tok = _sampling_module(parallel_files, sampling_alpha=0.5, sampling_nbest=4)
    seg = module().segmentation
    found = seg.nbest[1]
    text = int(np.argmax(np.diff(found.first)))  # a sentence with the most candidates
    cands = list(range(found.first[text], found.first[text + 1]))
    assert len(cands) == 4
    model = tok._tgt
    for j in cands:  # the score is the pieces' log-probabilities summed ...
        assert found.scores[j] == pytest.approx(sum(model.get_score(i) for i in found.segmentation(j)), rel=1e-6)
    assert all(np.diff(found.scores[cands]) <= 1e-6)  # ... which orders them as SentencePiece's n-best search does
    expected = np.exp(0.5 * found.scores[cands])
    expected /= expected.sum()
    assert expected.max() < 0.95 and expected.min() < 0.1  # neither one certain draw nor uniform
    draws = np.array([seg.drawn(epoch)[1][text] for epoch in range(4000)])
    seen = np.array([(draws == j).mean() for j in cands])
    assert np.abs(seen - expected).max() < 0.03, (seen, expected)


def test_drop_pattern_drops_matching_training_pairs_in_every_data_mode(tmp_path, parallel_files):
    """data.drop_pattern: a pair goes when either side matches as a whole, in memory, streamed,
    prepared and in the tokenizer's text; validation keeps it."""
    for split in ("train", "valid"):  # 2 placeholders in English, 1 in Chinese, 1 that only contains the word
        with open(parallel_files / f"{split}.zh", "a", encoding="utf-8") as zh, \
                open(parallel_files / f"{split}.en", "a", encoding="utf-8") as en:
            zh.write("树在风中摆动。\n政府发布了通知。\nplaceholder\n这不是。\n")
            en.write("placeholder-p1\n placeholder \nIt is not.\nNot a placeholder.\n")
    pattern = r"placeholder(-[a-z]\d+)?"
    cfg = load_config(TOY, ["data.source=text", f"data.train={parallel_files / 'train'}",
                            f"data.valid={parallel_files / 'valid'}", "data.max_tokens=40", "data.stream_buffer=16",
                            "data.max_len_ratio=10", "data.src_lang=zh", "data.tgt_lang=en", "tokenizer.vocab_size=60",
                            f"data.drop_pattern={pattern}"])
    d = cfg.data
    assert [ex["tgt"] for ex in training_pairs(d)][-1] == "Not a placeholder."
    assert len(list(training_pairs(d))) == 41  # 40 + 4 - 3
    tok = train_tokenizer([ex["src"] for ex in training_pairs(d)], [ex["tgt"] for ex in training_pairs(d)],
                          TokenizerConfig(vocab_size=60))

    kept, stats = encode_and_clean(load_raw(d, "train"), tok, d)  # in memory
    assert (stats.read, stats.pattern, stats.kept) == (44, 3, 41) and "3 matching data.drop_pattern" in str(stats)
    assert not {"placeholder-p1", "placeholder", "It is not."} & set(kept["tgt"])
    valid, valid_stats = encode_and_clean(load_raw(d, "valid"), tok, d, drop_pattern=False)
    assert valid_stats.kept == 24 and "placeholder-p1" in valid["tgt"]

    stream = StreamingBatches(load_raw(d, "train", streaming=True), tok, d, seed=0, passes=1)  # streamed
    texts = [t for b in stream for t in b["tgt_text"]]
    assert len(texts) == 41 and stream.stats.pattern == 3 and "It is not." not in texts

    prepared = prepare_corpus(cfg, tmp_path / "prep", say=lambda _: None)  # prepared (its own tokenizer)
    assert (prepared.stats.pattern, len(prepared.dataset)) == (3, 41)
    with pytest.raises(Exception, match="drop_pattern"):
        load_config(TOY, ["data.drop_pattern=placeholder(("])
