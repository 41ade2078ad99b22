"""One training step of the Tatoeba recipe's model in float32 and in bf16-mixed, and what the float32
attention under bf16-mixed buys (nmt.models.transformer.attend). Not a test: nothing asserts a time.

    python scripts/bench_train_step.py [--steps 20] [--threads 2] [--out runs/bench_train_step]

The model of configs/tatoeba_cpu.yaml (3+3 layers, d_model 256, d_ff 1,024, 4 heads, separate
4,000-piece vocabularies, its dropout: a mask costs the same at any p) in training mode; each step
is the recipe's: forward with the output layer on non-pad positions only, label-smoothed loss (the
config's epsilon), backward, fused Adam. The batches are the same random token ids for every row:
40 batches of about 2,048 target tokens, lengths drawn from 6 to 30 with ragged padding (the first
3 are warm-up). Rows:
- float32 (trainer.precision 32-true);
- bf16-mixed, attention in float32 (what training does);
- bf16-mixed, attention in bfloat16 (torch's CPU attention kernel as autocast gives it: the
  behaviour before commit eb9abd5).
Then the kernels behind the difference, each on its own (2 threads, mean of 50 calls after 3):
a 2,048x256 by 256x1,024 product (GFLOP/s), one layer's attention forward and backward at
160 rows x 4 heads x 13 positions x 64, and dropout (p 0.1) forward and backward on 2,048x256
(nn.Dropout's `bernoulli_` mask against a `torch.rand(...) >= p` mask), each in float32 and bfloat16.
With --profile, the share of the bf16-mixed step's time by operator (torch.profiler, 5 steps).
Writes OUT/results.json and prints the tables; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nmt.config import load_config
from nmt.masks import make_pad_mask
from nmt.models import transformer
from nmt.models.transformer import Transformer
from nmt.provenance import environment
from nmt.training.loss import label_smoothed_nll

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "tatoeba_cpu.yaml"


def batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batches (src (B, L), tgt (B, L+1) with BOS first) of about 2,048 target tokens, ragged."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = rng.randint(6, 30)
        rows = 2048 // length
        src = torch.randint(4, 4000, (rows, length), generator=gen)
        tgt = torch.randint(4, 4000, (rows, length + 1), generator=gen)
        for r in range(rows):
            keep = rng.randint(max(1, length - 5), length)
            src[r, keep:] = 0
            tgt[r, keep + 1:] = 0
        out.append((src, tgt))
    return out


def run(mode: str, data: list[tuple[torch.Tensor, torch.Tensor]], warm_up: int) -> dict:
    torch.manual_seed(0)
    cfg = load_config(RECIPE)  # the recipe's model and vocabulary sizes, read from its config
    model = Transformer(cfg.model, src_vocab_size=cfg.tokenizer.vocab_size, tgt_vocab_size=cfg.tokenizer.vocab_size,
                        shared_vocab=cfg.tokenizer.joint).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    bf16 = mode != "float32"
    attend = transformer.attend
    if mode == "bf16-mixed, attention in bfloat16":  # the kernel as autocast hands it over
        transformer.attend = lambda q, k, v, mask, dropout=0.0: F.scaled_dot_product_attention(  # type: ignore[assignment]
            q, k, v, attn_mask=mask, dropout_p=dropout)
    try:
        tokens, start = 0, 0.0
        for i, (src, tgt) in enumerate(data):
            if i == warm_up:
                tokens, start = 0, time.perf_counter()
            keep = tgt[:, 1:] != 0
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(src, make_pad_mask(src), tgt[:, :-1], keep=keep)
                loss, _, n = label_smoothed_nll(logits, tgt[:, 1:][keep], cfg.optim.label_smoothing)
            (loss / n).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(n)
        seconds = time.perf_counter() - start
    finally:
        transformer.attend = attend
    steps = len(data) - warm_up
    return {"mode": mode, "steps": steps, "ms_per_step": round(seconds / steps * 1000, 1),
            "target_tokens_per_s": round(tokens / seconds)}


def mean_ms(fn, calls: int = 50) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def kernels() -> list[dict]:
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        a, w = torch.randn(2048, 256, dtype=dtype), torch.randn(1024, 256, dtype=dtype)
        ms = mean_ms(lambda: F.linear(a, w), 200)
        out.append({"kernel": "product 2048x256 @ 256x1024", "dtype": str(dtype), "ms": round(ms, 3),
                    "gflop_per_s": round(2 * 2048 * 256 * 1024 / ms / 1e6)})
        q, k, v = (torch.randn(160, 4, 13, 64, dtype=dtype, requires_grad=True) for _ in range(3))
        grad = torch.randn(160, 4, 13, 64, dtype=dtype)
        ms = mean_ms(lambda: F.scaled_dot_product_attention(q, k, v).backward(grad))
        out.append({"kernel": "attention forward + backward, 160x4x13x64", "dtype": str(dtype), "ms": round(ms, 3)})
        x = torch.randn(2048, 256, dtype=dtype, requires_grad=True)
        g = torch.randn(2048, 256, dtype=dtype)
        ms = mean_ms(lambda: F.dropout(x, 0.1, True).backward(g))
        out.append({"kernel": "dropout forward + backward, bernoulli_ mask (nn.Dropout)", "dtype": str(dtype), "ms": round(ms, 3)})
        ms = mean_ms(lambda: (x * ((torch.rand(x.shape) >= 0.1).to(dtype) / 0.9)).backward(g))
        out.append({"kernel": "dropout forward + backward, rand >= p mask", "dtype": str(dtype), "ms": round(ms, 3)})
    return out


def profile_bf16(data: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    from torch.profiler import profile

    with profile() as prof:
        run("bf16-mixed, attention in float32", data[:8], 3)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=37, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_train_step"))
    ap.add_argument("--profile", action="store_true", help="also the bf16-mixed step's time by operator")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = batches(args.steps + 3)
    rows = [run(mode, data, 3) for mode in ("float32", "bf16-mixed, attention in float32",
                                            "bf16-mixed, attention in bfloat16")]
    base = rows[0]["target_tokens_per_s"]
    print("| training step | ms per step | target tokens/s | vs float32 |\n|---|---:|---:|---:|")
    for r in rows:
        r["vs_float32"] = round(r["target_tokens_per_s"] / base, 2)
        print(f"| {r['mode']} | {r['ms_per_step']} | {r['target_tokens_per_s']:,} | {r['vs_float32']}x |")
    kernel_rows = kernels()
    print("\n| kernel | dtype | ms | GFLOP/s |\n|---|---|---:|---:|")
    for r in kernel_rows:
        print(f"| {r['kernel']} | {r['dtype'].replace('torch.', '')} | {r['ms']} | {r.get('gflop_per_s', '')} |")
    report = {"rows": rows, "kernels": kernel_rows, "threads": args.threads, "environment": environment()}
    if args.profile:
        report["bf16_step_by_operator"] = profile_bf16(data)
        print("\n| operator (bf16-mixed step) | share of time | calls |\n|---|---:|---:|")
        for r in report["bf16_step_by_operator"]:
            print(f"| {r['op']} | {r['share']:.1%} | {r['calls']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
