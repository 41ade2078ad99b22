"""Typed experiment configuration: dataclasses loaded from one YAML file per experiment.

Every field is documented in the dataclass and in the shipped YAML files. Unknown keys, wrong
types and impossible values raise `ConfigError` with a one-line message naming the key, so a
typo fails at start rather than an hour into training. The resolved config is saved as plain
data (`to_dict`) in the run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import yaml

from nmt.decoding.options import DecodingOptions, OptionsError


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type or impossible value (one-line message)."""


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it is cleaned and batched."""

    source: str = "hsk"  # hsk | text | tsv | csv | jsonl | hub | toy_reverse
    src_lang: str = "zh"  # source language code; also the file suffix for `text`
    tgt_lang: str = "en"  # target language code
    # What each split is depends on `source`: a path prefix for `text` (files PREFIX.src_lang /
    # PREFIX.tgt_lang), a file path for tsv/csv/jsonl, a split name for `hub` and `hsk`.
    train: str | list[str] = "train"  # text/tsv/csv/jsonl: a list concatenates several corpora
    # How much of each data.train corpus one epoch draws (mixed fine-tuning, upsampling a small
    # corpus): 1 = every pair once, 2 = twice, 0.25 = a fresh random quarter of it each epoch;
    # [] = every corpus once. In-memory data only (not data.streaming or data.prepared_dir).
    train_weights: list[float] = field(default_factory=list)
    # Domain tags (Kobus et al., 2017): one name per data.train corpus ("" = untagged); each tagged
    # corpus's sources start with the token <dom:NAME>, a piece of its own in the vocabulary, and
    # `decoding.domain` (nmt-translate --domain NAME) asks for that domain at translation time; the
    # valid and test splits get decoding.domain. In-memory data only, as train_weights.
    train_tags: list[str] = field(default_factory=list)
    valid: str = "valid"
    test: str | None = "test"  # None: no test split
    src_field: str = "src"  # tsv/csv/jsonl/hub: field of the source text; dots reach into dicts
    tgt_field: str = "tgt"  # ... and of the target text (e.g. translation.en)
    hub_name: str | None = None  # hub: dataset name, e.g. wmt/wmt19
    hub_config: str | None = None  # hub: dataset config, e.g. zh-en
    skip_invalid_utf8: bool = False  # text source: skip line pairs that are not valid UTF-8 (counted) instead of failing
    streaming: bool = False  # read the corpus as a stream (larger than memory); training repeats it until max_steps/max_time
    # Prepared data for large corpora: the training split, read as a stream (no full download),
    # tokenised once into this directory (nmt-prepare CONFIG, or nmt-train on first use) with
    # its lengths; every start memory-maps it. Other splits are read as usual.
    prepared_dir: str | None = None  # None: tokenise at start (in memory, or streamed)
    stream_buffer: int = 20000  # streaming: examples read ahead, length-sorted into batches
    num_proc: int = 1  # processes for datasets.map tokenisation (non-streaming)
    max_len: int = 128  # drop training pairs with more subword tokens than this on either side
    max_len_ratio: float = 3.0  # drop training pairs whose token-length ratio exceeds this
    # Drop training pairs where either side (stripped) matches this Python regular expression as a
    # whole (re.fullmatch), e.g. "placeholder(-[a-z]\\d+)?" for the untranslated entries of the HSK
    # sentences; in every data mode and for the tokenizer's training text; valid and test are kept.
    drop_pattern: str | None = None  # None: no pattern
    max_tokens: int = 4096  # tokens per batch: max(len) * n_sentences, source or target side
    max_sentences: int = 0  # cap on sentences per batch (0 = no cap)
    valid_max_tokens: int = 4096  # tokens per validation batch
    limit_train: int = 0  # use only the first N training pairs (0 = all); for quick experiments
    limit_valid: int = 0  # use only the first N validation pairs (0 = all)


@dataclass
class TokenizerConfig:
    """SentencePiece subword model trained on the training split."""

    type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000  # pieces per vocabulary (joint: one vocabulary of this size)
    joint: bool = True  # one vocabulary for both sides (enables three-way weight tying)
    character_coverage: float = 0.9995  # share of characters covered; <1 maps rare ones to unk
    input_sentence_size: int = 1000000  # sentences sampled to train on for big corpora
    seed: int = 1  # sampling seed for SentencePiece training
    # Normalisation steps before SentencePiece, in order, on training data and at translation time
    # (stored in checkpoints): nfkc (Unicode NFKC; SentencePiece's own nmt_nfkc rule already folds
    # full-width forms) | zh_hans (Traditional -> Simplified Chinese, OpenCC t2s).
    src_normalize: list[str] = field(default_factory=list)
    tgt_normalize: list[str] = field(default_factory=list)
    # Subword regularisation (Kudo, 2018; unigram models, in-memory data): each epoch every training
    # sentence takes one of its sampling_nbest best segmentations, drawn with probability P(x)^alpha
    # normalised, a pure function of (trainer.seed, epoch); validation and translation keep the best one.
    sampling_alpha: float = 0.0  # 0: off (the best segmentation every epoch); the paper: 0.1-0.5, smaller = flatter
    sampling_nbest: int = 64  # segmentations drawn among (the paper: 64)


@dataclass
class ModelConfig:
    """Architecture. Defaults are the paper's base model (Vaswani et al. 2017, Table 3)."""

    type: str = "transformer"  # transformer | rnn (the attentional RNN baseline, nmt/models/rnn.py)
    d_model: int = 512  # width of embeddings and every sublayer output (rnn: of embeddings and h~)
    n_heads: int = 8  # attention heads; d_model must divide by it
    d_ff: int = 2048  # inner width of the position-wise feed-forward network
    n_encoder_layers: int = 6  # N in the paper
    n_decoder_layers: int = 6
    dropout: float = 0.1  # P_drop: on sublayer outputs and on embeddings + positions
    attention_dropout: float = 0.0  # on attention weights (the paper uses none)
    activation_dropout: float = 0.0  # on the feed-forward hidden ReLU (not in the paper; tensor2tensor used it)
    norm_first: bool = False  # False: post-norm as in the paper; True: pre-norm
    tie_embeddings: bool = True  # decoder input = output projection (and encoder, if joint)
    # Transformer options where models in use differ from the paper (Marian's OPUS-MT models use the second choices):
    activation: str = "relu"  # of the feed-forward hidden layer: relu (the paper) | swish (SiLU, x * sigmoid(x))
    positions: str = "interleaved"  # sinusoid columns: interleaved (the paper: sin at 2i, cos at 2i+1) | halves
    # (Marian: the sines of every frequency, then the cosines)
    output_bias: bool = False  # a bias on the output layer's logits (the paper has none; Marian's final_logits_bias)
    max_positions: int = 1024  # length of the sinusoidal table (rnn: the longest input translated)
    rnn_cell: str = "lstm"  # rnn only: lstm | gru
    rnn_hidden_size: int = 512  # rnn only: decoder state and annotation width (each encoder direction: half)
    rnn_attention: str = "bahdanau"  # rnn only: bahdanau (additive) | general | dot (Luong)
    input_feeding: bool = True  # rnn only: feed the previous attentional vector into the next step


@dataclass
class OptimConfig:
    """Adam, the warm-up schedule and the loss."""

    lr_schedule: str = "noam"  # noam: paper eq. 3 | inverse_sqrt: linear warm-up to peak_lr, then 1/sqrt(step) |
    # linear: warm-up to peak_lr over warmup_fraction of the budget (max_steps or max_time), then linearly to 0 at its end
    lr_scale: float = 1.0  # noam: multiplies d_model^-0.5 * min(step^-0.5, step*warmup^-1.5)
    peak_lr: float = 5.0e-4  # inverse_sqrt: lr reached at the end of warm-up
    warmup_steps: int = 4000  # optimizer steps of warm-up (noam, inverse_sqrt)
    warmup_fraction: float = 0.1  # linear: the share of the budget spent warming up
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1.0e-9
    weight_decay: float = 0.0
    label_smoothing: float = 0.1  # epsilon_ls of the paper (section 5.4)


# trainer.precision: Lightning's names (lightning.fabric.connector) and auto (nmt/training/precision.py)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "auto")


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and the run's bookkeeping."""

    seed: int = 1  # seeds torch, the batch order and dropout
    max_steps: int = -1  # optimizer steps (-1: no limit)
    max_epochs: int = -1  # passes over the data (-1: no limit)
    max_time: str | None = None  # wall-clock limit "DD:HH:MM:SS" (None: no limit)
    checkpoint_every: str | None = "00:00:05:00"  # write the resumable checkpoints/last.ckpt this often ("DD:HH:MM:SS"
    # of training time; also after every validation and at the end; None: only then): a kill loses at most this much
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: str = "auto"  # number of devices, a list like "0,1", or auto
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed | auto (bf16-mixed where the CPU or GPU has bfloat16, nmt/training/precision.py)
    accumulate_grad_batches: int = 1  # batches per optimizer step
    gradient_clip_val: float = 0.0  # clip the gradient norm to this (0: off)
    val_check_interval: int = 1000  # validate every N training batches (counted across epochs)
    log_every_n_steps: int = 20
    val_bleu_sentences: int = 500  # greedy-decode the first N validation pairs (file order) for BLEU (0: all)
    early_stopping_patience: int = 0  # validations without BLEU gain before stopping (0: off)
    num_workers: int = 0  # DataLoader worker processes
    save_every_n_steps: int = 0  # also write checkpoints/step<N>.ckpt (weights only) every N steps (0: off) ...
    keep_last_checkpoints: int = 5  # ... keeping the newest this many, for averaging (nmt-average --last)
    ema_decay: float = 0.0  # exponential moving average of the weights, e <- d*e + (1-d)*w each step, d warming up
    # to this (nmt/training/ema.py): validated, saved in every checkpoint, translated with (0: off; 0.999 ~ the last 1,000 steps)
    compile: bool = False  # torch.compile the model's training forward pass (first steps compile)
    low_memory: bool = False  # return freed activations to the OS (glibc): lower peak RSS, slower steps
    max_nonfinite_steps: int = 10  # a non-finite loss skips its step; this many in a row stop the run (0: never)


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # how this model translates unless a call says otherwise (nmt-translate, nmt-evaluate, nmt-serve,
    # the API, the end-of-training test; validation's greedy search takes its length limit)
    decoding: DecodingOptions = field(default_factory=DecodingOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Loading, overrides and checks
# --------------------------------------------------------------------------------------------

_CHOICES = {
    ("data", "source"): ("hsk", "text", "tsv", "csv", "jsonl", "hub", "toy_reverse"),
    ("tokenizer", "type"): ("unigram", "bpe"),
    ("model", "type"): ("transformer", "rnn"),
    ("model", "rnn_cell"): ("lstm", "gru"),
    ("model", "rnn_attention"): ("bahdanau", "general", "dot"),
    ("model", "activation"): ("relu", "swish"),
    ("model", "positions"): ("interleaved", "halves"),
    ("optim", "lr_schedule"): ("noam", "inverse_sqrt", "linear"),
}
NORMALIZE_STEPS = ("nfkc", "zh_hans")  # implemented in nmt.tokenizer.NORMALIZERS


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` if it fits `annotation` (ints are accepted for floats), else raise."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. `devices: 2`
    if annotation in (int, float, str, bool) and type(value) is annotation:
        return value
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value or {}, key)
        else:
            kwargs[name] = _check_type(value, hints[name], key)
    try:
        return cls(**kwargs)
    except OptionsError as err:  # DecodingOptions checks itself
        raise ConfigError(f"{where}.{err.name}: {err}") from None


def _regex_error(pattern: str | None) -> str | None:
    """Why `pattern` is not a valid regular expression (None if it is, or is None)."""
    try:
        re.compile(pattern or "")
    except re.error as err:
        return f"{pattern!r}: {err}"
    return None


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Impossible values fail here, before any data is read."""
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}: '{value}' is not one of {', '.join(allowed)}")
    m, d, o, t, tok = cfg.model, cfg.data, cfg.optim, cfg.trainer, cfg.tokenizer
    checks = [
        (m.d_model % m.n_heads == 0, f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})"),
        (m.d_model > 0 and m.n_heads > 0 and m.d_ff > 0, "model.d_model, n_heads and d_ff must be positive"),
        (m.type == "transformer" or (m.activation, m.positions, m.output_bias) == ("relu", "interleaved", False),
         "model.activation, positions and output_bias are Transformer options: leave them at relu, interleaved, false for an rnn"),
        (m.rnn_hidden_size >= 2 and m.rnn_hidden_size % 2 == 0, f"model.rnn_hidden_size must be even and >= 2, got {m.rnn_hidden_size}"),
        (m.n_encoder_layers >= 1 and m.n_decoder_layers >= 1, "model.n_encoder_layers and n_decoder_layers must be >= 1"),
        (0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}"),
        (0.0 <= m.attention_dropout < 1.0, f"model.attention_dropout must be in [0, 1), got {m.attention_dropout}"),
        (0.0 <= m.activation_dropout < 1.0, f"model.activation_dropout must be in [0, 1), got {m.activation_dropout}"),
        (m.max_positions > d.max_len + 1, f"model.max_positions ({m.max_positions}) must exceed data.max_len + 1 ({d.max_len + 1})"),
        (d.max_len >= 1, f"data.max_len must be >= 1, got {d.max_len}"),
        (d.max_len_ratio >= 1.0, f"data.max_len_ratio must be >= 1, got {d.max_len_ratio}"),
        (_regex_error(d.drop_pattern) is None, f"data.drop_pattern is not a regular expression: {_regex_error(d.drop_pattern)}"),
        (d.max_tokens > d.max_len + 1, f"data.max_tokens ({d.max_tokens}) must exceed data.max_len + 1 so every pair fits a batch"),
        (d.valid_max_tokens >= 1, "data.valid_max_tokens must be >= 1"),
        (d.src_lang != "" and d.tgt_lang != "", "data.src_lang and data.tgt_lang must be set"),
        (d.num_proc >= 1 and d.stream_buffer >= 1, "data.num_proc and data.stream_buffer must be >= 1"),
        (min(d.max_sentences, d.limit_train, d.limit_valid) >= 0, "data.max_sentences, limit_train and limit_valid must be >= 0"),
        (d.source != "hub" or bool(d.hub_name), "data.hub_name is required when data.source is hub"),
        (tok.vocab_size >= 8, f"tokenizer.vocab_size must be >= 8, got {tok.vocab_size}"),
        (0.0 < tok.character_coverage <= 1.0, "tokenizer.character_coverage must be in (0, 1]"),
        (o.warmup_steps >= 1, f"optim.warmup_steps must be >= 1, got {o.warmup_steps}"),
        (0.0 < o.warmup_fraction < 1.0, f"optim.warmup_fraction must be in (0, 1), got {o.warmup_fraction}"),
        (o.lr_schedule != "linear" or t.max_steps > 0 or t.max_time is not None,
         "optim.lr_schedule linear decays to 0 at the end of the budget: set trainer.max_steps or max_time"),
        (len(o.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in o.adam_betas), f"optim.adam_betas must be two numbers in [0, 1), got {o.adam_betas}"),
        (0.0 <= o.label_smoothing < 1.0, f"optim.label_smoothing must be in [0, 1), got {o.label_smoothing}"),
        (o.peak_lr > 0 and o.lr_scale > 0 and o.adam_eps > 0, "optim.peak_lr, lr_scale and adam_eps must be positive"),
        (t.max_steps > 0 or t.max_epochs > 0 or t.max_time is not None, "set at least one of trainer.max_steps, max_epochs or max_time"),
        (not d.streaming or d.prepared_dir or t.max_steps > 0 or t.max_time is not None,
         "data.streaming repeats the stream until trainer.max_steps or max_time: set one of them (or use data.prepared_dir)"),
        (t.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches must be >= 1"),
        (t.val_check_interval >= 1, "trainer.val_check_interval must be >= 1"),
        (t.gradient_clip_val >= 0, "trainer.gradient_clip_val must be >= 0"),
        (t.max_nonfinite_steps >= 0, "trainer.max_nonfinite_steps must be >= 0"),
        (t.save_every_n_steps >= 0 and t.keep_last_checkpoints >= 1, "trainer.save_every_n_steps must be >= 0 and keep_last_checkpoints >= 1"),
        (0.0 <= t.ema_decay < 1.0, f"trainer.ema_decay must be in [0, 1), got {t.ema_decay}"),
        (str(t.precision) in PRECISIONS, f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}"),
        (t.val_bleu_sentences >= 0 and t.early_stopping_patience >= 0, "trainer.val_bleu_sentences and early_stopping_patience must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for side in ("src_normalize", "tgt_normalize"):
        for step in getattr(tok, side):
            if step not in NORMALIZE_STEPS:
                raise ConfigError(f"tokenizer.{side}: '{step}' is not one of {', '.join(NORMALIZE_STEPS)}")
    if isinstance(d.train, list) and (not d.train or d.source in ("hsk", "toy_reverse")):
        raise ConfigError(f"data.train: a list of training corpora needs data.source text, tsv, csv, jsonl or hub "
                          f"and at least one entry, got {d.train!r} with source {d.source}")
    if d.train_weights:
        n_train = len(d.train) if isinstance(d.train, list) else 1
        if len(d.train_weights) != n_train:
            raise ConfigError(f"data.train_weights: {len(d.train_weights)} weight(s) for {n_train} data.train "
                              f"corpus/corpora: give one per corpus, in the same order")
        if min(d.train_weights) < 0 or max(d.train_weights) <= 0:
            raise ConfigError(f"data.train_weights must be >= 0 with at least one > 0, got {d.train_weights}")
        if d.streaming or d.prepared_dir:
            raise ConfigError("data.train_weights needs in-memory training data: not with data.streaming or data.prepared_dir")
    if tok.sampling_alpha:
        if tok.sampling_alpha < 0 or tok.sampling_nbest < 2:
            raise ConfigError(f"tokenizer.sampling_alpha must be >= 0 and sampling_nbest >= 2, got "
                              f"{tok.sampling_alpha} and {tok.sampling_nbest}")
        if tok.type != "unigram":
            raise ConfigError(f"tokenizer.sampling_alpha draws among the n best segmentations of a unigram model: "
                              f"set tokenizer.type unigram, not {tok.type}")
        if d.streaming or d.prepared_dir:
            raise ConfigError("tokenizer.sampling_alpha needs in-memory training data: not with data.streaming or data.prepared_dir")
    if d.train_tags:
        n_train = len(d.train) if isinstance(d.train, list) else 1
        if len(d.train_tags) != n_train:
            raise ConfigError(f"data.train_tags: {len(d.train_tags)} tag(s) for {n_train} data.train corpus/corpora: "
                              f"give one per corpus ('' for none), in the same order")
        bad = [tag for tag in d.train_tags if tag and not re.fullmatch(r"[A-Za-z0-9_.-]+", tag)]
        if bad or not any(d.train_tags):
            raise ConfigError(f"data.train_tags: names of letters, digits, _ . - (and '' for none), at least one, got {d.train_tags}")
        if d.streaming or d.prepared_dir:
            raise ConfigError("data.train_tags needs in-memory training data: not with data.streaming or data.prepared_dir")
    if cfg.decoding.domain and cfg.decoding.domain not in d.train_tags and d.train_tags:
        raise ConfigError(f"decoding.domain '{cfg.decoding.domain}' is not one of data.train_tags {d.train_tags}")
    for key in ("max_time", "checkpoint_every"):
        value = getattr(t, key)
        parts = [] if value is None else value.split(":")
        if value is not None and (len(parts) != 4 or not all(p.isdigit() for p in parts)):
            raise ConfigError(f"trainer.{key} must look like DD:HH:MM:SS, got '{value}'")
    if t.checkpoint_every is not None and not any(int(p) for p in t.checkpoint_every.split(":")):
        raise ConfigError("trainer.checkpoint_every must be longer than 00:00:00:00 (null: only at validation and the end)")
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (['section', 'key'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) != 2 or not all(path):
        raise ConfigError(f"--set expects section.key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


# keys that moved: (old section, old key) -> (new section, new key); old configs and checkpoints still load
MOVED = {("trainer", "max_decode_len_a"): ("decoding", "max_len_a"),
         ("trainer", "max_decode_len_b"): ("decoding", "max_len_b")}


def from_dict(values: dict[str, Any], overrides: Sequence[str] = ()) -> ExperimentConfig:
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in (values or {}).items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in {f.name for f in dataclasses.fields(ExperimentConfig)}:
            raise ConfigError(f"unknown section '{section}' in --set {text}")
        values.setdefault(section, {})
        if not isinstance(values[section], dict):
            raise ConfigError(f"{section}: expected a mapping")
        values[section][key] = value
    for (section, key), (new_section, new_key) in MOVED.items():
        if isinstance(values.get(section), dict) and key in values[section]:
            moved = values[section].pop(key)
            values.setdefault(new_section, {})
            if isinstance(values[new_section], dict):
                values[new_section].setdefault(new_key, moved)
    return validate(_build(ExperimentConfig, values, ""))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply `--set` overrides, type-check and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    try:
        return from_dict(values or {}, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
