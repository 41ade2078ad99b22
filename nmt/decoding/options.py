"""The one set of decoding options, shared by every front door and every engine (no torch here).

`DecodingOptions` holds the defaults and the checks. The rest is derived from its fields:
- the `decoding:` section of an experiment config (the model's own defaults, saved in every
  checkpoint; validation during training uses its length limit);
- the command-line flags of nmt-translate and nmt-evaluate (`add_flags`, `from_flags`);
- the JSON body of nmt-serve's POST /translate (nmt.serve builds its schema from `FIELDS`);
- reports, which store `dataclasses.asdict(options)` as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from nmt.decoding.penalties import PENALTIES


class OptionsError(ValueError):
    """An impossible option value; `name` is the field it is about."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _opt(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
         choices: tuple[str, ...] | None = None, flag: bool = True) -> Any:
    """A field with its help text and bounds (the CLI and the HTTP schema read them)."""
    return field(default=default, metadata=dict(help=help, ge=ge, gt=gt, le=le, choices=choices, flag=flag))


@dataclass(frozen=True)
class DecodingOptions:
    """How to search (or sample) for a translation. Beam size 1 with one hypothesis is greedy search."""

    beam_size: int = _opt(5, "beam width; 1 = greedy search", ge=1)
    n_best: int = _opt(1, "hypotheses returned per sentence, best first (at most beam_size)", ge=1)
    length_penalty: str = _opt("gnmt", "gnmt: ((5+|Y|)/6)^alpha, length: |Y|^alpha (|Y| counts EOS), none",
                               choices=tuple(PENALTIES))
    alpha: float = _opt(0.6, "length-penalty exponent", ge=0.0, le=10.0)
    min_len: int = _opt(1, "output tokens before EOS is allowed", ge=0, le=10_000)
    max_len_a: float = _opt(1.5, "at most a * source tokens + b output tokens (EOS not counted; never more than "
                                 "the model's positions)", ge=0.0, le=100.0)
    max_len_b: int = _opt(10, "see max_len_a", ge=0, le=10_000)
    no_repeat_ngram_size: int = _opt(0, "no n-gram of this size occurs twice in an output (0: off)", ge=0, le=100)
    redecode: bool = _opt(True, "with a calibrated model (nmt-calibrate), decode a degenerate output once more: a "
                                "loop without repeated 3-grams, a too-short one at least as long as the valid "
                                "split's shortest usual (beam search)")
    sampling: bool = _opt(False, "sample one output per sentence instead of searching (beam options ignored)")
    temperature: float = _opt(1.0, "sampling temperature", ge=0.01, le=100.0)
    top_k: int = _opt(0, "sampling: only among the k most likely tokens (0: all)", ge=0, le=1_000_000)
    top_p: float = _opt(1.0, "sampling: only the smallest set of tokens with this probability (nucleus)", gt=0.0, le=1.0)
    seed: int = _opt(0, "sampling seed (each batch draws from a generator seeded from it)", ge=0, le=2**31 - 1)
    domain: str = _opt("", "the domain the sources are from, for a model trained with domain tags "
                           "(data.train_tags): its tag starts every source ('': none)")
    shortlist: bool = _opt(False, "decode each batch over the model's vocabulary shortlist (nmt-shortlist), not the "
                                  "whole target vocabulary: faster; outputs can differ slightly")
    attention: bool = _opt(False, "return the best hypothesis' cross-attention (torch engine)", flag=False)
    document: bool = _opt(False, "each input is a document: split it into sentences, translate them and join the "
                                 "translations in its layout (line breaks and blank lines kept)")
    document_max_tokens: int = _opt(0, "document mode: a sentence with more source tokens is cut at clause marks "
                                       "(0: data.max_len, the longest source the model was trained on)", ge=0, le=100_000)
    document_splitter: str = _opt("rules", "document mode: how sentences are found: rules (ours), or the pysbd or "
                                           "sentencex package (pip install it)", choices=("rules", "pysbd", "sentencex"))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value: Any = getattr(self, f.name)
            m = f.metadata
            if type(value) is not type(f.default) and not (isinstance(f.default, float) and type(value) is int):
                raise OptionsError(f.name, f"{f.name} must be {type(f.default).__name__}, got {value!r}")
            if m["choices"] and value not in m["choices"]:
                raise OptionsError(f.name, f"{f.name} must be one of {', '.join(m['choices'])}, got {value!r}")
            if (m["ge"] is not None and value < m["ge"]) or (m["gt"] is not None and value <= m["gt"]) or \
                    (m["le"] is not None and value > m["le"]):
                raise OptionsError(f.name, f"{f.name} must be {bounds(m)}, got {value!r}")
            if isinstance(f.default, float):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))  # 1 and 1.0: one option, one key
        if self.n_best > self.beam_size:
            raise OptionsError("n_best", f"n_best ({self.n_best}) cannot exceed beam_size ({self.beam_size})")
        if self.document_splitter != "rules" and importlib.util.find_spec(self.document_splitter) is None:
            raise OptionsError("document_splitter", f"document_splitter {self.document_splitter} needs the "
                                                    f"{self.document_splitter} package: pip install {self.document_splitter}")
        if self.document and self.n_best > 1:
            raise OptionsError("n_best", f"document mode gives one translation per document: n_best must be 1, "
                                         f"got {self.n_best}")

    @property
    def greedy(self) -> bool:
        """Beam size 1, one hypothesis, no attention, no n-gram ban: greedy search gives the same, faster."""
        return self.beam_size == 1 and self.n_best == 1 and not self.attention and not self.sampling and \
            not self.no_repeat_ngram_size

    @property
    def width(self) -> int:
        """Decoder rows per sentence (batches hold max_tokens / width source tokens)."""
        return 1 if self.sampling else self.beam_size

    def replace(self, **changes: Any) -> DecodingOptions:
        """A copy with `changes` (checked); an unknown name is an OptionsError."""
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise OptionsError(unknown[0], f"unknown decoding option {unknown[0]!r} (known: {', '.join(NAMES)})")
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line for logs: what decides the output."""
        if self.sampling:
            how = f"sampling, temperature {self.temperature:g}, top-k {self.top_k}, top-p {self.top_p:g}, seed {self.seed}"
        elif self.greedy:
            how = "greedy search"
        else:
            penalty = {"gnmt": "GNMT length penalty", "length": "length penalty |Y|^alpha", "none": "no length penalty"}
            how = f"beam {self.beam_size}, {penalty[self.length_penalty]}" + \
                  (f" alpha {self.alpha:g}" if self.length_penalty != "none" else "")
        return (f"{how}, max length {self.max_len_a:g}*src+{self.max_len_b}" + (", document mode" if self.document else "")
                + (f", domain {self.domain}" if self.domain else ""))


FIELDS = {f.name: f for f in dataclasses.fields(DecodingOptions)}
NAMES = tuple(FIELDS)


def bounds(meta: Any) -> str:
    parts = [f">= {meta['ge']:g}" if meta["ge"] is not None else "", f"> {meta['gt']:g}" if meta["gt"] is not None else "",
             f"<= {meta['le']:g}" if meta["le"] is not None else ""]
    return " and ".join(p for p in parts if p)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option (--beam-size, ...). Their defaults are None: what is not given comes
    from the checkpoint's `decoding:` section (whose own defaults are DecodingOptions')."""
    group = parser.add_argument_group("decoding (default: the checkpoint's decoding section)")
    for name, f in FIELDS.items():
        m = f.metadata
        if not m["flag"]:
            continue
        if isinstance(f.default, bool) and f.default:  # on unless turned off: --no-NAME
            group.add_argument("--no-" + flag_name(name)[2:], dest=name, action="store_false", default=None,
                               help=f"do not: {m['help']}")
        elif isinstance(f.default, bool):
            group.add_argument(flag_name(name), action="store_true", default=None, help=m["help"])
        else:
            group.add_argument(flag_name(name), type=type(f.default), default=None, choices=m["choices"],
                               help=f"{m['help']} (default {f.default})")


def from_flags(args: argparse.Namespace, base: DecodingOptions) -> DecodingOptions:
    """`base` with the flags that were given; an impossible value raises OptionsError."""
    given = {name: getattr(args, name) for name, f in FIELDS.items()
             if f.metadata["flag"] and getattr(args, name, None) is not None}
    return base.replace(**given)
