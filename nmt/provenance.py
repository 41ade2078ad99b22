"""What produced a result: library versions, the git commit of this source tree, the machine.

Written to every run directory (environment.json) and into test and evaluation reports, so a
number can be traced back to the code and software that made it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import nmt

CODE = ("nmt", "scripts", "configs", "pyproject.toml")  # uncommitted changes here make a commit "+dirty"
LIBRARIES = ("torch", "lightning", "sentencepiece", "sacrebleu", "datasets", "ctranslate2")  # None where not installed


@cache
def git_commit() -> str | None:
    """HEAD of the git checkout nmt runs from ("+dirty" with uncommitted changes to the code), None outside one."""
    root = Path(nmt.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """One line for reports: CPU model, cores, OS, and the GPU when torch is loaded and sees one.
    Does not import torch itself (the benchmark's parent process stays small)."""
    text = f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        text += f", {torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
    return text


def environment(seed: int | None = None) -> dict:
    import torch

    versions: dict[str, str | None] = {"nmt": nmt.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {"versions": versions, "git_commit": git_commit(),
            "machine": {"description": describe_machine(), "platform": platform.platform(),
                        "processor": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(),
                        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    if seed is not None:
        info["seed"] = seed
    return info


def one_line(info: dict) -> str:
    """nmt 0.1.0 (commit abc1234), torch 2.13.0, ... for report.md."""
    v = info["versions"]
    commit = f" (commit {info['git_commit'][:12]})" if info.get("git_commit") else ""
    return f"nmt {v['nmt']}{commit}, " + ", ".join(f"{k} {v[k]}" for k in LIBRARIES if v.get(k)) + \
        f", Python {v['python']}"
