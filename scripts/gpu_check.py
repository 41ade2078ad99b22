"""GPU check: training throughput (eager and compiled) and beam decoding speed on one GPU.

    bash scripts/gpu_check.sh [--out DIR]          # real mode: one GPU, at most 8 minutes
    bash scripts/gpu_check.sh --tiny [--out DIR]   # the same code path on CPU in about half a minute

Parts, each under its own time budget (a part that fails or runs past its budget is recorded with
its error and the others still run; the exit status is 1 if any part failed):

  data                 scripts/make_scale_corpus.py N pairs in shards, then nmt.data.prepare_corpus
                       (what nmt-prepare does) into data.prepared_dir
  train_eager          configs/transformer_base.yaml's model (real mode: bf16-mixed, 1 GPU) trained
                       a fixed number of steps on the prepared corpus through nmt.training.run.train;
                       ThroughputMeter measures steady-state target tokens/s, peak GPU memory, MFU
  train_compiled       the same with trainer.compile=true (real mode only: on CPU, torch.compile
                       spends far longer compiling C++ kernels than the tiny run takes)
  decode_torch         beam 5 over WMT22 test sentences with nmt.Translator on train_eager's checkpoint,
                       in batches of 64 and of 256 sentences, the model in bfloat16 (real mode)
  decode_ctranslate2   the same with `nmt-export --format ctranslate2` and the ctranslate2 engine in
                       float16 (real mode); a CTranslate2 without CUDA here is recorded as "unavailable"

Writes OUT/results.json and OUT/results.md after every part (so a run cut short keeps what it
measured). Corpus, prepared data and checkpoints go to a work directory outside OUT.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "build" / "gpu_check"  # `gpu_check.sh --pack`: wheels, data and commit for a machine without them
BASE_CONFIG = ROOT / "configs" / "transformer_base.yaml"
PARTS = ("data", "train_eager", "train_compiled", "decode_torch", "decode_ctranslate2")
# Dense (no sparsity) BF16 tensor-core peaks from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name() in this order (the first name contained in it wins).
PEAK_BF16_FLOPS = (("H200 NVL", 835e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
                   ("H100", 989e12), ("A100", 312e12))


@dataclass
class Mode:
    """What differs between the real check and its tiny CPU rehearsal."""

    name: str
    pairs: int  # scale-corpus pairs
    shard_size: int  # pairs per corpus shard (one shard per preparation process)
    overrides: list[str]  # --set overrides of configs/transformer_base.yaml
    steps: int  # optimizer steps per training run (accumulate 1: one batch each)
    warmup: int  # first batches left out of the steady-state figures
    parts: tuple[str, ...]
    budgets_s: dict[str, int]  # per part; training runs also stop at trainer.max_time = budget - startup_s
    startup_s: int  # of a training part's budget, kept for start-up and the final checkpoint
    decode_sentences: int
    decode_max_tokens: int  # source tokens per decoding batch (divided by the beam), both engines
    decode_chunk: int  # sentences per translate() call; the budget is checked between calls
    device: str
    decode_batches: tuple[int, ...] = (64, 256)  # sentences per decoding batch: one timed run each
    decode_dtypes: tuple[str, str] = ("bfloat16", "float16")  # Translator dtype of the torch, ctranslate2 engine


REAL = Mode(
    name="real", pairs=1_000_000, shard_size=125_000,
    # 25,000 tokens per batch: the paper's 25k-token step in one batch (no gradient accumulation);
    # an H200's 139 GiB holds it easily and a large batch amortises the per-step host work.
    overrides=["data.num_proc=8", "data.max_tokens=25000", "trainer.precision=bf16-mixed",
               "trainer.accelerator=gpu", "trainer.devices=1", "trainer.accumulate_grad_batches=1",
               "trainer.num_workers=4"],
    steps=300, warmup=25, parts=PARTS,
    budgets_s={"data": 130, "train_eager": 80, "decode_torch": 70, "decode_ctranslate2": 60, "train_compiled": 150},
    startup_s=35, decode_sentences=1000, decode_max_tokens=10**9, decode_chunk=256, device="cuda")

TINY = Mode(
    name="tiny", pairs=3000, shard_size=1500,
    overrides=["data.num_proc=2", "data.max_tokens=2048", "data.max_len=128", "tokenizer.vocab_size=2000",
               "tokenizer.character_coverage=0.98", "model.d_model=32", "model.n_heads=2", "model.d_ff=64",
               "model.n_encoder_layers=1", "model.n_decoder_layers=1", "model.max_positions=256",
               "trainer.precision=32-true", "trainer.accelerator=cpu", "trainer.devices=1",
               "trainer.accumulate_grad_batches=1", "trainer.num_workers=0"],
    steps=12, warmup=4, parts=("data", "train_eager", "decode_torch", "decode_ctranslate2"),
    budgets_s={"data": 60, "train_eager": 60, "decode_torch": 30, "decode_ctranslate2": 30},
    startup_s=20, decode_sentences=20, decode_max_tokens=2048, decode_chunk=20, device="cpu",
    decode_batches=(8, 16), decode_dtypes=("bfloat16", "float32"))  # CTranslate2 has no float16 on CPUs


class Stop(BaseException):
    """A part's time budget ran out, or the wrapper's overall limit (SIGTERM) came. A BaseException,
    so no `except Exception` inside nmt or Lightning turns it into another error."""


TERMINATED = False  # SIGTERM came: record the part it stopped and run no other


def _raise_stop(signum: int, frame) -> None:
    global TERMINATED
    if signum == signal.SIGTERM:
        TERMINATED = True
        raise Stop("stopped by SIGTERM (the wrapper's overall time limit)")
    raise Stop("ran past its time budget")


# ------------------------------------------------------------------------------------------------
# Training throughput: model FLOPs and the measuring callback
# ------------------------------------------------------------------------------------------------


def train_flops_per_target_token(m, *, vocab: int, src_per_tgt: float, enc_keys: float, self_keys: float,
                                 cross_keys: float) -> float:
    """Model FLOPs of one training step per non-pad target token (Kaplan et al. 2020; PaLM's MFU):
    6 x the multiply-adds of every matmul of the forward pass (2 FLOPs each, the backward pass
    twice the forward). Embedding lookups, norms, softmax and the loss are not counted.
    D = d_model, F = d_ff, V = target vocabulary, L_e / L_d = encoder / decoder layers.

      per source token:  L_e (4 D^2 [Q,K,V,O] + 2 D F [FFN] + 2 D enc_keys [Q K^T, A V])
                         + L_d 2 D^2 [cross-attention K, V of the memory]
      per target token:  L_d (4 D^2 [self Q,K,V,O] + 2 D^2 [cross Q,O] + 2 D F + 2 D self_keys + 2 D cross_keys)
                         + D V [output projection, at non-pad positions only]
      FLOP per target token = 6 (per target token + src_per_tgt x per source token)

    Keys per query at the measured lengths (S_i, T_i: non-pad tokens of sentence i, with EOS):
    enc_keys = sum S_i^2 / sum S_i, cross_keys = sum T_i S_i / sum T_i, self_keys = sum T_i^2 / sum T_i
    (every query against all T_i keys, as PaLM counts it: the causal mask is not subtracted)."""
    d, f = m.d_model, m.d_ff
    per_src = m.n_encoder_layers * (4 * d * d + 2 * d * f + 2 * d * enc_keys) + m.n_decoder_layers * 2 * d * d
    per_tgt = m.n_decoder_layers * (6 * d * d + 2 * d * f + 2 * d * (self_keys + cross_keys)) + d * vocab
    return 6.0 * (per_tgt + src_per_tgt * per_src)


def peak_bf16_flops(device_name: str | None) -> float | None:
    for name, flops in PEAK_BF16_FLOPS:
        if device_name and name in device_name:
            return flops
    return None


def _batch_lengths(batch: dict):
    """[src tokens, tgt tokens, sum S^2, sum T S, sum T^2, padded src cells, padded tgt cells] of one
    batch, as a float64 tensor on the batch's device (read once at the end: no host sync here)."""
    import torch

    s = (batch["src"] != 0).sum(dim=1).double()  # (B,) non-pad source tokens (PAD_ID 0), EOS included
    t = (batch["tgt_out"] != 0).sum(dim=1).double()  # (B,) non-pad target tokens, EOS included
    return torch.stack([s.sum(), t.sum(), (s * s).sum(), (t * s).sum(), (t * t).sum(),
                        s.new_tensor(batch["src"].numel()), s.new_tensor(batch["tgt_out"].numel())])


def _clock(device) -> float:
    """perf_counter after the device's queued work has finished."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_meter(warmup: int):
    """A Lightning Callback (built here so that importing this file does not import Lightning)."""
    import torch
    from lightning.pytorch.callbacks import Callback

    class ThroughputMeter(Callback):
        """Steady-state training speed over the batches after the first `warmup`. A batch is timed
        from its on_train_batch_start to the next one's (loading, forward, backward, optimizer
        step, logging), the device queue drained before each clock read; the last batch is not
        timed, so the final checkpoint write is not counted."""

        def __init__(self) -> None:
            self.device = self.vocab = self.parameters = None  # read from the module at the start
            self.started = 0  # batches started so far
            self.step_s: list[float] = []  # timed batches
            self.sums = None  # _batch_lengths summed over the timed batches
            self.warmup_s = None  # train start -> start of the first timed batch (compilation included)
            self._start = self._last = None

        def on_train_start(self, trainer, pl_module) -> None:
            from nmt.models import count_parameters

            self.device, self.vocab = pl_module.device, pl_module.tokenizer.tgt_vocab_size
            self.parameters = count_parameters(pl_module.model)
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self._start = _clock(pl_module.device)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            now = _clock(pl_module.device)
            if self._last is not None and self.started > warmup:  # batch number `started` (1-based) just ended
                then, lengths = self._last
                self.step_s.append(now - then)
                self.sums = lengths if self.sums is None else self.sums + lengths
            if self.started == warmup:
                self.warmup_s = now - self._start
            self._last = (now, _batch_lengths(batch))
            self.started += 1

    return ThroughputMeter()


def summarise_throughput(meter, model_cfg, peak_override: float | None) -> dict:
    import torch

    device_type = meter.device.type if meter.device is not None else "cpu"
    device_name = torch.cuda.get_device_name(meter.device) if device_type == "cuda" else None
    if len(meter.step_s) < 2:
        raise RuntimeError(f"only {len(meter.step_s)} batch(es) timed after {meter.started} started "
                           f"(warm-up {meter.started - len(meter.step_s)}): the budget ended training too early")
    src, tgt, s2, ts, t2, src_cells, tgt_cells = meter.sums.tolist()
    seconds = sum(meter.step_s)
    keys = dict(src_per_tgt=src / tgt, enc_keys=s2 / src, self_keys=t2 / tgt, cross_keys=ts / tgt)
    flops_per_token = train_flops_per_target_token(model_cfg, vocab=meter.vocab, **keys)
    tokens_per_s = tgt / seconds
    peak = peak_override or (peak_bf16_flops(device_name) if device_type == "cuda" else None)
    out = {"steps_timed": len(meter.step_s), "warmup_steps": meter.started - 1 - len(meter.step_s),
           "warmup_s": round(meter.warmup_s, 2) if meter.warmup_s is not None else None,
           "target_tokens_per_s": round(tokens_per_s, 1), "source_tokens_per_s": round(src / seconds, 1),
           "target_tokens_per_step": round(tgt / len(meter.step_s), 1),
           "median_step_s": round(statistics.median(meter.step_s), 4), "max_step_s": round(max(meter.step_s), 4),
           "padding_share": {"src": round(1 - src / src_cells, 4), "tgt": round(1 - tgt / tgt_cells, 4)},
           "keys_per_query": {k: round(v, 2) for k, v in keys.items()},
           "flop_per_target_token": round(flops_per_token), "model_flops_per_s": round(flops_per_token * tokens_per_s),
           "peak_bf16_flops_per_s": peak, "mfu": None, "mfu_reason": None}
    if peak:
        out["mfu"] = round(flops_per_token * tokens_per_s / peak, 4)
    else:
        out["mfu_reason"] = ("CPU run (32-true): no BF16 peak to divide by" if device_type != "cuda"
                             else f"no BF16 peak known for {device_name!r}: pass --peak-tflops")
    if device_type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    else:
        import resource

        out["peak_gpu_memory_gib"] = None
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB on Linux
    return out


# ------------------------------------------------------------------------------------------------
# The parts
# ------------------------------------------------------------------------------------------------


@dataclass
class State:
    """What later parts need from earlier ones."""

    mode: Mode
    data: Path  # the shared data directory (../shared/data or the packed copy)
    work: Path
    peak_override: float | None
    cfg: object = None  # the experiment (train_eager's; train_compiled flips trainer.compile)
    checkpoint: Path | None = None  # a trained checkpoint for the decoding parts


def part_data(st: State) -> dict:
    from nmt.config import load_config
    from nmt.data import prepare_corpus

    corpus = st.work / "corpus"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scale_corpus.py"), str(st.mode.pairs), str(corpus),
                    "--shard-size", str(st.mode.shard_size), "--data", str(st.data)], check=True)
    generate_s = time.perf_counter() - t0
    shards = [str(corpus / name) for name in json.loads((corpus / "manifest.json").read_text())["shards"]]
    st.cfg = load_config(BASE_CONFIG, [
        *st.mode.overrides, f"data.train={json.dumps(shards)}", f"data.valid={st.data / 'tatoeba-cmn' / 'valid'}",
        "data.test=null", f"data.prepared_dir={st.work / 'prepared'}", f"trainer.max_steps={st.mode.steps}",
        "trainer.val_check_interval=100000", "trainer.log_every_n_steps=50", "trainer.compile=false"])
    t1 = time.perf_counter()
    prepared = prepare_corpus(st.cfg, Path(st.cfg.data.prepared_dir))
    meta = prepared.meta
    return {"pairs": st.mode.pairs, "shards": len(shards), "generate_s": round(generate_s, 1),
            "prepare_s": round(time.perf_counter() - t1, 1), "prepare_seconds": meta["seconds"],
            "num_proc": st.cfg.data.num_proc, "pairs_kept": meta["pairs"], "cleaning": meta["stats"],
            "src_tokens": meta["src_tokens"], "tgt_tokens": meta["tgt_tokens"],
            "vocab_size": prepared.tokenizer().tgt_vocab_size}


def part_train(st: State, *, compile: bool) -> dict:
    from nmt.training.run import train

    if st.cfg is None:
        raise RuntimeError("needs the data part, which failed")
    cfg = st.cfg
    cfg.trainer.compile = compile
    budget = st.mode.budgets_s["train_compiled" if compile else "train_eager"]
    seconds = max(budget - st.mode.startup_s, 10)
    cfg.trainer.max_time = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"  # a run cut here still saves last.ckpt
    run_dir = st.work / ("train_compiled" if compile else "train_eager")
    meter = make_meter(st.mode.warmup)
    result = train(cfg, run_dir, test=False, callbacks=[meter])
    cfg.trainer.compile, cfg.trainer.max_time = False, None
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if st.checkpoint is None and checkpoint.is_file():
        st.checkpoint = checkpoint
    out = summarise_throughput(meter, cfg.model, st.peak_override)
    out.update({"compile": compile, "precision": cfg.trainer.precision, "max_tokens": cfg.data.max_tokens,
                "steps_run": meter.started, "max_steps": cfg.trainer.max_steps, "parameters": meter.parameters,
                "vocab_size": meter.vocab, "skipped_nonfinite_steps": result.skipped_steps,
                "wall_s": round(result.wall_s, 1), "nmt_reported_tokens_per_s": round(result.train_tokens_per_s, 1)})
    del result, meter
    _free_memory()
    return out


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _test_sentences(st: State) -> list[str]:
    lines = (st.data / "wmt22-generaltest2022-zhen" / "test.zh").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines[: st.mode.decode_sentences]]


def _timed_decode(translator, sentences: list[str], st: State, budget_end: float) -> dict:
    """Beam 5 over `sentences` in chunks (the budget is checked between them), after a warm-up
    call; sentences/s and target tokens/s (EOS not counted) of the timed calls."""
    import torch

    device = torch.device(st.mode.device)
    search = dict(beam_size=5, length_penalty="length", alpha=1.0)
    translator.translate(sentences[:8], **search)  # CUDA context, cuBLAS handles, allocator pools
    outputs, start = [], _clock(device)
    for i in range(0, len(sentences), st.mode.decode_chunk):
        if time.monotonic() > budget_end:
            break
        outputs += translator.translate(sentences[i: i + st.mode.decode_chunk], **search)
    seconds = _clock(device) - start
    tokens = sum(len(t.target_ids) for t in outputs)
    return {"sentences_in": len(sentences), "sentences_out": len(outputs), "complete": len(outputs) == len(sentences),
            "seconds": round(seconds, 2), "sentences_per_s": round(len(outputs) / seconds, 2),
            "target_tokens": tokens, "target_tokens_per_s": round(tokens / seconds, 1),
            "mean_output_tokens": round(tokens / max(len(outputs), 1), 1),
            "search": "beam 5, length penalty |Y|^1, max length = the checkpoint's a*src_len+b",
            "max_tokens": st.mode.decode_max_tokens, "device": st.mode.device}


def _decode_runs(open_translator, st: State, part: str, dtype: str) -> list[dict]:
    """One timed run per batch size of the mode, each with its share of the part's budget."""
    sentences, runs = _test_sentences(st), []
    share = (st.mode.budgets_s[part] - 10) / len(st.mode.decode_batches)  # 10 s kept for clean-up
    for batch in st.mode.decode_batches:
        translator = open_translator(batch)
        runs.append({"batch_sentences": batch, "dtype": dtype,
                     **_timed_decode(translator, sentences, st, time.monotonic() + share)})
        del translator
        _free_memory()
    return runs


def part_decode_torch(st: State) -> dict:
    from nmt.api import Translator

    if st.checkpoint is None:
        raise RuntimeError("needs a checkpoint from train_eager, which failed")
    dtype = st.mode.decode_dtypes[0]
    runs = _decode_runs(lambda batch: Translator.from_checkpoint(
        st.checkpoint, device=st.mode.device, max_tokens=st.mode.decode_max_tokens, max_sentences=batch, dtype=dtype),
        st, "decode_torch", dtype)
    return {"engine": "torch", "checkpoint": str(st.checkpoint), "device": st.mode.device, "runs": runs}


def part_decode_ctranslate2(st: State) -> dict:
    from nmt.api import Translator

    if st.checkpoint is None:
        raise RuntimeError("needs a checkpoint from train_eager, which failed")
    import ctranslate2  # an ImportError here is a failure: the check needs the package

    export = st.work / "ct2"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nmt.cli.export", "--format", "ctranslate2", str(st.checkpoint), str(export)],
                   check=True)
    export_s = round(time.perf_counter() - t0, 1)
    info = {"engine": "ctranslate2", "ctranslate2": ctranslate2.__version__, "export_s": export_s,
            "cuda_devices_seen_by_ctranslate2": ctranslate2.get_cuda_device_count()}
    sentences = _test_sentences(st)
    if st.mode.device == "cuda" and info["cuda_devices_seen_by_ctranslate2"] == 0:
        why = "sees no CUDA device (a build without CUDA, or no driver it can use)"
    else:
        dtype = st.mode.decode_dtypes[1]
        try:
            runs = _decode_runs(lambda batch: Translator.from_checkpoint(
                export, device=st.mode.device, engine="ctranslate2", max_tokens=st.mode.decode_max_tokens,
                max_sentences=batch, dtype=dtype), st, "decode_ctranslate2", dtype)
            return {**info, "device": st.mode.device, "runs": runs}
        except Exception as err:
            if st.mode.device == "cpu":
                raise
            traceback.print_exc()
            why = f"failed on CUDA ({_one_line(err)})"
    # No CUDA run. If the same export translates on the CPU, the export and our engine are fine and
    # this CTranslate2 build cannot use this machine's CUDA (e.g. its CUDA 12 cuBLAS is absent): a result.
    cpu = Translator.from_checkpoint(export, device="cpu", engine="ctranslate2")
    cpu.translate(sentences[:3], beam_size=5, length_penalty="length", alpha=1.0)
    return {**info, "status": "unavailable", "device": "cuda",
            "reason": f"ctranslate2 {ctranslate2.__version__} {why}; the same export translates on the CPU"}


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:500]


def run_part(report: dict, out: Path, name: str, st: State, fn) -> None:
    """Run one part under its time budget (SIGALRM); record its figures, or its error; save the report."""
    budget = st.mode.budgets_s[name]
    print(f"\n=== gpu_check: {name} (budget {budget} s) ===", flush=True)
    entry, start = {"status": "failed", "budget_s": budget}, time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        figures = fn(st)
        entry.update({"status": "ok", **figures})
    except (Exception, Stop) as err:
        traceback.print_exc()
        entry["error"] = _one_line(err)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    entry["seconds"] = round(time.perf_counter() - start, 1)
    report["parts"][name] = entry
    print(f"=== gpu_check: {name}: {entry['status']} in {entry['seconds']} s"
          f"{': ' + entry.get('error', entry.get('reason', '')) if entry['status'] != 'ok' else ''}", flush=True)
    save_report(report, out)


def describe(st: State) -> dict:
    import torch

    from nmt.provenance import describe_machine, environment, git_commit

    try:
        import ctranslate2

        ct2 = {"version": ctranslate2.__version__, "cuda_devices": ctranslate2.get_cuda_device_count()}
    except ImportError:
        ct2 = None
    commit, packed = git_commit(), PACK / "commit.txt"
    if commit is None and packed.is_file():  # a copied working tree without .git: the commit it was packed from
        commit = packed.read_text(encoding="utf-8").strip() + " (from build/gpu_check/commit.txt)"
    cuda = torch.cuda.is_available()
    return {"mode": st.mode.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"gpu": torch.cuda.get_device_name() if cuda else None, "description": describe_machine(),
                        "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                        "ctranslate2": ct2, "python": sys.version.split()[0], "git_commit": commit,
                        "torch_threads": torch.get_num_threads(),
                        "versions": environment()["versions"]},
            "settings": {"config": str(BASE_CONFIG.relative_to(ROOT)), "overrides": st.mode.overrides,
                         "corpus_pairs": st.mode.pairs, "steps": st.mode.steps, "warmup_steps": st.mode.warmup,
                         "decode_sentences": st.mode.decode_sentences, "decode_max_tokens": st.mode.decode_max_tokens,
                         "data": str(st.data), "work": str(st.work)},
            "not_in_this_mode": {} if st.mode.name == "real" else {
                "train_compiled": "torch.compile on CPU spends far longer compiling C++ kernels than this run takes"},
            "parts": {name: {"status": "not run"} for name in st.mode.parts}, "failed": []}


def save_report(report: dict, out: Path) -> None:
    report["failed"] = [name for name, p in report["parts"].items() if p["status"] not in ("ok", "unavailable")]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(render_markdown(report), encoding="utf-8")


def _fmt(value, spec: str = ",.0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def render_markdown(r: dict) -> str:
    m, s, parts = r["machine"], r["settings"], r["parts"]
    lines = [f"# GPU check ({r['mode']} mode), {r['started']}", "",
             f"- GPU: {m['gpu'] or 'none'}; machine: {m['description']}",
             f"- torch {m['torch']}, CUDA {m['cuda'] or 'none'}; ctranslate2 "
             f"{(m['ctranslate2'] or {}).get('version', 'absent')}; Python {m['python']}; commit {m['git_commit']}",
             f"- {s['config']} with {' '.join(s['overrides'])}; {s['corpus_pairs']:,}-pair scale corpus, prepared", ""]
    data = parts.get("data", {})
    if data.get("status") == "ok":
        lines += [f"Data: {data['pairs']:,} pairs in {data['shards']} shards generated in {data['generate_s']} s, "
                  f"prepared with {data['num_proc']} processes in {data['prepare_s']} s "
                  f"({data['pairs_kept']:,} pairs kept, {data['tgt_tokens']:,} target tokens, vocabulary {data['vocab_size']:,}).", ""]
    lines += ["## Training throughput", "",
              "| run | status | steps timed | target tok/s | MFU | peak GPU memory | median step | warm-up |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("train_eager", "train_compiled"):
        p = parts.get(name)
        if p is None:
            continue
        mfu = f"{p['mfu']:.1%}" if p.get("mfu") is not None else (p.get("mfu_reason") or "-")
        lines.append(f"| {name} | {p['status']} | {_fmt(p.get('steps_timed'))} | {_fmt(p.get('target_tokens_per_s'))} | "
                     f"{mfu} | {_fmt(p.get('peak_gpu_memory_gib'), '.1f', ' GiB')} | {_fmt(p.get('median_step_s'), '.3f', ' s')} | "
                     f"{_fmt(p.get('warmup_s'), '.1f', ' s')} |")
    eager = parts.get("train_eager", {})
    if eager.get("flop_per_target_token"):
        k = eager["keys_per_query"]
        lines += ["", f"Model FLOP per target token: {eager['flop_per_target_token']:,.0f} = 6 x multiply-adds of every "
                  f"matmul (train_flops_per_target_token in scripts/gpu_check.py), at source/target {k['src_per_tgt']}, "
                  f"keys per query: encoder {k['enc_keys']}, decoder self {k['self_keys']}, cross {k['cross_keys']}; "
                  f"padding {eager['padding_share']['src']:.1%} (source), {eager['padding_share']['tgt']:.1%} (target). "
                  f"Peak: {_fmt(eager['peak_bf16_flops_per_s'], '.3g')} FLOP/s dense BF16."]
    lines += ["", "## Beam decoding", "",
              "| engine | device | dtype | batch (sentences) | status | sentences | sentences/s | target tok/s | "
              "mean output tokens |", "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name in ("decode_torch", "decode_ctranslate2"):
        p = parts.get(name)
        if p is None:
            continue
        for run in p.get("runs") or [{}]:
            done = f"{run['sentences_out']}/{run['sentences_in']}" if "sentences_out" in run else "-"
            lines.append(f"| {name.removeprefix('decode_')} | {p.get('device', '-')} | {run.get('dtype', '-')} | "
                         f"{run.get('batch_sentences', '-')} | {p['status']} | {done} | "
                         f"{_fmt(run.get('sentences_per_s'), ',.1f')} | {_fmt(run.get('target_tokens_per_s'))} | "
                         f"{_fmt(run.get('mean_output_tokens'), '.1f')} |")
    lines += ["", "## Parts", "", "| part | status | seconds | budget | error or reason |", "| --- | --- | ---: | ---: | --- |"]
    for name, p in parts.items():
        lines.append(f"| {name} | {p['status']} | {_fmt(p.get('seconds'), '.1f')} | {p.get('budget_s', '-')} | "
                     f"{(p.get('error') or p.get('reason') or '').replace('|', '/')} |")
    for name, why in r.get("not_in_this_mode", {}).items():
        lines.append(f"| {name} | not in this mode | | | {why} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------


def find_data() -> Path | None:
    for directory in (ROOT.parent / "shared" / "data", PACK / "data"):
        if (directory / "tatoeba-cmn" / "valid.zh").is_file():
            return directory
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the same code path on CPU with a tiny model, in ~30 s")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check", help="where results.json/.md go")
    ap.add_argument("--work", type=Path, default=None, help="corpus, prepared data, checkpoints (default: a temporary "
                    "directory, removed at the end unless --keep-work)")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense BF16 peak, if not in the table")
    args = ap.parse_args(argv)
    mode = TINY if args.tiny else REAL
    data = find_data()
    if data is None:
        print("gpu_check: error: needs ../shared/data (or build/gpu_check/data, from `gpu_check.sh --pack`)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="nmt-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the GPU machine has no network
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_cache"))
    if mode.device == "cpu":
        # One thread: on a 2-core machine with anything else running, two OpenMP threads that spin
        # waiting for each other made the tiny steps 20x slower (0.7 s instead of 0.035 s).
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    cuda = torch.cuda.is_available()
    print(f"gpu_check ({mode.name} mode): torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), "
          f"CUDA available: {cuda}{' on ' + torch.cuda.get_device_name() if cuda else ''}; python {sys.executable}", flush=True)
    if mode.device == "cuda" and not cuda:
        why = "this torch has no CUDA build" if torch.version.cuda is None else "no GPU visible to torch"
        print(f"gpu_check: error: CUDA is not available ({why}, torch {torch.__version__}); run --tiny on a CPU machine",
              file=sys.stderr)
        return 2
    st = State(mode=mode, data=data, work=work, peak_override=args.peak_tflops * 1e12 if args.peak_tflops else None)
    report = describe(st)
    save_report(report, args.out)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    # Compiled training runs last: it is the part most likely to overrun, and an overrun then costs no other figure.
    steps = [("data", part_data), ("train_eager", lambda s: part_train(s, compile=False)),
             ("decode_torch", part_decode_torch), ("decode_ctranslate2", part_decode_ctranslate2),
             ("train_compiled", lambda s: part_train(s, compile=True))]
    for name, fn in steps:
        if name in mode.parts and not TERMINATED:
            run_part(report, args.out, name, st, fn)
    if not args.keep_work and args.work is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(f"\ngpu_check: {args.out / 'results.md'}; failed parts: {', '.join(report['failed']) or 'none'}")
    print((args.out / "results.md").read_text(encoding="utf-8"))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
