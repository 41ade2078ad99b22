"""The data path at scale: the scale corpus, prepared data, shares per rank and per loader worker,
new orders per epoch, exact resume in every data mode, DDP that is the same training as one
process, and multi-node runs through torchrun (issue 15)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nmt.config import DataConfig, TokenizerConfig, load_config
from nmt.data import (BatchView, StreamingBatches, TokenBatchSampler, load_raw, open_prepared, prepare_corpus)
from nmt.tokenizer import train_tokenizer
from tests.conftest import ROOT, needs_shared
from tests.test_cli import QUICK, TOY, assert_one_line_error, losses, run

TOY_PREPARED = ["--set", "data.limit_train=3000"]


# -- the scale corpus -----------------------------------------------------------------------------

def test_scale_corpus_has_distinct_pairs_in_shards_built_from_the_shared_data(tmp_path):
    needs_shared("tatoeba-cmn", "train.zh")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scale_corpus.py"), "2500", str(tmp_path),
                           "--shard-size", "1000"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["shards"] == ["train-00000", "train-00001", "train-00002"]
    pairs = []
    for shard in manifest["shards"]:
        zh = (tmp_path / f"{shard}.zh").read_text("utf-8").splitlines()
        en = (tmp_path / f"{shard}.en").read_text("utf-8").splitlines()
        assert len(zh) == len(en)
        pairs += zip(zh, en)
    assert len(pairs) == 2500 and len(set(pairs)) == 2500
    base_en = set((ROOT.parent / "shared" / "data" / "tatoeba-cmn" / "train.en").read_text("utf-8").splitlines())
    assert any(en in base_en for _, en in pairs)  # single real pairs are among them
    assert np.mean([len(en.split()) for _, en in pairs]) > 1.8 * np.mean([len(e.split()) for e in base_en])
    assert sum(manifest["pairs_by_k"].values()) == 2500


# -- batch shares ----------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [2, 3, 4])
def test_sampler_shares_are_equal_disjoint_and_cover_every_sentence(world):
    rng = np.random.default_rng(world)
    src, tgt = rng.integers(1, 30, 997), rng.integers(1, 30, 997)
    shares = [TokenBatchSampler(src, tgt, max_tokens=120, seed=5, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # the same number of batches on every rank
    seen = [i for s in shares for batch in s for i in batch]
    assert sorted(seen) == list(range(997))  # disjoint, and together every sentence once
    for s in shares:
        for batch in s:
            assert len(batch) * (max(src[batch].max(), tgt[batch].max()) + 1) <= 120


def test_loader_workers_yield_the_batches_of_the_main_process():
    rng = np.random.default_rng(0)
    n = 400
    import datasets

    ids = [list(range(1, k + 1)) for k in rng.integers(1, 20, n)]
    ds = datasets.Dataset.from_dict({"src_ids": ids, "tgt_ids": ids})
    sampler = TokenBatchSampler(np.array([len(x) for x in ids]), np.array([len(x) for x in ids]), max_tokens=60, seed=2)

    def indices(workers: int) -> list[list[int]]:
        loader = DataLoader(BatchView(ds), batch_size=None, sampler=sampler, num_workers=workers)
        return [b["index"] for b in loader]

    alone = indices(0)
    assert indices(2) == alone
    assert sorted(i for b in alone for i in b) == list(range(n))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_batch_view_unmaps_the_corpus_pages_its_reads_mapped_in_and_reads_the_same_rows(tmp_path):
    import datasets

    from nmt.data import mapped_corpus_kb

    rng = np.random.default_rng(0)
    ids = [rng.integers(4, 8000, k).tolist() for k in rng.integers(5, 60, 60_000)]  # ~8 MB of Arrow
    datasets.Dataset.from_dict({"src_ids": ids, "tgt_ids": ids}).save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))

    def mapped_kb() -> int:
        return mapped_corpus_kb(ds)

    batches = [rng.integers(0, len(ids), 100).tolist() for _ in range(7)]
    kept = BatchView(ds, release_every=0)  # never releases
    expected = [kept[b] for b in batches]
    assert mapped_kb() > 1000  # 700 scattered rows map in most of the file

    view = BatchView(ds, release_every=7)
    got = [view[b] for b in batches]  # the 7th releases
    assert mapped_kb() == 0
    for g, e in zip(got + [view[batches[0]]], expected + [expected[0]]):  # and reading maps them again
        assert torch.equal(g["src"], e["src"]) and torch.equal(g["tgt_out"], e["tgt_out"])
    assert mapped_kb() > 0


@pytest.fixture
def distinct_corpus(tmp_path):
    """120 distinct pairs in 4 shard files (so the stream has 4 shards to share out)."""
    prefixes = []
    for shard in range(4):
        prefix = tmp_path / f"train-{shard}"
        words = [f"w{shard}x{i}" for i in range(30)]
        (prefix.with_suffix(".zh")).write_text("".join(f"{w} a b{' q' * (i % 4)}\n" for i, w in enumerate(words)),
                                               encoding="utf-8")
        (prefix.with_suffix(".en")).write_text("".join(f"{w} c\n" for w in words), encoding="utf-8")
        prefixes.append(str(prefix))
    cfg = DataConfig(source="text", train=prefixes, max_tokens=40, stream_buffer=8, max_len_ratio=10.0)
    raw = load_raw(cfg, "train")
    tok = train_tokenizer(raw["src"], raw["tgt"], TokenizerConfig(vocab_size=200))
    return cfg, tok


def _stream_texts(cfg, tok, *, rank=0, world=1, workers=0, passes=1, skip=0, seed=0) -> list[list[str]]:
    stream = StreamingBatches(load_raw(cfg, "train", streaming=True), tok, cfg, seed=seed, rank=rank,
                              world_size=world, passes=passes)
    stream.skip = skip
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [list(b["src_text"]) for b in loader]


def test_streamed_shares_per_rank_and_worker_are_disjoint_and_cover_the_corpus(distinct_corpus):
    cfg, tok = distinct_corpus
    texts = [t for rank in range(2) for b in _stream_texts(cfg, tok, rank=rank, world=2, workers=2) for t in b]
    assert len(texts) == 120 and len(set(texts)) == 120


def test_streamed_passes_reshuffle_and_a_seed_repeats_them(distinct_corpus):
    cfg, tok = distinct_corpus
    two = _stream_texts(cfg, tok, passes=2)
    n = len(_stream_texts(cfg, tok, passes=1))
    first, second = two[:n], two[n:]
    assert sorted(t for b in first for t in b) == sorted(t for b in second for t in b)
    assert first != second  # a new order every pass
    assert _stream_texts(cfg, tok, passes=2) == two  # the same for a seed
    assert _stream_texts(cfg, tok, passes=2, seed=1) != two


def test_streamed_resume_skips_exactly_the_delivered_batches_with_workers(distinct_corpus):
    cfg, tok = distinct_corpus
    full = _stream_texts(cfg, tok, workers=2, passes=2)
    for skip in (1, 4, 7):
        assert _stream_texts(cfg, tok, workers=2, passes=2, skip=skip) == full[skip:]


# -- prepared data ----------------------------------------------------------------------------------

def test_prepare_stores_tokenised_pairs_lengths_and_the_cleaning_counts(tmp_path, distinct_corpus, monkeypatch):
    cfg_data, _ = distinct_corpus
    cfg = load_config(TOY, ["tokenizer.vocab_size=200", "data.num_proc=2"])
    cfg.data = cfg_data
    cfg.data.num_proc, cfg.data.max_len = 2, 7  # sources have 6-9 pieces: some are dropped
    said: list[str] = []
    monkeypatch.setattr("nmt.data.SMALL_CORPUS_BYTES", 0)  # two processes even for this small corpus
    prepared = prepare_corpus(cfg, tmp_path / "prep", say=said.append)
    assert any("with 2 process(es)" in m for m in said)
    tok = prepared.tokenizer()
    raw = load_raw(cfg.data, "train")
    src, tgt = tok.encode_src(list(raw["src"])), tok.encode_tgt(list(raw["tgt"]))
    kept = [(s, t) for s, t in zip(src, tgt) if 0 < len(s) <= 7 and 0 < len(t) <= 7 and max(len(s), len(t)) / min(len(s), len(t)) <= 10]
    assert 0 < len(kept) < 120 and prepared.stats.read == 120 and prepared.stats.kept == len(kept) == len(prepared.dataset)
    assert prepared.stats.too_long == 120 - len(kept)
    stored = sorted(zip(map(tuple, prepared.dataset["src_ids"]), map(tuple, prepared.dataset["tgt_ids"])))
    assert stored == sorted((tuple(s), tuple(t)) for s, t in kept)
    assert [len(x) for x in prepared.dataset["src_ids"]] == prepared.src_lens.tolist()
    assert [len(x) for x in prepared.dataset["tgt_ids"]] == prepared.tgt_lens.tolist()
    assert not (tmp_path / "prep.partial").exists() and not (tmp_path / "prep" / ".work").exists()
    if Path("/proc/self/smaps").exists():  # opening mapped in every record batch's header: released
        from nmt.data import mapped_corpus_kb

        assert mapped_corpus_kb(open_prepared(tmp_path / "prep").dataset) == 0


def test_a_small_text_corpus_is_prepared_in_one_process(tmp_path, distinct_corpus):
    """datasets' pool can hang at its exit on small inputs (huggingface/datasets#6393)."""
    cfg_data, _ = distinct_corpus
    cfg = load_config(TOY, ["tokenizer.vocab_size=200"])
    cfg.data = cfg_data
    cfg.data.num_proc = 2
    said: list[str] = []
    prepare_corpus(cfg, tmp_path / "prep", say=said.append)
    assert any("with 1 process(es)" in m for m in said)


def test_prepared_data_made_with_other_settings_or_damaged_is_refused(tmp_path):
    out = tmp_path / "prep"
    made = run("nmt.cli.prepare", TOY, "--output", str(out), *TOY_PREPARED)
    assert made.returncode == 0, made.stderr[-2000:]
    again = run("nmt.cli.prepare", TOY, "--output", str(out), *TOY_PREPARED)
    assert again.returncode == 0 and "already prepared" in again.stderr
    other = run("nmt.cli.train", TOY, "--output-dir", str(tmp_path / "r"), "--set", f"data.prepared_dir={out}",
                "--set", "data.max_len=20", *TOY_PREPARED)
    assert_one_line_error(other, "was prepared with data.max_len=")
    (out / "lengths.npy").write_bytes(b"not numpy")
    damaged = run("nmt.cli.train", TOY, "--output-dir", str(tmp_path / "r2"), "--set", f"data.prepared_dir={out}",
                  *TOY_PREPARED)
    assert_one_line_error(damaged, "damaged prepared data")
    missing = run("nmt.cli.prepare", TOY)
    assert_one_line_error(missing, "no directory to write")


# -- exact resume in every data mode ----------------------------------------------------------------

def _straight_and_resumed(tmp_path: Path, mode: list[str], steps: int = 24, stop: int = 9) -> None:
    """Train `steps` steps in one go, and again stopped at `stop` then resumed: equal losses."""
    args = [*QUICK, "--set", "trainer.val_check_interval=6", "--no-test", *mode]
    straight = run("nmt.cli.train", TOY, "--output-dir", str(tmp_path / "straight"), "--set",
                   f"trainer.max_steps={steps}", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = run("nmt.cli.train", TOY, "--output-dir", str(tmp_path / "split"), "--set", f"trainer.max_steps={stop}", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run("nmt.cli.train", TOY, "--output-dir", str(tmp_path / "split"), "--resume", "--set",
                  f"trainer.max_steps={steps}", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(steps))
    for step in range(stop, steps):
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


@pytest.mark.slow  # two runs with loader workers, about 1-2 minutes; CI runs the slow tests too (.ci/run)
def test_prepared_path_with_two_loader_workers_resumes_exactly(tmp_path):
    prep = tmp_path / "prep"
    _straight_and_resumed(tmp_path, ["--set", f"data.prepared_dir={prep}", "--set", "trainer.num_workers=2",
                                     *TOY_PREPARED])
    assert (prep / "meta.json").is_file()  # nmt-train prepared it on first use


def test_subword_sampling_resumes_exactly_across_epochs(tmp_path):
    """tokenizer.sampling_alpha draws each epoch's pieces anew: stopped at step 9 (epoch 1 of the
    1,000 embedded HSK pairs' ~8 batches) and resumed, the losses of steps 9-23 equal an
    uninterrupted run's, epochs 2 and 3 included."""
    _straight_and_resumed(tmp_path, ["--set", "data.source=hsk", "--set", "data.src_lang=zh", "--set", "data.tgt_lang=en",
                                     "--set", "data.limit_train=1000", "--set", "data.max_len=48",
                                     "--set", "model.max_positions=128", "--set", "tokenizer.type=unigram",
                                     "--set", "tokenizer.vocab_size=1500", "--set", "tokenizer.sampling_alpha=0.3"])


@pytest.mark.slow  # two runs with loader workers, about 1-2 minutes; CI runs the slow tests too (.ci/run)
def test_streamed_path_with_two_loader_workers_resumes_exactly(tmp_path):
    _straight_and_resumed(tmp_path, ["--set", "data.streaming=true", "--set", "data.stream_buffer=500",
                                     "--set", "trainer.num_workers=2", "--set", "data.limit_train=1500"])


# -- DDP: the same training as one process ----------------------------------------------------------

def test_two_gloo_ranks_with_half_batches_train_like_one_process_with_the_whole_batch(tmp_path):
    """Dropout 0 (the toy config); each global batch is cut in two unequal halves (so a mean of
    the ranks' per-token losses would differ). Tolerance: relative 1e-5 on the losses of 12 steps,
    1e-4 on the weights (float32 sums in another order)."""
    results = {}
    for world in (1, 2):
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_equivalence.py"), str(world),
                               str(tmp_path / f"w{world}")], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[world] = json.loads((tmp_path / f"w{world}" / "result.json").read_text())
    one, two = results[1], results[2]
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert len(one["losses"]) == len(two["losses"]) == 12
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["tokens_per_rank"][0] != two["tokens_per_rank"][1]
    w1, w2 = torch.tensor(one["weights"]), torch.tensor(two["weights"])
    assert torch.allclose(w1, w2, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(w1, torch.tensor(one["initial_weights"]), rtol=1e-3)  # it did train


# -- several nodes through torchrun, killed and resumed ----------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_nodes(run_dir: Path, steps: int, *extra: str) -> list[subprocess.Popen]:
    port = _free_port()
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for node in (0, 1):
        cmd = [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "nmt.cli.train", TOY,
               "--output-dir", str(run_dir), "--set", "trainer.num_nodes=2", "--set", "trainer.devices=1",
               "--set", "trainer.strategy=ddp", "--set", "trainer.accelerator=cpu", "--set", f"trainer.max_steps={steps}",
               *QUICK, "--set", "trainer.val_check_interval=4", "--set", "trainer.val_bleu_sentences=10",
               "--set", "data.limit_valid=40", "--no-test", *extra]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    return procs


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]


@pytest.mark.slow  # six torchrun processes, about 1-2 minutes; CI runs the slow tests too (.ci/run)
def test_two_nodes_under_torchrun_train_are_killed_and_resume_exactly(tmp_path):
    prep = ["--set", f"data.prepared_dir={tmp_path / 'prep'}", *TOY_PREPARED]
    _wait(_torchrun_nodes(tmp_path / "straight", 20, *prep))
    killed = _torchrun_nodes(tmp_path / "split", 400, *prep)
    last = tmp_path / "split" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline and all(p.poll() is None for p in killed):
        time.sleep(0.02)
    for p in killed:  # SIGKILL both nodes, agents and workers
        _kill_tree(p.pid)
    for p in killed:
        p.communicate(timeout=60)
    assert last.is_file(), "no checkpoint before the kill"
    step = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= step < 20
    _wait(_torchrun_nodes(tmp_path / "split", 20, "--resume", *prep))
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert torch.load(last, weights_only=True)["global_step"] == 20
    for s in range(step, 20):
        assert b[s] == pytest.approx(a[s], rel=1e-5), s
