"""trainer.precision "auto": bfloat16 mixed precision where the hardware multiplies in bfloat16
natively, float32 elsewhere.

On a CPU with bfloat16 instructions (AVX512-BF16, AMX) bf16-mixed trains the Tatoeba recipe's model
with 1.14-1.20x the tokens per second of float32 and scored higher on its valid and test splits in
the same 30 minutes (docs/results.md); on a CPU without them bfloat16 is emulated and slower, so "auto" keeps
float32 there. On GPUs, bf16-mixed where torch reports bfloat16 support (Ampere or newer).
"""

from __future__ import annotations

from pathlib import Path

import torch

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 flags in /proc/cpuinfo


def cpu_has_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU lists a bfloat16 instruction set among its flags (False where unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.partition(":")[2].split()}
    return bool(flags & BF16_CPU_FLAGS)


def resolve_precision(precision: str, accelerator: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """trainer.precision -> the name Lightning gets: "auto" becomes bf16-mixed or 32-true (module
    docstring); any other value is Lightning's own name and passes as it is."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_bfloat16(cpuinfo) else "32-true"
