"""Patch an unpacked fairseq 0.12.2 sdist so that it installs and runs on Python 3.11 + torch 2.13
(see shared/peers/FAIRSEQ.md). Idempotent: a second run finds nothing left to change.

    python scripts/peers/fairseq_patch.py SRC_DIR      (SRC_DIR = the unpacked fairseq-0.12.2/)

1. setup.py: drop the C++ extensions whose sources the sdist lacks (fairseq.libbase,
   fairseq.libnat, alignment_train_cpu_binding: BASE layers, non-autoregressive models and
   alignment training only); pin hydra-core 1.3.2 / omegaconf 2.3.0 (the pinned 1.0.7 / 2.0.6 break
   on Python 3.11) and drop torchaudio (speech tasks only; an unpinned torchaudio would replace
   torch).
2. Every dataclass field written `name: SomeConfig = SomeConfig()` or `= field(default=SomeConfig())`
   (Python 3.11: "mutable default") becomes `field(default_factory=SomeConfig)`; fairseq/dataclass/initialize.py
   (hydra_init) reads default_factory() where it read .default.
3. The BetterTransformer inference fast path (BT_version in fairseq/modules/transformer_layer.py
   and fairseq/models/transformer/transformer_encoder.py) is switched off: it calls a torch internal
   whose signature changed ("Mask Type should be defined"). Training never takes it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def replace(path: Path, old: str, new: str, done_marker: str) -> str:
    text = path.read_text(encoding="utf-8")
    if done_marker in text:
        return "already patched"
    if old not in text:
        raise SystemExit(f"fairseq_patch.py: {path}: expected text not found:\n{old}")
    path.write_text(text.replace(old, new), encoding="utf-8")
    return "patched"


def patch_setup(src: Path) -> None:
    setup = src / "setup.py"
    text = setup.read_text(encoding="utf-8")
    marker = "# peers/fairseq_patch.py: C++ extensions without sources removed"
    if marker not in text:
        start = text.index('    extensions.extend(\n        [\n            cpp_extension.CppExtension(\n                "fairseq.libbase"')
        end = text.index('    if "CUDA_HOME" in os.environ:')
        removed = text[start:end]
        for name in ("fairseq.libbase", "fairseq.libnat", "alignment_train_cpu_binding"):
            assert f'"{name}"' in removed, name
        text = text[:start] + f"    {marker}\n" + text[end:]
    pins = {'"hydra-core>=1.0.7,<1.1"': '"hydra-core==1.3.2"', '"omegaconf<2.1"': '"omegaconf==2.3.0"',
            '            "torchaudio>=0.8.0",\n': ""}
    for old, new in pins.items():
        text = text.replace(old, new)
    setup.write_text(text, encoding="utf-8")
    print(f"  {setup}: C++ extensions libbase/libnat/alignment_train_cpu_binding removed; "
          "hydra-core==1.3.2, omegaconf==2.3.0, no torchaudio")


FIELD = re.compile(r"^(\s+)(\w+): ([\w\[\]., ]+?) = ([A-Z]\w*)\(\)(\s*(#.*)?)$", re.M)
FIELD_DEFAULT = re.compile(r"\bfield\(default=([A-Z]\w*Config)\(\)")  # quant_noise: ... = field(default=QuantNoiseConfig())


def patch_dataclasses(src: Path) -> None:
    changed = 0
    for path in sorted((src / "fairseq").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "@dataclass" not in text or not (FIELD.search(text) or FIELD_DEFAULT.search(text)):
            continue
        new, n = FIELD.subn(r"\1\2: \3 = field(default_factory=\4)\5", text)
        new, n2 = FIELD_DEFAULT.subn(r"field(default_factory=\1", new)
        n += n2
        if not re.search(r"^from dataclasses import .*\bfield\b", new, re.M):
            line = re.search(r"^from dataclasses import [^(\n]*$", new, re.M)  # after it: past any __future__
            at = line.end() + 1 if line else 0
            new = new[:at] + "from dataclasses import field  # peers/fairseq_patch.py\n" + new[at:]
        path.write_text(new, encoding="utf-8")
        changed += n
        print(f"  {path.relative_to(src)}: {n} field(s) -> field(default_factory=...)")
    init = src / "fairseq" / "dataclass" / "initialize.py"
    status = replace(init, "        v = FairseqConfig.__dataclass_fields__[k].default\n",
                     "        f = FairseqConfig.__dataclass_fields__[k]  # peers/fairseq_patch.py: default_factory\n"
                     "        v = f.default_factory() if callable(f.default_factory) else f.default\n",
                     "peers/fairseq_patch.py: default_factory")
    print(f"  {init.relative_to(src)}: hydra_init reads default_factory() ({status}); {changed} field(s) rewritten now")


def patch_better_transformer(src: Path) -> None:
    marker = "False  # peers/fairseq_patch.py: BetterTransformer fast path off"
    for rel, old in (("fairseq/modules/transformer_layer.py", "            self.BT_version\n            and x.dim() == 3"),
                     ("fairseq/models/transformer/transformer_encoder.py", "            BT_version\n            and x.dim() == 3")):
        status = replace(src / rel, old, f"            {marker}\n            and x.dim() == 3", marker)
        print(f"  {rel}: BT_version branch disabled ({status})")


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[3].strip())
    src = Path(sys.argv[1])
    if not (src / "setup.py").is_file() or not (src / "fairseq").is_dir():
        sys.exit(f"fairseq_patch.py: {src} is not an unpacked fairseq sdist")
    patch_setup(src)
    patch_dataclasses(src)
    patch_better_transformer(src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
