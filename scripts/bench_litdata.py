"""LitData vs Hugging Face `datasets` for the prepared training data, measured doing the same work.
A benchmark: nothing here asserts a time.

    python scripts/make_scale_corpus.py 1000000 /tmp/scale1m
    python3 -m venv /tmp/litvenv && /tmp/litvenv/bin/pip install torch==2.13.0   # CPU wheel first
    /tmp/litvenv/bin/pip install --no-deps litdata && /tmp/litvenv/bin/pip install boto3 filelock \\
        lightning-utilities numpy obstore requests tifffile urllib3 sentencepiece pyyaml   # not torchvision
    .venv/bin/python scripts/bench_litdata.py --corpus /tmp/scale1m --out /tmp/litbench \\
        --lit-python /tmp/litvenv/bin/python [--repeat 3] [--prepare-repeat 2] [--lit-batch-decode 0] \
        [--json docs/reports/litdata_vs_datasets.json]

Two interpreters: this script runs with the project's venv (the `datasets` path, nmt imported as
it is) and starts the LitData children with --lit-python, a separate venv holding litdata (the
project's venv is not changed). Do not let pip resolve litdata's torchvision: it is not needed and
an unpinned one upgrades torch to a CUDA build (GBs). The LitData children import only nmt.batching (numpy; the project's
length order and token-bucket rule) through PYTHONPATH. Every measurement is its own process; the
two paths alternate, --repeat times, and medians are reported with every value beside them. Memory
is the peak of the whole process tree (workers included), sampled every 0.2 s from /proc.

Same work on both sides: one SentencePiece model (trained once by a real `nmt-prepare` run of
configs/bench_scale.yaml, which is also measured), every pair read, stripped, encoded, cleaned by
the project's rule (max_len 128, ratio 3.0) and written with 2 processes; then loaders with 0, 1
and 2 workers forming batches of about 4,096 target tokens with the project's padding collate.

- datasets: `prepare_corpus(cfg, out, tokenizer=...)` (what nmt-prepare does, without training
  the tokenizer), `open_prepared` + `TokenBatchSampler` + `BatchView` in a torch DataLoader;
  resume = `TokenBatchSampler.skip(n)`.
- LitData: `litdata.optimize(fn, inputs=line ranges (byte offsets), num_workers=2,
  chunk_bytes="64MB")` writing {idx, src_ids, tgt_ids (numpy int32), src_len, tgt_len};
  `StreamingDataset(shuffle=True)` + `StreamingDataLoader`; resume = its state_dict.
  LitData has no sampler by length, so three batchings are measured:
    fixed    batch_size = N / (the project's batches per epoch): the same mean target tokens per
             batch, random lengths inside a batch (more padding);
    bucketed batch_size = a window of 20,000 samples (data.stream_buffer), cut by the collate into
             token batches with nmt.batching (the project's rule), shuffled inside the window;
    indexed  the project's TokenBatchSampler plan over LitData's random access (ds[i]) in a plain
             torch DataLoader, lengths from a side file: bucketing kept, LitData's streaming
             state (and its resume) given up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_data  # noqa: E402  (stdlib only: both interpreters import it)
from bench_data import _tree_rss, du  # noqa: E402

CONFIG = ROOT / "configs" / "bench_scale.yaml"
PAD, BOS, EOS = 0, 2, 3  # nmt.tokenizer's ids (not imported: the LitData venv has no nmt deps)
MAX_TOKENS, MAX_LEN, MAX_RATIO = 4096, 128, 3.0
WINDOW = 20_000  # bucketed: samples per window (the project's data.stream_buffer)
RANGE_LINES = 50_000  # LitData inputs: line ranges of this many pairs
SEED = 1


# -- helpers ------------------------------------------------------------------------------------------


def memory_status(pid: int | str = "self") -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = round(int(value.split()[0]) * 1024 / 1e9, 3)
    return {"rss_gb": fields.get("VmRSS"), "rss_anon_gb": fields.get("RssAnon"), "rss_file_gb": fields.get("RssFile")}


def digest(index) -> str:
    return hashlib.md5(",".join(str(int(i)) for i in index).encode()).hexdigest()[:16]


def pad(seqs: list[list[int]]):
    """nmt.data._pad, the same code."""
    import torch

    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate_samples(samples: list[dict]) -> dict:
    """nmt.data.collate for LitData samples (numpy arrays -> lists first, as datasets gives lists)."""
    src = [s["src_ids"].tolist() + [EOS] for s in samples]
    tgt = [s["tgt_ids"].tolist() for s in samples]
    return {"src": pad(src), "tgt_in": pad([[BOS] + t for t in tgt]), "tgt_out": pad([t + [EOS] for t in tgt]),
            "index": [int(s["idx"]) for s in samples]}


def collate_bucketed(samples: list[dict]) -> list[dict]:
    """One window of samples -> token batches (the project's length order and rule), shuffled."""
    import numpy as np

    from nmt.batching import batch_starts, length_order

    src_lens = np.array([s["src_len"] for s in samples])
    tgt_lens = np.array([s["tgt_len"] for s in samples])
    rng = np.random.default_rng([SEED, int(samples[0]["idx"])])
    order = length_order(src_lens, tgt_lens, rng.random(len(samples), dtype=np.float32))
    starts = batch_starts(src_lens, tgt_lens, order, max_tokens=MAX_TOKENS)
    groups = np.split(order, starts[1:])
    return [collate_samples([samples[i] for i in groups[g]]) for g in rng.permutation(len(groups))]


def collate_light(samples: list[dict]) -> dict:
    """Counting only (no padding): index and lengths of each sample."""
    import numpy as np

    return {"idx": np.array([s["idx"] for s in samples], dtype=np.int64),
            "src_len": np.array([s["src_len"] for s in samples], dtype=np.int32),
            "tgt_len": np.array([s["tgt_len"] for s in samples], dtype=np.int32)}


def batch_stats(batches: list[dict]) -> dict:
    import numpy as np

    tgt_real = sum(int((b["tgt_out"] != PAD).sum()) for b in batches)
    src_real = sum(int((b["src"] != PAD).sum()) for b in batches)
    spans = [(max(b["index"]) - min(b["index"])) for b in batches if len(b["index"]) > 1]
    return {"mean_sentences": round(sum(len(b["index"]) for b in batches) / len(batches), 1),
            "mean_target_tokens": round(tgt_real / len(batches)),
            "target_real_fraction": round(tgt_real / sum(b["tgt_out"].numel() for b in batches), 3),
            "source_real_fraction": round(src_real / sum(b["src"].numel() for b in batches), 3),
            "median_index_span": int(np.median(spans)) if spans else 0}


# -- LitData side (run with --lit-python) -------------------------------------------------------------


_SP = {}


def read_lines(path: str, start: int, end: int) -> list[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    return lines[:-1] if data.endswith(b"\n") else lines


def lit_encode_range(item, model: str):
    """optimize fn: one line range of the corpus -> kept samples (the project's strip/encode/clean)."""
    import numpy as np
    import sentencepiece as spm

    if model not in _SP:
        _SP[model] = spm.SentencePieceProcessor(model_file=model)
    sp = _SP[model]
    first, (zh, zs, ze), (en, es, ee) = item
    zh_lines, en_lines = read_lines(zh, zs, ze), read_lines(en, es, ee)
    assert len(zh_lines) == len(en_lines)
    for b in range(0, len(zh_lines), 2000):  # nmt.data._encoded_rows encodes batches of 2,000
        src = [x.decode("utf-8").rstrip("\r\n").strip() for x in zh_lines[b:b + 2000]]
        tgt = [x.decode("utf-8").rstrip("\r\n").strip() for x in en_lines[b:b + 2000]]
        src_ids, tgt_ids = sp.encode(src), sp.encode(tgt)
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
            ls, lt = len(s), len(t)
            if ls == 0 or lt == 0 or ls > MAX_LEN or lt > MAX_LEN or max(ls, lt) / max(min(ls, lt), 1) > MAX_RATIO:
                continue  # nmt.data.drop_reasons: empty, too_long, ratio
            yield {"idx": first + b + i, "src_ids": np.asarray(s, dtype=np.int32),
                   "tgt_ids": np.asarray(t, dtype=np.int32), "src_len": ls, "tgt_len": lt}


def lit_encode_range_u16(item, model: str):
    import numpy as np

    for sample in lit_encode_range(item, model):
        yield {**sample, "src_ids": sample["src_ids"].astype(np.uint16), "tgt_ids": sample["tgt_ids"].astype(np.uint16)}


def line_ranges(src: str, tgt: str, every: int) -> list:
    """[(first line, (src, start, end), (tgt, start, end))] of `every` lines: one pass per file."""
    def offsets(path: str) -> list[int]:
        out, pos, n = [0], 0, 0
        with open(path, "rb") as f:
            for line in f:
                pos += len(line)
                n += 1
                if n % every == 0:
                    out.append(pos)
        if out[-1] != pos:
            out.append(pos)
        return out, n

    (zo, nz), (eo, ne) = offsets(src), offsets(tgt)
    if nz != ne:
        raise SystemExit(f"{src} has {nz} lines, {tgt} {ne}")
    return [(i * every, (src, zo[i], zo[i + 1]), (tgt, eo[i], eo[i + 1])) for i in range(len(zo) - 1)]


def child_lit_prepare(spec: dict) -> dict:
    from litdata import optimize

    t0 = time.time()
    shutil.rmtree(spec["output"], ignore_errors=True)
    inputs = []
    for prefix in spec["shards"]:
        inputs += line_ranges(prefix + ".zh", prefix + ".en", RANGE_LINES)
    t1 = time.time()
    fn = lit_encode_range_u16 if spec.get("uint16") else lit_encode_range
    optimize(fn=partial(fn, model=spec["model"]), inputs=inputs, output_dir=spec["output"], num_workers=2,
             chunk_bytes="64MB", verbose=False)
    t2 = time.time()
    index = json.loads(Path(spec["output"], "index.json").read_text())
    return {"seconds": {"line_index": round(t1 - t0, 1), "optimize": round(t2 - t1, 1)},
            "chunks": len(index["chunks"]), "samples": sum(c["chunk_size"] for c in index["chunks"]),
            "inputs": len(inputs)}


def lit_dataset(path: str, shuffle: bool = True):
    from litdata import StreamingDataset

    decode = os.environ.get("BENCH_LIT_BATCH_DECODE", "auto")  # --lit-batch-decode
    return StreamingDataset(path, shuffle=shuffle, seed=SEED, batch_decode=int(decode) if decode.isdigit() else decode)


def lit_loader(path: str, variant: str, workers: int, batch_size: int):
    from litdata import StreamingDataLoader

    if variant == "indexed":
        return indexed_loader(path, workers)
    bs, fn = (batch_size, collate_samples) if variant == "fixed" else (WINDOW, collate_bucketed)
    return StreamingDataLoader(lit_dataset(path), batch_size=bs, num_workers=workers, collate_fn=fn)


class IndexedView:
    """LitData random access under the project's batch plan (like nmt.data.BatchView)."""

    def __init__(self, path: str) -> None:
        self.path, self.ds = path, None

    def __len__(self) -> int:
        return len(lit_dataset(self.path, shuffle=False))

    def __getitem__(self, indices):
        if self.ds is None:
            self.ds = lit_dataset(self.path, shuffle=False)
        return collate_samples([self.ds[i] for i in indices])


def project_plan(src_lens, tgt_lens, seed: int, epoch: int = 0, rank: int = 0, world: int = 1):
    """TokenBatchSampler.plan's batches (same rng use), without importing nmt.data."""
    import numpy as np

    from nmt.batching import batch_starts, length_order

    rng = np.random.default_rng([seed, epoch])
    order = length_order(src_lens, tgt_lens, rng.random(len(src_lens), dtype=np.float32))
    starts = batch_starts(src_lens, tgt_lens, order, max_tokens=MAX_TOKENS)
    ends = np.append(starts[1:], len(order))
    pick = rng.permutation(len(starts))[rank::world]
    return [order[a:b].tolist() for a, b in zip(starts[pick].tolist(), ends[pick].tolist())]


def indexed_loader(path: str, workers: int):
    import numpy as np
    from torch.utils.data import DataLoader

    lengths = np.load(Path(path) / "lengths_in_index_order.npy")
    return DataLoader(IndexedView(path), batch_size=None, sampler=project_plan(lengths[:, 0], lengths[:, 1], SEED),
                      num_workers=workers)


def flat(loader, variant: str):
    for item in loader:
        if variant == "bucketed":
            yield from item
        else:
            yield item


def child_lit_verify(spec: dict) -> dict:
    """Counts against the project's meta; lengths in LitData's index order (for 'indexed')."""
    import numpy as np
    from litdata import StreamingDataLoader

    ds = lit_dataset(spec["prepared"], shuffle=False)
    idx, lens = [], []
    for b in StreamingDataLoader(ds, batch_size=WINDOW, num_workers=0, collate_fn=collate_light):
        idx.append(b["idx"])
        lens.append(np.stack([b["src_len"], b["tgt_len"]], axis=1))
    idx, lens = np.concatenate(idx), np.concatenate(lens)
    np.save(Path(spec["prepared"]) / "lengths_in_index_order.npy", lens.astype(np.uint16))
    probe = lit_dataset(spec["prepared"], shuffle=False)
    rng = np.random.default_rng(0)
    checks = [int(probe[int(i)]["idx"]) == int(idx[i]) for i in rng.integers(0, len(idx), 50)]
    return {"samples": int(len(idx)), "unique_idx": int(len(np.unique(idx))), "src_tokens": int(lens[:, 0].sum()),
            "tgt_tokens": int(lens[:, 1].sum()), "index_order_matches_getitem": all(checks),
            "dataset_len": len(ds)}


def child_lit_dist(spec: dict) -> dict:
    """Two ranks (gloo, CPU), one worker each, one epoch: samples and batches per rank."""
    import torch.multiprocessing as mp

    out = Path(spec["work"])
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_lit_dist_rank, args=(spec,), nprocs=2, join=True)
    ranks = [pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    import numpy as np

    a, b = (set(r.pop("idx").tolist()) for r in ranks)
    return {"ranks": ranks, "overlap_samples": len(a & b), "union_samples": len(a | b)}


def _lit_dist_rank(rank: int, spec: dict) -> None:
    import numpy as np
    import torch.distributed as dist
    from litdata import StreamingDataLoader

    from nmt.batching import batch_starts, length_order

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    result = {"rank": rank}
    loader = StreamingDataLoader(lit_dataset(spec["prepared"]), batch_size=spec["batch_size"], num_workers=1,
                                 collate_fn=collate_light)
    sizes, idx = [], []
    for b in loader:
        sizes.append(len(b["idx"]))
        idx.append(b["idx"])
    result.update(drop_last=loader.dataset.drop_last, fixed_batches=len(sizes), samples=int(sum(sizes)),
                  last_batch_size=sizes[-1])
    loader = StreamingDataLoader(lit_dataset(spec["prepared"]), batch_size=WINDOW, num_workers=1,
                                 collate_fn=collate_light)
    token_batches = 0
    for b in loader:
        order = length_order(b["src_len"], b["tgt_len"])
        token_batches += len(batch_starts(b["src_len"], b["tgt_len"], order, max_tokens=MAX_TOKENS))
    result["bucketed_batches"] = token_batches
    loader = StreamingDataLoader(lit_dataset(spec["prepared"]), batch_size=WINDOW, num_workers=1,
                                 collate_fn=collate_light, drop_last=False)
    token_batches, samples = 0, 0
    for b in loader:
        order = length_order(b["src_len"], b["tgt_len"])
        token_batches += len(batch_starts(b["src_len"], b["tgt_len"], order, max_tokens=MAX_TOKENS))
        samples += len(b["idx"])
    result.update(bucketed_batches_no_drop_last=token_batches, samples_no_drop_last=samples)
    result["idx"] = np.concatenate(idx)
    Path(spec["work"], f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    dist.destroy_process_group()


# -- datasets side (the project's venv) ----------------------------------------------------------------


def child_ds_prepare(spec: dict) -> dict:
    from nmt.config import load_config
    from nmt.data import prepare_corpus
    from nmt.tokenizer import Tokenizer

    cfg = load_config(CONFIG, [f"data.train=[{','.join(spec['shards'])}]", "data.num_proc=2"])
    out = Path(spec["output"])
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    prepared = prepare_corpus(cfg, out, tokenizer=Tokenizer.load(spec["tokenizer"]), say=lambda m: None)
    return {"seconds": {"prepare_corpus": round(time.time() - t0, 1), **prepared.meta["seconds"]},
            "pairs": prepared.meta["pairs"], "src_tokens": prepared.meta["src_tokens"],
            "tgt_tokens": prepared.meta["tgt_tokens"]}


def ds_loader(path: str, workers: int, skip: int = 0):
    from torch.utils.data import DataLoader

    from nmt.data import BatchView, TokenBatchSampler, open_prepared

    prepared = open_prepared(Path(path))
    sampler = TokenBatchSampler(prepared.src_lens, prepared.tgt_lens, max_tokens=MAX_TOKENS, seed=SEED)
    if skip:
        sampler.skip(skip)
    return DataLoader(BatchView(prepared.dataset), batch_size=None, sampler=sampler, num_workers=workers)


def child_ds_plan(spec: dict) -> dict:
    import numpy as np

    from nmt.data import TokenBatchSampler, open_prepared

    p = open_prepared(Path(spec["prepared"]))
    one = TokenBatchSampler(p.src_lens, p.tgt_lens, max_tokens=MAX_TOKENS, seed=SEED)
    ranks = [TokenBatchSampler(p.src_lens, p.tgt_lens, max_tokens=MAX_TOKENS, seed=SEED, rank=r, world_size=2)
             for r in range(2)]
    shares = [np.concatenate([np.asarray(b) for b in s.batches(0)]) for s in ranks]
    return {"pairs": len(p.src_lens), "batches_per_epoch": len(one),
            "mean_sentences_per_batch": round(len(p.src_lens) / len(one), 2),
            "two_ranks": {"batches": [len(s) for s in ranks], "samples": [len(x) for x in shares],
                          "overlap_samples": len(set(shares[0].tolist()) & set(shares[1].tolist())),
                          "union_samples": len(set(shares[0].tolist()) | set(shares[1].tolist()))}}


# -- children common to both -----------------------------------------------------------------------


def make_loader(spec: dict, workers: int):
    if spec["path"] == "datasets":
        return ds_loader(spec["prepared"], workers), "plain"
    return lit_loader(spec["prepared"], spec["variant"], workers, spec["batch_size"]), spec["variant"]


def child_loader(spec: dict) -> dict:
    import torch

    out = {}
    for workers in (0, 1, 2):
        loader, variant = make_loader(spec, workers)
        tokens, kept, n = 0, [], 0
        if variant == "bucketed":  # a window arrives as a list of batches: time whole windows
            it = iter(loader)
            next(it)  # warm-up: the first window
            t0 = time.perf_counter()
            for _ in range(max(3, round(spec["batches"] * spec["batch_size"] / WINDOW))):
                for b in next(it):
                    tokens += int((b["tgt_out"] != PAD).sum())
                    n += 1
                    if len(kept) < 100:
                        kept.append(b)
        else:
            it = iter(loader)
            for _ in range(spec["warm"]):
                next(it)
            t0 = time.perf_counter()
            for n in range(1, 1 + (spec["batches"] if variant != "indexed" else max(20, spec["batches"] // 5))):
                b = next(it)
                tokens += int((b["tgt_out"] != PAD).sum())
                if len(kept) < 100:
                    kept.append(b)
        seconds = time.perf_counter() - t0
        out[str(workers)] = {"target_tokens_per_s": round(tokens / seconds), "batches": n,
                             "batches_per_s": round(n / seconds, 1)}
        if workers == 0:
            out["batches"] = batch_stats(kept)
        del it, loader
    out["threads"] = torch.get_num_threads()
    return out


def child_startup(spec: dict) -> dict:
    t_imports = time.time()
    if spec["path"] == "datasets":
        import nmt.data  # noqa: F401
    else:
        import litdata  # noqa: F401
        import nmt.batching  # noqa: F401
    import torch  # noqa: F401

    t_open = time.time()
    loader, variant = make_loader(spec, spec["workers"])
    it = flat(loader, variant)
    next(it)
    t_first = time.time()
    for _ in range(spec["batches"] - 1):
        next(it)
    rss_tree = _tree_rss(os.getpid())
    return {"process_start_to_first_batch_s": round(t_first - spec["start"], 2),
            "imports_s": round(t_open - t_imports, 2), "open_to_first_batch_s": round(t_first - t_open, 2),
            "after_batches": spec["batches"], "rss_tree_gb": round(rss_tree / 1e9, 3), "main": memory_status()}


def child_resume(spec: dict) -> dict:
    """phase 'run': 2K batches, state at K (LitData: state_dict; datasets: K itself);
    phase 'resume': a fresh process continues from that state for K batches."""
    k, workers, state_file = spec["k"], spec["workers"], Path(spec["state"])
    if spec["path"] == "datasets":
        loader = ds_loader(spec["prepared"], workers, skip=k if spec["phase"] == "resume" else 0)
    else:
        loader = lit_loader(spec["prepared"], "fixed", workers, spec["batch_size"])
        if spec["phase"] == "resume":
            loader.load_state_dict(pickle.loads(state_file.read_bytes()))
    digests, it = [], iter(loader)
    for n in range(2 * k if spec["phase"] == "run" else k):
        if spec["phase"] == "run" and n == k and spec["path"] == "litdata":
            state_file.write_bytes(pickle.dumps(loader.state_dict()))
        digests.append(digest(next(it)["index"]))
    return {"digests": digests}


CHILDREN = {"lit_prepare": child_lit_prepare, "lit_verify": child_lit_verify, "lit_dist": child_lit_dist,
            "ds_prepare": child_ds_prepare, "ds_plan": child_ds_plan, "loader": child_loader,
            "startup": child_startup, "resume": child_resume}


# -- the parent --------------------------------------------------------------------------------------


class Runner:
    def __init__(self, out: Path, lit_python: str) -> None:
        self.out, self.lit_python, self.n = out, lit_python, 0

    def __call__(self, kind: str, lit: bool, **spec) -> dict:
        self.n += 1
        tag = f"{self.n:03d}-{kind}-{'lit' if lit else 'ds'}"
        result_file = self.out / "children" / f"{tag}.json"
        result_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)} if lit else dict(os.environ)
        python = self.lit_python if lit else sys.executable
        spec = {**spec, "start": time.time()}
        cmd = [python, __file__, "--child", kind, json.dumps(spec), str(result_file)]
        measured = run_measured(cmd, result_file.with_suffix(".log"), env)
        value = json.loads(result_file.read_text())
        print(tag, json.dumps({**value, **measured})[:400], flush=True)
        return {**value, **measured}


def run_measured(cmd: list[str], log: Path, env: dict) -> dict:
    """bench_data.run_measured: wall seconds and the tree's peak RSS."""
    measured = bench_data.run_measured(cmd, log, env)
    return {"wall_s": measured["wall_s"], "tree_peak_rss_gb": measured["peak_rss_gb"]}


def median_of(rows: list[dict], keys: list[str]) -> dict:
    def get(row, dotted):
        for part in dotted.split("."):
            row = row[part]
        return row

    return {k: {"median": statistics.median(get(r, k) for r in rows), "all": [get(r, k) for r in rows]} for k in keys}


def versions(python: str) -> dict:
    code = ("import json, importlib.metadata as m\nout = {}\nfor n in ('litdata','datasets','pyarrow','torch','numpy',"
            "'sentencepiece','lightning','torchvision','boto3','obstore'):\n    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = None\nprint(json.dumps(out))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="a directory written by scripts/make_scale_corpus.py")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_litdata")
    ap.add_argument("--lit-python", default="/tmp/litvenv/bin/python", help="the interpreter of the LitData venv")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each loader and start-up measurement")
    ap.add_argument("--prepare-repeat", type=int, default=2, help="runs of each preparation")
    ap.add_argument("--loader-batches", type=int, default=300)
    ap.add_argument("--resume-k", type=int, default=200, help="resume check: batches before / after the state")
    ap.add_argument("--lit-batch-decode", default="auto",
                    help="StreamingDataset(batch_decode=...): 'auto' (LitData's default) or 0 (per item)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, spec, result = args.child
        Path(result).write_text(json.dumps(CHILDREN[kind](json.loads(spec)), indent=2))
        return 0
    if args.corpus is None or not (args.corpus / "manifest.json").is_file():
        ap.error("--corpus: a directory written by scripts/make_scale_corpus.py (with manifest.json)")
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    shards = [str(args.corpus / s) for s in manifest["shards"]]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_LIT_BATCH_DECODE"] = args.lit_batch_decode
    shutil.rmtree(out / "children", ignore_errors=True)
    run = Runner(out, args.lit_python)
    from nmt.provenance import cpu_model, git_commit

    r: dict = {"command": " ".join(["python", "scripts/bench_litdata.py", *sys.argv[1:]]),
               "commit": git_commit(), "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
               "versions": {"project_venv": versions(sys.executable), "litdata_venv": versions(args.lit_python)},
               "corpus": {"path": str(args.corpus), "pairs": manifest["pairs"], "shards": len(shards)},
               "config": str(CONFIG.relative_to(ROOT)), "repeat": args.repeat,
               "prepare_repeat": args.prepare_repeat}

    # 1. nmt-prepare itself (trains the tokenizer both paths use); reused if --out has it
    cli = out / "ds-cli"
    if not (out / "ds-cli.json").is_file() or not (cli / "meta.json").is_file():
        shutil.rmtree(cli, ignore_errors=True)
        cmd = [sys.executable, "-m", "nmt.cli.prepare", str(CONFIG), "--output", str(cli),
               "--set", f"data.train=[{','.join(shards)}]"]
        m = run_measured(cmd, out / "ds-cli.log", dict(os.environ))
        m = {"wall_s": m["wall_s"], "peak_rss_gb": m["tree_peak_rss_gb"], "disk_bytes": du(cli),
             "meta": json.loads((cli / "meta.json").read_text())}
        (out / "ds-cli.json").write_text(json.dumps(m, indent=2))
    m = json.loads((out / "ds-cli.json").read_text())
    r["nmt_prepare_cli"] = {"wall_s": m["wall_s"], "tree_peak_rss_gb": m["peak_rss_gb"],
                            "disk_gb": round(m["disk_bytes"] / 1e9, 3), "seconds": m["meta"]["seconds"],
                            "pairs_kept": m["meta"]["pairs"], "stats": m["meta"]["stats"],
                            "src_tokens": m["meta"]["src_tokens"], "tgt_tokens": m["meta"]["tgt_tokens"]}
    tokenizer = str(cli / "tokenizer")
    model = str(cli / "tokenizer" / "spm.model")

    # 2. preparation, alternating
    ds_rows, lit_rows = [], []
    for i in range(args.prepare_repeat):
        ds_out, lit_out = out / f"ds-prep-{i}", out / f"lit-prep-{i}"
        row = run("ds_prepare", False, shards=shards, tokenizer=tokenizer, output=str(ds_out))
        ds_rows.append({**row, "disk_gb": round(du(ds_out) / 1e9, 3)})
        row = run("lit_prepare", True, shards=shards, model=model, output=str(lit_out))
        lit_rows.append({**row, "disk_gb": round(du(lit_out) / 1e9, 3)})
        if i > 0:  # keep the first of each for the loaders
            shutil.rmtree(ds_out)
            shutil.rmtree(lit_out)
    u16 = run("lit_prepare", True, shards=shards, model=model, output=str(out / "lit-prep-u16"), uint16=True)
    u16["disk_gb"] = round(du(out / "lit-prep-u16") / 1e9, 3)
    shutil.rmtree(out / "lit-prep-u16")
    keys = ["wall_s", "tree_peak_rss_gb", "disk_gb"]
    r["prepare"] = {"datasets": {**median_of(ds_rows, keys + ["seconds.encode_and_write"]), "rows": ds_rows},
                    "litdata_int32": {**median_of(lit_rows, keys + ["seconds.optimize"]), "rows": lit_rows},
                    "litdata_uint16_once": u16}
    ds_dir, lit_dir = str(out / "ds-prep-0"), str(out / "lit-prep-0")

    # 3. the same pairs and tokens? (+ lengths in LitData's index order for 'indexed')
    r["verify"] = {"litdata": run("lit_verify", True, prepared=lit_dir),
                   "datasets": {k: ds_rows[0][k] for k in ("pairs", "src_tokens", "tgt_tokens")}}
    plan = run("ds_plan", False, prepared=ds_dir)
    batch_size = round(plan["pairs"] / plan["batches_per_epoch"])
    r["batching"] = {"project_plan": plan, "litdata_fixed_batch_size": batch_size, "litdata_window": WINDOW}

    # 4. loader throughput; 5. start-up and RSS; alternating
    paths = [("datasets", None), ("litdata", "fixed"), ("litdata", "bucketed"), ("litdata", "indexed")]

    def spec(path, variant):
        return {"path": path, "variant": variant, "prepared": ds_dir if path == "datasets" else lit_dir,
                "batch_size": batch_size}

    loader_rows: dict = {}
    startup_rows: dict = {}
    for i in range(args.repeat):
        for path, variant in paths:
            name = path if variant is None else f"litdata_{variant}"
            loader_rows.setdefault(name, []).append(
                run("loader", path == "litdata", **spec(path, variant), warm=20, batches=args.loader_batches))
        for workers in (0, 2):
            for path, variant in paths:
                name = (path if variant is None else f"litdata_{variant}") + f"_w{workers}"
                startup_rows.setdefault(name, []).append(
                    run("startup", path == "litdata", **spec(path, variant), workers=workers, batches=args.loader_batches))
    r["loader"] = {name: {**median_of(rows, [f"{w}.target_tokens_per_s" for w in "012"] + ["wall_s"]),
                          "batches": rows[0]["batches"], "rows": rows} for name, rows in loader_rows.items()}
    r["startup"] = {name: {**median_of(rows, ["process_start_to_first_batch_s", "open_to_first_batch_s", "imports_s",
                                              "rss_tree_gb", "main.rss_anon_gb", "main.rss_file_gb",
                                              "tree_peak_rss_gb"]), "rows": rows}
                    for name, rows in startup_rows.items()}

    # 6. exact mid-epoch resume, 2 workers
    r["resume"] = {}
    k = args.resume_k
    for path in ("datasets", "litdata"):
        lit = path == "litdata"
        state = str(out / f"resume-{path}.pkl")
        common = {**spec(path, "fixed" if lit else None), "k": k, "workers": 2, "state": state}
        full = run("resume", lit, **common, phase="run")["digests"]
        again = run("resume", lit, **common, phase="run")["digests"]
        resumed = run("resume", lit, **common, phase="resume")["digests"]
        r["resume"][path] = {"k": k, "workers": 2, "uninterrupted_runs_identical": full == again,
                             "resumed_equals_uninterrupted": resumed == full[k:],
                             "matching_batches": sum(a == b for a, b in zip(resumed, full[k:])),
                             "resumed_overlaps_first_k": len(set(resumed) & set(full[:k])),
                             "how": "TokenBatchSampler.skip(K) in a new process" if not lit else
                             "StreamingDataLoader.state_dict() after K batches, load_state_dict in a new process"}

    # 7. two ranks: equal batches per rank?
    r["two_ranks"] = {"litdata": run("lit_dist", True, prepared=lit_dir, batch_size=batch_size,
                                     work=str(out / "dist")),
                      "datasets": plan["two_ranks"]}

    text = json.dumps(r, indent=2) + "\n"
    (out / "results.json").write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
