"""Benchmark suite (issue 6): training and decoding speed and memory on a fixed workload, each
next to a reference measured in the same run. Not a test: nothing here asserts a time.

    python scripts/bench.py [--out runs/bench] [--train-steps 200] [--decode-steps 1200]
                            [--tatoeba-checkpoint CKPT] [--reuse]

Workload (configs/bench_hsk.yaml): the embedded HSK corpus in package order, first 4,000 items
train, last 354 test; joint SentencePiece 4,000; Transformer 3+3 layers, d_model 256, 4 heads,
d_ff 1,024; ~4,096-token batches. Every measurement runs in its own process, so its peak RSS
(os.wait4) is its own:

- training: target tokens/s (non-pad target tokens incl. EOS over the steps after the first
  --warmup-steps, per second of wall time) and peak RSS of nmt's trainer (Lightning), of nmt with
  bfloat16 mixed precision, of nmt with trainer.compile, and of a plain PyTorch loop training torch.nn.Transformer of the same size on
  the same batches (the reference);
- decoding the 354 test sentences, beam 5, 32 sentences per batch, length penalty |Y|^1: our
  translator fp32 / int8 / without the incremental cache, and the CTranslate2 export fp32 / int8;
  sentences/s, target tokens/s, peak RSS, and how many outputs equal fp32 torch's;
- nmt-translate's peak RSS as a user runs it (torch and CTranslate2 engines);
- cost curves: decoding seconds per sentence against source length (buckets of 10 tokens; long
  sentences from WMT22 when ../shared/data is there) and training tokens/s against batch size,
  both as PNG;
- with --tatoeba-checkpoint: BLEU of fp32 and int8 (torch and CTranslate2) on the Tatoeba test.

Writes OUT/results.json, OUT/results.md and OUT/*.png; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from nmt.provenance import describe_machine

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
N_TRAIN = 4000
BEAM, BATCH = 5, 32


# -- running one measurement in its own process ---------------------------------------------------


def child(out: Path, kind: str, **kwargs) -> dict:
    """Run `kind` in a fresh Python process; returns its JSON result plus its own peak RSS.
    The parent stays small (no torch, no matplotlib until the end): a forked child's peak RSS
    counts the parent's pages until it execs."""
    spec = json.dumps({"kind": kind, "out": str(out), **kwargs})
    proc = subprocess.Popen([sys.executable, __file__, "--child", spec], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {kind} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024)  # KB on Linux
    return result


def command_rss(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a command, as a user runs it."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {err.strip()[-500:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


# -- the workload ---------------------------------------------------------------------------------


def write_workload(out: Path) -> Path:
    """The raw corpus in package order (whitespace normalised): first 4,000 train, the rest test."""
    blob = resources.files("hsk_sentences_audio").joinpath("data", "sentences.json").read_text("utf-8")
    items = [(" ".join(x["chinese"].split()), " ".join(x["translation"]["en"].split())) for x in json.loads(blob)]
    data = out / "hsk"
    data.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", items[:N_TRAIN]), ("test", items[N_TRAIN:])):
        for side, lang in ((0, "zh"), (1, "en")):
            (data / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")
    return data


def workload_config(out: Path, overrides: list[str] = ()):
    from nmt.config import load_config

    data = out / "hsk"
    return load_config(ROOT / "configs" / "bench_hsk.yaml",
                       [f"data.train={data / 'train'}", f"data.valid={data / 'test'}", *overrides])


# -- training -------------------------------------------------------------------------------------


def timed_steps(warmup: int):
    """A Lightning callback: target tokens and seconds of the steps after the first `warmup`."""
    import lightning as L

    from nmt.tokenizer import PAD_ID

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.steps, self.tokens, self.start, self.end = 0, 0, None, None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.steps += 1
            now = time.perf_counter()
            if self.steps == warmup:
                self.start = now
            elif self.steps > warmup:
                self.tokens += int((batch["tgt_out"] != PAD_ID).sum())
                self.end = now

    return StepTimer()


def train_nmt(spec: dict) -> dict:
    import shutil

    import torch

    from nmt.training.run import train

    shutil.rmtree(spec["run_dir"], ignore_errors=True)  # the bench's own run directory, from a previous run

    overrides = [f"trainer.max_steps={spec['steps']}", f"data.max_tokens={spec['max_tokens']}",
                 f"trainer.compile={str(spec.get('compile', False)).lower()}", *spec.get("overrides", [])]
    cfg = workload_config(Path(spec["out"]), overrides)
    timer = timed_steps(spec["warmup"])
    result = train(cfg, Path(spec["run_dir"]), test=False, callbacks=[timer])
    if timer.end is None:  # a time limit (trainer.max_time) ended the run within the warm-up steps
        raise SystemExit(f"bench: the run stopped after {timer.steps} steps, not more than the {spec['warmup']} "
                         "warm-up steps: nothing was timed (give it more steps or time)")
    seconds = timer.end - timer.start
    return {"tokens_per_s": round(timer.tokens / seconds, 1), "timed_steps": timer.steps - spec["warmup"],
            "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
            "checkpoint": str(result.run_dir / "checkpoints" / "last.ckpt")}


def train_reference(spec: dict) -> dict:
    """The same-run reference: a plain PyTorch loop around torch.nn.Transformer of the same size,
    the same batches in the same order, the same loss, optimiser (fused Adam), schedule and
    clipping, and the same dropout as nmt's config: nn.Transformer's single `dropout` also drops
    attention weights and the FFN's hidden units, so those are set to model.attention_dropout and
    model.activation_dropout (0 by default), leaving dropout on embeddings and residuals, as nmt.
    Differences in the work done: nn.Transformer always ends encoder and decoder with a LayerNorm
    (nmt only when pre-norm), and the output layer and loss run on every target position, padding
    included (nmt skips padding: one of the things the toolkit does to be fast)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nmt.data import TranslationDataModule
    from nmt.models.transformer import sinusoidal_table
    from nmt.tokenizer import PAD_ID, Tokenizer
    from nmt.training.schedule import inverse_sqrt_lr

    cfg = workload_config(Path(spec["out"]), [f"data.max_tokens={spec['max_tokens']}"])
    torch.manual_seed(cfg.trainer.seed)
    tokenizer = Tokenizer.load(Path(spec["tokenizer_dir"]))  # the one nmt's run trained
    data = TranslationDataModule(cfg, tokenizer)
    data.setup("fit")
    loader = data.train_dataloader()
    m, vocab = cfg.model, tokenizer.src_vocab_size

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, m.d_model, padding_idx=PAD_ID)
            nn.init.normal_(self.embed.weight, std=m.d_model**-0.5)
            self.register_buffer("pe", sinusoidal_table(m.max_positions, m.d_model))
            self.drop = nn.Dropout(m.dropout)
            self.transformer = nn.Transformer(m.d_model, m.n_heads, m.n_encoder_layers, m.n_decoder_layers, m.d_ff,
                                              m.dropout, batch_first=True, norm_first=m.norm_first)
            for layer in [*self.transformer.encoder.layers, *self.transformer.decoder.layers]:
                layer.dropout.p = m.activation_dropout  # the FFN's hidden units
                for attention in (layer.self_attn, getattr(layer, "multihead_attn", None)):
                    if attention is not None:
                        attention.dropout = m.attention_dropout  # the attention weights
            self.out = nn.Linear(m.d_model, vocab, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, src, tgt_in):
            x = self.drop(self.embed(src) * math.sqrt(m.d_model) + self.pe[: src.size(1)])
            y = self.drop(self.embed(tgt_in) * math.sqrt(m.d_model) + self.pe[: tgt_in.size(1)])
            causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1))
            h = self.transformer(x, y, tgt_mask=causal, tgt_is_causal=True, src_key_padding_mask=src == PAD_ID,
                                 tgt_key_padding_mask=tgt_in == PAD_ID, memory_key_padding_mask=src == PAD_ID)
            return self.out(h)

    model = Reference().train()
    o = cfg.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=tuple(o.adam_betas), eps=o.adam_eps,
                                 fused=True)  # as nmt's TranslationModule
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: inverse_sqrt_lr(s + 1, peak_lr=o.peak_lr,
                                                                                         warmup_steps=o.warmup_steps))
    step, tokens, start, epoch = 0, 0, None, 0
    while step < spec["steps"]:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            logits = model(batch["src"], batch["tgt_in"])
            n = int((batch["tgt_out"] != PAD_ID).sum())
            loss = F.cross_entropy(logits.view(-1, vocab), batch["tgt_out"].view(-1), ignore_index=PAD_ID,
                                   label_smoothing=o.label_smoothing, reduction="sum") / n
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            scheduler.step()
            step += 1
            if step == spec["warmup"]:
                start = time.perf_counter()
            elif step > spec["warmup"]:
                tokens += n
            if step == spec["steps"]:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    return {"tokens_per_s": round(tokens / seconds, 1), "timed_steps": step - spec["warmup"],
            "seconds": round(seconds, 1), "threads": torch.get_num_threads(), "final_loss": round(float(loss), 3)}


# -- decoding -------------------------------------------------------------------------------------


class PrefixRefeed:
    """A model wrapper without the incremental cache: every step re-runs the decoder over the
    whole prefix (the slow reference for the cache). Only the last position goes through the output
    layer (`keep`), as with the cache: the difference measured is the cache alone."""

    def __init__(self, model) -> None:
        self.model, self.max_output_len = model, model.max_output_len

    def encode(self, src, src_mask):
        return self.model.encode(src, src_mask)

    def make_cache(self, record_attention: bool = False, capacity: int | None = None):
        return _Prefix()

    def decode(self, tgt_in, memory, src_mask, cache, vocab=None):
        import torch

        cache.tokens = tgt_in if cache.tokens is None else torch.cat([cache.tokens, tgt_in], dim=1)
        keep = torch.zeros_like(cache.tokens, dtype=torch.bool)
        keep[:, -1] = True
        return self.model.decode(cache.tokens, memory, src_mask, None, keep=keep, vocab=vocab).unsqueeze(1)  # (N, 1, V)


class _Prefix:
    group = 1  # the memory stays one row per decoder row

    def __init__(self) -> None:
        self.tokens = None

    def reorder(self, index, same_sources: bool = False, group: int = 1) -> None:
        self.tokens = self.tokens.index_select(0, index)


class GrowingCache:
    """A model wrapper whose decoder cache grows by one torch.cat per step (no capacity): the
    reference for the preallocated cache (issue 20)."""

    def __init__(self, model) -> None:
        self.model, self.max_output_len = model, model.max_output_len

    def __getattr__(self, name):  # encode, decode: the model's own
        return getattr(self.model, name)

    def make_cache(self, record_attention: bool = False, capacity: int | None = None):
        return self.model.make_cache(record_attention=record_attention, capacity=None)


class CompiledStep:
    """A model wrapper whose decoder step (`decode`: embedding, layers with the cache, output layer)
    is `torch.compile`d with dynamic shapes (batch rows and cache length change every step)."""

    def __init__(self, model, freezing: bool = False) -> None:
        import torch

        self.model, self.max_output_len = model, model.max_output_len
        if freezing:  # weights as constants: inductor prepacks the linear layers for oneDNN itself
            import torch._inductor.config

            torch._inductor.config.freezing = True
        self._decode = torch.compile(model.decode, dynamic=True)

    def __getattr__(self, name):  # encode, make_cache: the model's own
        return getattr(self.model, name)

    def decode(self, tgt_in, memory, src_mask, cache=None, keep=None, vocab=None):
        return self._decode(tgt_in, memory, src_mask, cache, keep, vocab)


def decode(spec: dict) -> dict:
    """Translate `src_file` (beam 5, batches of 32 sentences) after a warm-up; time it.
    Optional: `options` (more DecodingOptions, e.g. shortlist), `uncached` / `growing_cache`
    (reference caches), `compiled` (torch.compile'd decoder step; the warm-up's seconds, which
    include compiling, are reported), `workers` (batches in parallel, one thread each), `onednn`
    (False: torch's own nn.Linear instead of the oneDNN-packed one), `dtype` (bfloat16: the model cast),
    `threads` (torch's intra-op threads)."""
    import torch

    from nmt.api import Translator

    engine = spec["engine"]
    if spec.get("threads"):  # torch's intra-op threads (CTranslate2: `workers` sets its threads)
        torch.set_num_threads(spec["threads"])
    translator = Translator.from_checkpoint(spec["model"], engine=engine, int8=spec.get("int8", False),
                                            max_sentences=BATCH, max_tokens=10**9, workers=spec.get("workers"),
                                            onednn=spec.get("onednn"), dtype=spec.get("dtype", "float32"))
    if spec.get("uncached"):
        translator.engine.model = PrefixRefeed(translator.engine.model)
    if spec.get("growing_cache"):
        translator.engine.model = GrowingCache(translator.engine.model)
    if spec.get("compiled"):
        translator.engine.model = CompiledStep(translator.engine.model, freezing=spec.get("freezing", False))
    lines = Path(spec["src_file"]).read_text(encoding="utf-8").splitlines()
    search = dict(beam_size=BEAM, length_penalty="length", alpha=1.0, **spec.get("options", {}))
    start = time.perf_counter()
    translator.translate(lines[: BATCH * (spec.get("workers") or 1)], **search)  # warm-up: allocator, pools, lazy inits
    warm_up = time.perf_counter() - start
    if spec.get("buckets"):  # seconds per sentence against source length
        return {"buckets": bucket_costs(translator, lines, search, spec.get("max_len", 100))}
    start = time.perf_counter()
    results = translator.translate(lines, **search)
    seconds = time.perf_counter() - start
    tokens = sum(len(r.target_ids or []) + 1 for r in results)
    hyps = [r.text for r in results]
    return {"sentences": len(lines), "seconds": round(seconds, 3), "warm_up_seconds": round(warm_up, 3),
            "sentences_per_s": round(len(lines) / seconds, 1),
            "target_tokens_per_s": round(tokens / seconds, 1), "hypotheses": hyps,
            **bleu(hyps, Path(spec["ref_file"]))}


def bucket_costs(translator, lines: list[str], search: dict, max_len: int) -> dict:
    """Up to 32 sentences per 10-token bucket of source length (up to max_len), decoded as one batch."""
    lengths = [len(ids) for ids in translator.tokenizer.encode_src(lines)]
    buckets: dict[int, list[str]] = {}
    for line, n in zip(lines, lengths):
        if 0 < n <= max_len and len(buckets.setdefault((n - 1) // 10, [])) < BATCH:
            buckets[(n - 1) // 10].append(line)
    costs = {}
    for b, group in sorted(buckets.items()):
        if len(group) >= 8:
            start = time.perf_counter()
            translator.translate(group, **search)
            costs[f"{10 * b + 1}-{10 * b + 10}"] = round((time.perf_counter() - start) / len(group), 4)
    return costs


def bleu(hypotheses: list[str], ref_file: Path) -> dict:
    from nmt.evaluation import corpus_scores

    refs = ref_file.read_text(encoding="utf-8").splitlines()
    scores = corpus_scores(hypotheses, [refs], tgt_lang="en")
    return {"bleu": round(scores["bleu"]["score"], 2), "signature": scores["bleu"]["signature"]}


# -- the driver -----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--train-steps", type=int, default=200, help="steps of each timed training run")
    p.add_argument("--warmup-steps", type=int, default=20, help="first steps left out of the timing")
    p.add_argument("--decode-steps", type=int, default=1200, help="training steps of the model that is decoded")
    p.add_argument("--batch-sizes", default="1024,2048,4096,8192", help="max_tokens values of the batch-size curve")
    p.add_argument("--curve-steps", type=int, default=40, help="steps per batch size (after 5 warm-up steps)")
    p.add_argument("--tatoeba-checkpoint", type=Path, default=None,
                   help="a Tatoeba Transformer checkpoint: BLEU of fp32 against int8 on the Tatoeba test")
    p.add_argument("--reuse", action="store_true", help="reuse the decode model already in OUT")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec = json.loads(args.child)
        kinds = {"train_nmt": train_nmt, "train_reference": train_reference, "decode": decode,
                 "environment": lambda spec: __import__("nmt.provenance").provenance.environment(1)}
        print(json.dumps(kinds[spec["kind"]](spec), ensure_ascii=False))
        return 0

    out = args.out.resolve()
    data = write_workload(out)
    report: dict = {"machine": describe_machine(), "command": " ".join(["python", "scripts/bench.py", *sys.argv[1:]]),
                    "workload": "configs/bench_hsk.yaml: HSK items 1-4000 train, 4001-4354 test; joint SentencePiece "
                                "4,000; Transformer 3+3, d_model 256, 4 heads, d_ff 1,024"}
    report["environment"] = child(out, "environment")  # the parent imports no torch: see child()

    # 1. training throughput: nmt (Lightning), nmt + torch.compile, plain nn.Transformer loop
    steps, warm = args.train_steps, args.warmup_steps
    say(f"training: {steps} steps each, timing steps {warm + 1}-{steps}")
    train = {}
    train["nmt"] = child(out, "train_nmt", steps=steps, warmup=warm, max_tokens=4096, run_dir=str(out / "train-nmt"))
    train["reference"] = child(out, "train_reference", steps=steps, warmup=warm, max_tokens=4096,
                               tokenizer_dir=str(out / "train-nmt" / "tokenizer"))
    train["nmt_low_memory"] = child(out, "train_nmt", steps=steps, warmup=warm, max_tokens=4096,
                                    overrides=["trainer.low_memory=true"], run_dir=str(out / "train-nmt-low-memory"))
    train["nmt_activation_dropout"] = child(out, "train_nmt", steps=steps, warmup=warm, max_tokens=4096,
                                            overrides=["model.activation_dropout=0.1"],
                                            run_dir=str(out / "train-nmt-activation-dropout"))
    train["nmt_bf16"] = child(out, "train_nmt", steps=steps, warmup=warm, max_tokens=4096,
                              overrides=["trainer.precision=bf16-mixed"], run_dir=str(out / "train-nmt-bf16"))
    train["nmt_compile"] = child(out, "train_nmt", steps=steps, warmup=warm, max_tokens=4096, compile=True,
                                 run_dir=str(out / "train-nmt-compile"))
    for name, r in train.items():
        say(f"  {name:12s} {r['tokens_per_s']:8.1f} target tokens/s  peak RSS {r['peak_rss_mb']} MB")
    report["training"] = train

    # 2. training tokens/s against batch size
    curve = {}
    for max_tokens in map(int, args.batch_sizes.split(",")):
        r = child(out, "train_nmt", steps=args.curve_steps + 5, warmup=5, max_tokens=max_tokens,
                  run_dir=str(out / f"curve-{max_tokens}"))
        curve[max_tokens] = {"tokens_per_s": r["tokens_per_s"], "peak_rss_mb": r["peak_rss_mb"]}
        say(f"  max_tokens {max_tokens:5d}: {r['tokens_per_s']:8.1f} target tokens/s")
    report["batch_size_curve"] = curve

    # 3. the model that is decoded, and its CTranslate2 exports
    ckpt = out / "decode-model" / "checkpoints" / "last.ckpt"
    if not (args.reuse and ckpt.is_file()):
        say(f"training the decode model: {args.decode_steps} steps")
        child(out, "train_nmt", steps=args.decode_steps, warmup=1, max_tokens=4096, run_dir=str(out / "decode-model"))
    for int8, name in ((False, "ct2"), (True, "ct2-int8")):
        cmd = [sys.executable, "-m", "nmt.cli.export", str(ckpt), str(out / name)] + (["--quantization", "int8"] if int8 else [])
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)

    # 4. decoding the test set
    test = data / "test.zh"
    modes = {"torch fp32": dict(engine="torch", model=str(ckpt)),
             "torch int8": dict(engine="torch", model=str(ckpt), int8=True),
             "torch fp32, no cache": dict(engine="torch", model=str(ckpt), uncached=True),
             "ctranslate2 fp32": dict(engine="ctranslate2", model=str(out / "ct2")),
             "ctranslate2 int8": dict(engine="ctranslate2", model=str(out / "ct2-int8"))}
    say(f"decoding {test} (beam {BEAM}, {BATCH} sentences per batch)")
    decoding = {name: child(out, "decode", src_file=str(test), ref_file=str(data / "test.en"), **spec)
                for name, spec in modes.items()}
    reference = decoding["torch fp32"]["hypotheses"]
    for name, r in decoding.items():
        hyps = r.pop("hypotheses")
        r["identical_to_torch_fp32"] = f"{sum(a == b for a, b in zip(hyps, reference))}/{len(reference)}"
        say(f"  {name:22s} {r['seconds']:6.2f} s  {r['sentences_per_s']:6.1f} sent/s  RSS {r['peak_rss_mb']} MB  "
            f"identical {r['identical_to_torch_fp32']}  BLEU {r['bleu']}")
    report["decoding"] = decoding

    # 5. nmt-translate as a user runs it: peak RSS
    cli = {}
    for name, engine, model in (("torch", "torch", ckpt), ("ctranslate2", "ctranslate2", out / "ct2"),
                                ("ctranslate2 int8", "ctranslate2", out / "ct2-int8")):
        seconds, rss = command_rss([sys.executable, "-m", "nmt.cli.translate", "--checkpoint", str(model), "--engine",
                                    engine, "--src", "zh", "--tgt", "en", "-i", str(test), "-o", os.devnull,
                                    "--length-penalty", "length", "--alpha", "1"])
        cli[name] = {"seconds": round(seconds, 2), "peak_rss_mb": round(rss)}
        say(f"  nmt-translate --engine {name:18s} {seconds:5.2f} s (with start-up)  peak RSS {rss:.0f} MB")
    report["nmt_translate"] = cli

    # 6. decoding cost against source length
    long_file = SHARED / "wmt22-generaltest2022-zhen" / "test.zh"
    lengths_src = out / "lengths.zh"
    lines = test.read_text(encoding="utf-8").splitlines()
    if long_file.is_file():
        lines += long_file.read_text(encoding="utf-8").splitlines()
    lengths_src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    say("decoding cost against source length")
    report["cost_by_length"] = {  # without the cache the cost grows with the square of the length: stop at 50
        name: child(out, "decode", src_file=str(lengths_src), buckets=True, max_len=max_len, **modes[name])["buckets"]
        for name, max_len in (("torch fp32", 100), ("torch fp32, no cache", 50), ("ctranslate2 fp32", 100))}

    # 7. int8 against fp32 on the Tatoeba test
    if args.tatoeba_checkpoint:
        tat = SHARED / "tatoeba-cmn" / "test"
        subprocess.run([sys.executable, "-m", "nmt.cli.export", str(args.tatoeba_checkpoint), str(out / "ct2-tatoeba")],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        quality = {}
        for name, spec in (("torch fp32", dict(engine="torch", model=str(args.tatoeba_checkpoint))),
                           ("torch int8", dict(engine="torch", model=str(args.tatoeba_checkpoint), int8=True)),
                           ("ctranslate2 fp32", dict(engine="ctranslate2", model=str(out / "ct2-tatoeba"))),
                           ("ctranslate2 int8", dict(engine="ctranslate2", model=str(out / "ct2-tatoeba"), int8=True))):
            r = child(out, "decode", src_file=str(tat) + ".zh", ref_file=str(tat) + ".en", **spec)
            quality[name] = {"seconds": r["seconds"], "bleu": r["bleu"], "signature": r["signature"]}
            say(f"  Tatoeba test {name:18s} BLEU {quality[name]['bleu']}")
        report["tatoeba_int8"] = {"checkpoint": str(args.tatoeba_checkpoint), **quality}

    text = json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT) + "/", "")  # paths relative to the project
    (out / "results.json").write_text(text + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out)
    say(f"\n{markdown(report)}\nwrote {out / 'results.json'}, {out / 'results.md'} and the PNGs")
    return 0


def say(message: str) -> None:
    print(message, flush=True)


def markdown(r: dict) -> str:
    t, ref = r["training"], r["training"]["reference"]["tokens_per_s"]
    lines = [f"Machine: {r['machine']}; torch {r['environment']['versions'].get('torch', '?')}. Command: `{r['command']}`.", "",
             "| training | target tokens/s | vs nn.Transformer loop | peak RSS (MB) |", "|---|---:|---:|---:|"]
    for name, label in (("nmt", "nmt-train (Lightning)"), ("nmt_low_memory", "nmt-train, trainer.low_memory"),
                        ("nmt_activation_dropout", "nmt-train, model.activation_dropout=0.1 (FFN dropout as nn.Transformer)"),
                        ("nmt_bf16", "nmt-train, trainer.precision=bf16-mixed (the reference stays float32)"),
                        ("nmt_compile", "nmt-train, trainer.compile"),
                        ("reference", "plain loop, torch.nn.Transformer")):
        if name not in t:  # a run from before the row existed
            continue
        lines.append(f"| {label} | {t[name]['tokens_per_s']:,.0f} | {t[name]['tokens_per_s'] / ref:.2f}x | "
                     f"{t[name]['peak_rss_mb']} |")
    first = r["decoding"]["torch fp32"]["seconds"]
    lines += ["", f"| decoding 354 sentences, beam {BEAM}, batch {BATCH} | seconds | sentences/s | target tokens/s | "
              "vs torch fp32 | peak RSS (MB) | identical to torch fp32 | BLEU |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in r["decoding"].items():
        lines.append(f"| {name} | {d['seconds']:.2f} | {d['sentences_per_s']:.1f} | {d['target_tokens_per_s']:,.0f} | "
                     f"{first / d['seconds']:.2f}x | {d['peak_rss_mb']} | {d['identical_to_torch_fp32']} | {d['bleu']} |")
    lines += ["", "| nmt-translate (start-up included) | seconds | peak RSS (MB) |", "|---|---:|---:|"]
    lines += [f"| --engine {name} | {c['seconds']:.2f} | {c['peak_rss_mb']} |" for name, c in r["nmt_translate"].items()]
    lines += ["", "| batch (max_tokens) | training target tokens/s | peak RSS (MB) |", "|---:|---:|---:|"]
    lines += [f"| {k} | {v['tokens_per_s']:,.0f} | {v['peak_rss_mb']} |" for k, v in r["batch_size_curve"].items()]
    if "tatoeba_int8" in r:
        lines += ["", "| Tatoeba test (2,000 sentences), beam 5 | BLEU | seconds |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['bleu']} | {v['seconds']:.2f} |" for k, v in r["tatoeba_int8"].items() if k != "checkpoint"]
    sig = r["decoding"]["torch fp32"]["signature"]
    lines += ["", f"BLEU signature: `{sig}`", ""]
    return "\n".join(lines)


def plot_cost_by_length(cost_by_length: dict, path: Path) -> None:
    """ms per sentence against the middle of each source-length bucket ("lo-hi"), one line per engine,
    on linear axes: a straight line is the linear cost that issue 20 asks for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, costs in cost_by_length.items():
        mids = [sum(map(int, k.split("-"))) / 2 for k in costs]
        ax.plot(mids, [1000 * v for v in costs.values()], marker="o", label=name)
    ax.set_xlabel("source length (subword tokens, bucket middle)")
    ax.set_ylabel(f"ms per sentence (beam {BEAM}, batch <= {BATCH})")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Decoding cost against source length (linear axes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_cost_by_length(r["cost_by_length"], out / "cost_by_length.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = list(r["batch_size_curve"])
    ax.plot([int(s) for s in sizes], [v["tokens_per_s"] for v in r["batch_size_curve"].values()], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (max_tokens)")
    ax.set_ylabel("training target tokens/s")
    ax.set_title("Training throughput against batch size")
    fig.tight_layout()
    fig.savefig(out / "tokens_per_s_by_batch.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
