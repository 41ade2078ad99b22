"""Scale benchmark (issue 15): preparing, loading and starting to train on a 10M-pair corpus.
Not a test: nothing here asserts a time; targets are printed next to the measurements.

    python scripts/make_scale_corpus.py 10000000 /data/scale10m      # the corpus (about 2.5 GB)
    python scripts/bench_data.py --corpus /data/scale10m [--small 100000] [--out runs/bench_data]

Experiment: configs/bench_scale.yaml (transformer_small's model, joint SentencePiece 8,000
trained on 100k sampled pairs, 4,096-token batches, Tatoeba valid). Each measurement runs in its
own process; memory is sampled every 0.2 s over the whole process tree (preparation workers
included), and peak RSS is the largest sum seen (shared pages count once per process, so it
overstates). Measurements:

- prepare: `nmt-prepare` of the full corpus and of its first --small pairs: wall time, peak RSS,
  size on disk, pairs/s per core (data.num_proc processes);
- loader: target tokens/s (non-pad tokens incl. EOS) of the prepared path's DataLoader with no
  model, in the main process and with 1 and 2 workers, over --loader-batches batches;
- training (--steps steps each, 0 loader workers): process start -> end of the first optimizer
  step, steady-state target tokens/s (steps after the 10th), RSS at the end (anonymous memory and
  file pages of the memory-mapped corpus apart) and peak RSS, for the prepared path at the full
  size, and --repeat times each, alternating, for the prepared and the in-memory path
  (datasets.map at start) on the first --small pairs of the first shard (the median is reported).
  The two small runs read the same pairs but train their own SentencePiece models (the prepared
  one on a 100k-pair sample, the in-memory one on all of it), so their batches differ slightly.

Writes OUT/results.json and OUT/results.md; docs/scale.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "bench_scale.yaml"


# -- memory of a process tree ---------------------------------------------------------------------


def _tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run cmd (in `env`, default this one); wall seconds and the peak RSS of its process tree."""
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        peak, stop = [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss(proc.pid))
                stop.wait(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        stop.set()
        thread.join()
    if code != 0:
        raise SystemExit(f"{Path(sys.argv[0]).stem}: {' '.join(cmd[:4])} ... failed (exit {code}); see {log}")
    return {"wall_s": round(time.time() - start, 1), "peak_rss_gb": round(peak[0] / 1e9, 3), "start": start}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- children: run inside their own process -------------------------------------------------------


def child_loader(spec: dict) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from nmt.data import BatchView, TokenBatchSampler, open_prepared
    from nmt.tokenizer import PAD_ID

    prepared = open_prepared(Path(spec["prepared"]))
    sampler = TokenBatchSampler(prepared.src_lens, prepared.tgt_lens, max_tokens=spec["max_tokens"], seed=1)
    out = {}
    for workers in (0, 1, 2):
        loader = DataLoader(BatchView(prepared.dataset), batch_size=None, sampler=sampler, num_workers=workers)
        it, warm, tokens = iter(loader), 20, 0
        for _ in range(warm):
            next(it)
        t0 = time.perf_counter()
        for _ in range(spec["batches"]):
            tokens += int((next(it)["tgt_out"] != PAD_ID).sum())
        seconds = time.perf_counter() - t0
        out[str(workers)] = {"target_tokens_per_s": round(tokens / seconds), "batches": spec["batches"]}
        del it, loader
    out["threads"] = torch.get_num_threads()
    return out


def child_train(spec: dict) -> dict:
    import lightning as L

    from nmt.config import load_config
    from nmt.training.run import train

    cfg = load_config(CONFIG, spec["overrides"])

    class Measure(L.Callback):
        def __init__(self) -> None:
            self.first_step = None
            self.t10 = self.tokens = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            now = time.time()
            if self.first_step is None:
                self.first_step = now
            step = trainer.global_step
            n = int((batch["tgt_out"] != 0).sum())
            if step == 10:
                self.t10, self.tokens = now, 0
            elif self.t10 is not None:
                self.tokens += n
            if step == trainer.max_steps:
                self.end, self.status = now, memory_status()

    measure = Measure()
    train(cfg, Path(spec["run_dir"]), test=False, callbacks=[measure])
    import resource

    return {"startup_s": round(measure.first_step - spec["start"], 1),
            "steady_target_tokens_per_s": round(measure.tokens / (measure.end - measure.t10)),
            "steps": cfg.trainer.max_steps, **measure.status,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3)}


def memory_status() -> dict:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = round(int(value.split()[0]) * 1024 / 1e9, 3)
    return {"rss_gb": fields.get("VmRSS"), "rss_anon_gb": fields.get("RssAnon"), "rss_file_gb": fields.get("RssFile")}


def child(kind: str, out: Path, **spec) -> dict:
    spec = {**spec, "start": time.time()}
    result_file = out / f"{kind}-{len(list(out.glob(kind + '-*.json')))}.json"
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(spec), str(result_file)]
    measured = run_measured(cmd, result_file.with_suffix(".log"))
    return {**json.loads(result_file.read_text()), "tree_peak_rss_gb": measured["peak_rss_gb"]}


# -- the benchmark ------------------------------------------------------------------------------


def transformer_base_flops_per_target_token(src_per_tgt: float) -> dict:
    """Training FLOPs per target token of transformer_base (6 x multiply-adds of every matmul
    forward: 2 forward + 4 backward FLOPs per weight per token; attention scores and values
    added at the mean length; embeddings are look-ups, the tied output layer is a matmul)."""
    d, ff, layers, vocab, length = 512, 2048, 6, 37000, 30
    enc_layer = 4 * d * d + 2 * d * ff  # Q, K, V, O projections + FFN
    dec_layer = 8 * d * d + 2 * d * ff  # self- and cross-attention + FFN
    attn = 2 * 2 * d * length  # QK^T and AV per token per attention block, at ~30 tokens
    enc = layers * (enc_layer + attn) * src_per_tgt
    dec = layers * (dec_layer + 2 * attn) + d * vocab
    return {"flops_per_target_token": 6 * (enc + dec), "assumed_mean_length": length, "vocab": vocab}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="a directory written by scripts/make_scale_corpus.py")
    ap.add_argument("--small", type=int, default=100_000, help="pairs of the small comparison corpus (its first N)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_data")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps of each training run")
    ap.add_argument("--loader-batches", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each small-corpus training (alternating; median)")
    ap.add_argument("--reuse", action="store_true", help="keep prepared directories that exist")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, spec, result = args.child
        value = {"loader": child_loader, "train": child_train}[kind](json.loads(spec))
        Path(result).write_text(json.dumps(value, indent=2))
        return 0
    if args.corpus is None or not (args.corpus / "manifest.json").is_file():
        ap.error("--corpus: a directory written by scripts/make_scale_corpus.py (with manifest.json)")
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    shards = "[" + ",".join(str(args.corpus / s) for s in manifest["shards"]) + "]"
    first_shard = str(args.corpus / manifest["shards"][0])  # the small corpus: its first --small pairs
    args.out.mkdir(parents=True, exist_ok=True)
    earlier = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").is_file() else {}
    for old in list(args.out.glob("*.json")) + [p for p in args.out.glob("*.log") if not p.name.startswith("prepare-")]:
        old.unlink()
    big, small = args.out / "prepared-full", args.out / f"prepared-{args.small}"
    sizes = {"full": (big, [f"data.train={shards}"]),
             "small": (small, [f"data.train={first_shard}", f"data.limit_train={args.small}"])}
    results: dict = {"corpus": str(args.corpus), "pairs": manifest["pairs"], "small": args.small,
                     "config": str(CONFIG.relative_to(ROOT)), "prepare": {}, "train": {}}
    from nmt.provenance import describe_machine, git_commit  # light: no torch

    results["machine"], results["commit"] = describe_machine(), git_commit()

    for name, (path, extra) in sizes.items():
        if args.reuse and (path / "meta.json").is_file() and name in earlier.get("prepare", {}):
            results["prepare"][name] = {**earlier["prepare"][name], "measured_at_commit": earlier.get("commit")}
            continue
        shutil.rmtree(path, ignore_errors=True)
        cmd = [sys.executable, "-m", "nmt.cli.prepare", str(CONFIG), "--output", str(path), *[x for e in extra for x in ("--set", e)]]
        measured = run_measured(cmd, args.out / f"prepare-{name}.log")
        meta = json.loads((path / "meta.json").read_text())
        cores = 2
        results["prepare"][name] = {
            "pairs_read": meta["stats"]["read"], "pairs_kept": meta["pairs"], "wall_s": measured["wall_s"],
            "peak_rss_gb": measured["peak_rss_gb"], "disk_gb": round(du(path) / 1e9, 3),
            "seconds": meta["seconds"], "pairs_per_s_per_core": round(meta["stats"]["read"] / measured["wall_s"] / cores),
            "encode_pairs_per_s_per_core": round(meta["stats"]["read"] / meta["seconds"]["encode_and_write"] / cores),
            "target_tokens": meta["tgt_tokens"], "source_tokens": meta["src_tokens"]}
        print(name, results["prepare"][name], flush=True)

    results["loader"] = child("loader", args.out, prepared=str(big), max_tokens=4096, batches=args.loader_batches)
    print("loader", results["loader"], flush=True)

    small_data = [f"data.train={first_shard}", f"data.limit_train={args.small}"]
    runs = [("prepared-full", [f"data.train={shards}", f"data.prepared_dir={big}"])]
    for _ in range(args.repeat):  # alternating, so a slow minute of the machine hits both
        runs += [("prepared-small", [*small_data, f"data.prepared_dir={small}"]), ("in-memory-small", small_data)]
    for name, overrides in runs:
        run_dir = args.out / f"run-{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        result = child("train", args.out, run_dir=str(run_dir),
                       overrides=[f"trainer.max_steps={args.steps}", *overrides])
        results["train"].setdefault(name, []).append(result)
        print(name, result, flush=True)
    for name, rows in results["train"].items():  # the run with the median steady tokens/s stands for them
        rows.sort(key=lambda v: v["steady_target_tokens_per_s"])
        results["train"][name] = {**rows[len(rows) // 2], "all_steady_target_tokens_per_s":
                                  [v["steady_target_tokens_per_s"] for v in rows]}

    meta = json.loads((big / "meta.json").read_text())
    flops = transformer_base_flops_per_target_token(meta["src_tokens"] / meta["tgt_tokens"])
    h200_bf16_dense = 989e12  # NVIDIA's H200 SXM figure for dense BF16 tensor cores
    for mfu in (0.3, 0.5):
        need = mfu * h200_bf16_dense / flops["flops_per_target_token"]
        per_worker = results["loader"]["1"]["target_tokens_per_s"]
        flops[f"h200_target_tokens_per_s_at_{int(mfu * 100)}pct_mfu"] = round(need)
        flops[f"workers_needed_at_{int(mfu * 100)}pct_mfu"] = math.ceil(need / per_worker)
    results["h200_arithmetic"] = flops
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out / "results.md")
    print((args.out / "results.md").read_text())
    return 0


def write_markdown(r: dict, path: Path) -> None:
    p, t, lo, f = r["prepare"], r["train"], r["loader"], r["h200_arithmetic"]
    full, small = t["prepared-full"], t["prepared-small"]
    lines = [f"Corpus {r['corpus']} ({r['pairs']:,} pairs; small: its first {r['small']:,}), config {r['config']}, "
             f"commit {r['commit']}, {r['machine']}.", "",
             "| prepare | pairs kept | wall (tokenizer) | pairs/s per core: all (encoding) | peak RSS (tree) | disk |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, v in p.items():
        lines.append(f"| {name} | {v['pairs_kept']:,} | {v['wall_s']:.0f} s ({v['seconds']['tokenizer']:.0f} s) | "
                     f"{v['pairs_per_s_per_core']:,} ({v['encode_pairs_per_s_per_core']:,}) | "
                     f"{v['peak_rss_gb']:.2f} GB | {v['disk_gb']:.2f} GB |")
    lines += ["", "| loader (no model) | target tokens/s |", "|---|---:|"]
    for w in ("0", "1", "2"):
        lines.append(f"| {'main process' if w == '0' else w + ' worker(s)'} | {lo[w]['target_tokens_per_s']:,} |")
    lines += ["", "| training run (median of its runs) | start-up to first step | steady target tokens/s (all runs) | "
              "RSS at the end (anon + file) | peak RSS |", "|---|---:|---:|---:|---:|"]
    for name, v in t.items():
        runs = ", ".join(f"{x:,}" for x in v["all_steady_target_tokens_per_s"])
        lines.append(f"| {name} | {v['startup_s']:.1f} s | {v['steady_target_tokens_per_s']:,} ({runs}) | {v['rss_gb']:.2f} GB "
                     f"({v['rss_anon_gb']:.2f} + {v['rss_file_gb']:.2f}) | {v['peak_rss_gb']:.2f} GB |")
    inmem = t["in-memory-small"]["steady_target_tokens_per_s"]
    lines += ["", f"- prepared / in-memory steady tokens/s at {r['small']:,} pairs: "
              f"{small['steady_target_tokens_per_s'] / inmem:.3f} (target >= 0.95)",
              f"- RSS at the end, full / small: {full['rss_gb'] / small['rss_gb']:.3f} (anonymous: "
              f"{full['rss_anon_gb'] / small['rss_anon_gb']:.3f}; target <= 1.10); peak: "
              f"{full['peak_rss_gb'] / small['peak_rss_gb']:.3f}",
              f"- start-up at full size: {full['startup_s']:.1f} s (target <= 60 s)",
              f"- transformer_base: {f['flops_per_target_token'] / 1e9:.2f} GFLOP per target token; one H200 at 30% / 50% "
              f"MFU of 989 dense BF16 TFLOP/s trains {f['h200_target_tokens_per_s_at_30pct_mfu']:,} / "
              f"{f['h200_target_tokens_per_s_at_50pct_mfu']:,} target tokens/s, so "
              f"{f['workers_needed_at_30pct_mfu']} / {f['workers_needed_at_50pct_mfu']} loader workers "
              f"at {lo['1']['target_tokens_per_s']:,} tokens/s each"]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
