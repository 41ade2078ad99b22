"""Hugging Face Marian models (OPUS-MT, `MarianMTModel`) as nmt Transformers (issue 19).

Marian's architecture is the paper's Transformer (scaled embeddings, sinusoidal positions,
post-norm, tied embeddings) with three differences our model has as options (nmt/config.py):
a swish feed-forward activation, sinusoids laid out as two halves, and a bias on the logits
(`final_logits_bias`). What differs besides is the order of the vocabulary: Marian's vocab.json
puts `</s>` at 0, `<unk>` at 1 and `<pad>` last, and decoding starts from `<pad>`; ours has PAD,
UNK, BOS, EOS at 0-3. `vocabulary_order` maps one onto the other: our id i is Marian's id
order[i], with our PAD and BOS rows both Marian's decoder-start row (so that decoding starts
exactly where Marian's does), one row more than Marian's. So that the extra row does not count
twice in the softmax's normaliser (BOS is never generated, but like Marian's `bad_words_ids` we
ban it after the log-softmax), its output bias is lowered by BOS_OFFSET: our log-probabilities of
every Marian token are then Marian's own, and beam search ranks hypotheses as `generate` does.
A model with separate vocabularies (vocab.json and target_vocab.json) is mapped side by side.

    order = vocabulary_order(vocab, hf_config)          # our id -> Marian id
    cfg = model_config(hf_config)                        # our ModelConfig
    state = convert_weights(hf_state, hf_config, order)  # our state_dict

Everything here reads tensors and dicts only: no file is unpickled (nmt-import reads
safetensors, or torch.load with weights_only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nmt.config import ModelConfig
from nmt.errors import CheckpointError
from nmt.tokenizer import BOS_ID, PAD_ID

ACTIVATIONS = {"relu": "relu", "swish": "swish", "silu": "swish"}  # Marian's names -> ours
BOS_OFFSET = 30.0  # subtracted from the duplicate BOS row's logit: exp(-30) ~ 1e-13 of its probability


class MarianError(CheckpointError):
    """A Marian model with something our Transformer cannot represent (the message names it)."""


REQUIRED = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
            "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
            "pad_token_id", "eos_token_id")  # config.json keys the conversion reads (whole numbers)


def model_config(hf: Mapping[str, Any]) -> ModelConfig:
    """Marian's config.json -> our ModelConfig (dropouts kept, for fine-tuning)."""
    if hf.get("model_type") != "marian":
        raise MarianError(f"config.json: model_type is {hf.get('model_type')!r}, not 'marian'")
    for key in REQUIRED:
        if key not in hf:
            raise MarianError(f"config.json has no {key!r}")
        if type(hf[key]) is not int:
            raise MarianError(f"config.json: {key} must be a whole number, got {hf[key]!r}")
    activation = ACTIVATIONS.get(str(hf.get("activation_function", "swish")))
    if activation is None:
        raise MarianError(f"config.json: activation_function {hf['activation_function']!r} (supported: relu, swish)")
    if not hf.get("scale_embedding", False):
        raise MarianError("config.json: scale_embedding is false; our embeddings are always scaled by sqrt(d_model)")
    if separate_vocabularies(hf):
        if type(hf.get("decoder_vocab_size")) is not int:
            raise MarianError("config.json: separate vocabularies (share_encoder_decoder_embeddings false) need a "
                              f"whole-number decoder_vocab_size, got {hf.get('decoder_vocab_size')!r}")
    elif hf.get("decoder_vocab_size") not in (None, hf["vocab_size"]):
        raise MarianError(f"config.json: decoder_vocab_size {hf['decoder_vocab_size']} differs from vocab_size "
                          f"{hf['vocab_size']} although share_encoder_decoder_embeddings is true")
    for ours, enc, dec in (("n_heads", "encoder_attention_heads", "decoder_attention_heads"),
                           ("d_ff", "encoder_ffn_dim", "decoder_ffn_dim")):
        if hf[enc] != hf[dec]:
            raise MarianError(f"config.json: {enc} {hf[enc]} and {dec} {hf[dec]} differ; our model has one {ours}")
    return ModelConfig(type="transformer", d_model=int(hf["d_model"]), n_heads=int(hf["encoder_attention_heads"]),
                       d_ff=int(hf["encoder_ffn_dim"]), n_encoder_layers=int(hf["encoder_layers"]),
                       n_decoder_layers=int(hf["decoder_layers"]), dropout=float(hf.get("dropout", 0.1)),
                       attention_dropout=float(hf.get("attention_dropout", 0.0)),
                       activation_dropout=float(hf.get("activation_dropout", 0.0)), norm_first=False,
                       tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                       max_positions=int(hf["max_position_embeddings"]), activation=activation, positions="halves",
                       output_bias=True)


def separate_vocabularies(hf: Mapping[str, Any]) -> bool:
    """Whether config.json describes a model with a source and a target vocabulary of its own."""
    return not hf.get("share_encoder_decoder_embeddings", True)


def vocabulary_order(vocab: Mapping[str, int], hf: Mapping[str, Any], side: str = "joint") -> list[int]:
    """vocab.json and config.json -> our id -> Marian id: PAD (Marian's pad), UNK (`<unk>`), BOS
    (Marian's decoder start), EOS (Marian's eos), then every other entry in Marian's order. A
    vocabulary already in our layout (<pad>, <unk>, <s>, </s> at 0-3: our own exports) stays as it is.
    `side`: "joint" (one vocab.json), or with separate vocabularies "source" (vocab.json: its own
    `<pad>` and `</s>`; BOS, never an encoder input, is its pad row) or "target" (target_vocab.json)."""
    name, size_key = ("target_vocab.json", "decoder_vocab_size") if side == "target" else ("vocab.json", "vocab_size")
    if not all(isinstance(p, str) and type(i) is int for p, i in vocab.items()):
        raise MarianError(f"{name}: expected pieces mapped to whole-number ids")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise MarianError(f"{name}: the ids are not 0..n-1 without gaps")
    if len(ids) != hf[size_key]:
        raise MarianError(f"{name} has {len(ids)} entries but config.json's {size_key} is {hf[size_key]}")
    for piece in ("<unk>",) + (("<pad>", "</s>") if side == "source" else ()):
        if piece not in vocab:
            raise MarianError(f"{name} has no {piece} entry")
    if side == "source":
        pad = start = vocab["<pad>"]
        eos = vocab["</s>"]
    else:
        pad, start, eos = int(hf["pad_token_id"]), int(hf.get("decoder_start_token_id", hf["pad_token_id"])), \
            int(hf["eos_token_id"])
    unk = vocab["<unk>"]
    if [vocab.get(p) for p in ("<pad>", "<unk>", "<s>", "</s>")] == [0, 1, 2, 3] and \
            (side == "source" or (pad, start, eos) == (0, 2, 3)):
        return ids  # our own layout (a model exported by nmt-export --format hf-marian): as it is
    if "<s>" in vocab:
        raise MarianError(f"{name} has a <s> entry: it would be our BOS piece; not supported")
    if any(p.startswith(">>") and p.endswith("<<") for p in vocab):
        raise MarianError(f"{name} has target-language tokens (>>xx<<): multilingual models are not supported yet")
    special = [pad, unk, start, eos]
    for key, i in (("pad_token_id", pad), ("decoder_start_token_id", start), ("eos_token_id", eos)):
        if not 0 <= i < len(ids):
            raise MarianError(f"config.json: {key} {i} is not an id of {name} (0..{len(ids) - 1})")
    return special + [i for i in ids if i not in special]


def _rows(weight: torch.Tensor, order: list[int], name: str) -> torch.Tensor:
    if weight.dim() == 0 or weight.shape[0] != len(set(order)):
        raise MarianError(f"the weights' {name} has shape {tuple(weight.shape)}, not {len(set(order))} rows (one per id)")
    return weight.index_select(0, torch.tensor(order)).float().contiguous()


def convert_weights(hf_state: Mapping[str, torch.Tensor], hf: Mapping[str, Any], order: list[int],
                    tgt_order: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A MarianMTModel state dict -> our Transformer's (model_config(hf), a joint vocabulary of
    len(order) ids, or with separate vocabularies a target one of len(tgt_order)): q, k, v fused as
    our qkv projection (k, v as the cross-attention's kv), embedding and output rows in our order,
    everything float32."""
    state = {k.removeprefix("model."): v for k, v in hf_state.items()}
    shared = state.get("shared.weight")
    tgt_order = order if tgt_order is None else tgt_order
    rows = {"encoder": "vocab_size", "decoder": "decoder_vocab_size" if separate_vocabularies(hf) else "vocab_size"}
    embeddings: dict[str, torch.Tensor] = {}  # side -> its token embedding (a file may hold only model.shared)
    for side in ("encoder", "decoder"):
        table = state.get(f"{side}.embed_tokens.weight", shared)
        if table is None:
            raise MarianError(f"the weights have no token embeddings (model.shared.weight or model.{side}.embed_tokens)")
        if table.shape[0] != hf[rows[side]]:
            raise MarianError(f"the {side} embeddings have {table.shape[0]} rows but {rows[side]} is {hf[rows[side]]}")
        embeddings[side] = table

    def get(key: str) -> torch.Tensor:
        if key not in state:
            raise MarianError(f"the weights have no {key!r}")
        return state[key].float()

    ours: dict[str, torch.Tensor] = {}
    ours["src_embed.tokens.weight"] = _rows(embeddings["encoder"], order, "encoder embedding")
    ours["tgt_embed.tokens.weight"] = _rows(embeddings["decoder"], tgt_order, "decoder embedding")
    tied = hf.get("tie_word_embeddings", True)
    ours["generator.weight"] = (ours["tgt_embed.tokens.weight"] if tied
                                else _rows(get("lm_head.weight"), tgt_order, "lm_head.weight"))
    bias = state.get("final_logits_bias")
    ours["generator.bias"] = (torch.zeros(len(tgt_order)) if bias is None
                              else _rows(bias.reshape(-1), tgt_order, "final_logits_bias"))
    if tgt_order[BOS_ID] == tgt_order[PAD_ID]:  # our BOS row repeats Marian's start row: keep it out of the softmax
        ours["generator.bias"][BOS_ID] -= BOS_OFFSET
    for side in ("encoder", "decoder"):
        for n in range(int(hf[f"{side}_layers"])):
            hf_l, l = f"{side}.layers.{n}.", f"{side}.layers.{n}."
            for part in ("weight", "bias"):
                ours[f"{l}self_attn.qkv_proj.{part}"] = torch.cat([get(f"{hf_l}self_attn.{x}_proj.{part}") for x in "qkv"])
                ours[f"{l}self_attn.out_proj.{part}"] = get(f"{hf_l}self_attn.out_proj.{part}")
                ours[f"{l}ffn.w1.{part}"], ours[f"{l}ffn.w2.{part}"] = get(f"{hf_l}fc1.{part}"), get(f"{hf_l}fc2.{part}")
                ours[f"{l}res1.norm.{part}"] = get(f"{hf_l}self_attn_layer_norm.{part}")
                last = "res2" if side == "encoder" else "res3"
                ours[f"{l}{last}.norm.{part}"] = get(f"{hf_l}final_layer_norm.{part}")
                if side == "decoder":
                    ours[f"{l}cross_attn.q_proj.{part}"] = get(f"{hf_l}encoder_attn.q_proj.{part}")
                    ours[f"{l}cross_attn.kv_proj.{part}"] = torch.cat([get(f"{hf_l}encoder_attn.{x}_proj.{part}") for x in "kv"])
                    ours[f"{l}cross_attn.out_proj.{part}"] = get(f"{hf_l}encoder_attn.out_proj.{part}")
                    ours[f"{l}res2.norm.{part}"] = get(f"{hf_l}encoder_attn_layer_norm.{part}")
    return ours


# -- a directory in the hub's layout -> an nmt checkpoint ----------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise MarianError(f"{path}: cannot read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MarianError(f"{path}: not valid JSON ({err})") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin loaded with weights_only (nothing is unpickled)."""
    if (directory / "model.safetensors").is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise MarianError(f"{directory}/model.safetensors needs the safetensors package: "
                              "pip install 'nmt-toolkit[hf]'") from None
        try:
            return load_file(str(directory / "model.safetensors"))
        except Exception as err:  # noqa: BLE001 -- safetensors raises its own error types
            raise MarianError(f"{directory}/model.safetensors: cannot read ({str(err).splitlines()[0]})") from None
    if (directory / "pytorch_model.bin").is_file():
        try:
            return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 -- torch raises many error types for damaged files
            raise MarianError(f"{directory}/pytorch_model.bin: cannot read ({str(err).splitlines()[0]})") from None
    if any(directory.glob("*.index.json")):
        raise MarianError(f"{directory}: sharded weights (*.index.json) are not supported")
    raise MarianError(f"{directory}: no model.safetensors or pytorch_model.bin")


def import_hf_marian(directory: str | Path, *, src_lang: str | None = None, tgt_lang: str | None = None) -> dict:
    """A local directory in the hub's layout (config.json, model.safetensors or pytorch_model.bin,
    source.spm, target.spm, vocab.json (and target_vocab.json for separate vocabularies),
    tokenizer_config.json) -> an nmt checkpoint dict that nmt-translate, nmt-evaluate, nmt-serve,
    nmt-export and `nmt-train --init-from` read."""
    from nmt.checkpoint import CHECKPOINT_FORMAT
    from nmt.config import DataConfig, ExperimentConfig, TokenizerConfig, TrainerConfig, validate
    from nmt.decoding.options import DecodingOptions
    from nmt.tokenizer import Tokenizer, TokenizerError

    directory = Path(directory)
    if not directory.is_dir():
        raise MarianError(f"{directory}: not a directory")
    hf = _read_json(directory / "config.json")
    if not isinstance(hf, dict):
        raise MarianError(f"{directory}/config.json: expected a JSON object")
    settings = _read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    separate = separate_vocabularies(hf)
    if separate != (directory / "target_vocab.json").is_file():
        raise MarianError(f"{directory}: config.json's share_encoder_decoder_embeddings is {not separate} but there is "
                          f"{'no' if separate else 'a'} target_vocab.json")
    if bool(settings.get("separate_vocabs", separate)) != separate:
        raise MarianError(f"{directory}/tokenizer_config.json: separate_vocabs is {settings['separate_vocabs']} but "
                          f"config.json's share_encoder_decoder_embeddings is {not separate}")
    src_lang, tgt_lang = src_lang or settings.get("source_lang"), tgt_lang or settings.get("target_lang")
    if not src_lang or not tgt_lang:
        raise MarianError(f"{directory}/tokenizer_config.json names no source_lang/target_lang: give --src and --tgt")
    model = model_config(hf)
    orders, tables = [], []  # joint: one of each; separate: source, then target
    files = (("vocab.json", "source"), ("target_vocab.json", "target")) if separate else (("vocab.json", "joint"),)
    for name, side in files:
        vocab = _read_json(directory / name)
        if not isinstance(vocab, dict):
            raise MarianError(f"{directory}/{name}: expected a mapping of pieces to ids")
        try:
            orders.append(vocabulary_order(vocab, hf, side))
        except MarianError as err:  # (its message starts with the file's name or config.json)
            raise MarianError(f"{directory}/{err}") from None
        pieces = {i: p for p, i in vocab.items()}
        tables.append(["<pad>", "<unk>", "<s>", "</s>"] + [pieces[i] for i in orders[-1][4:]])
    models = []
    for name in ("source.spm", "target.spm"):
        if not (directory / name).is_file():
            raise MarianError(f"{directory}: no {name} (Marian models without SentencePiece are not supported)")
        models.append((directory / name).read_bytes())
    try:
        tokenizer = Tokenizer(src_model=models[0], tgt_model=models[1], vocab=tables[0],
                              tgt_vocab=tables[1] if separate else None)
    except (TokenizerError, RuntimeError) as err:
        raise MarianError(f"{directory}: cannot load source.spm/target.spm ({str(err).splitlines()[0]})") from None
    weights = read_weights(directory)
    try:
        state = convert_weights(weights, hf, orders[0], orders[-1])
    except MarianError as err:
        raise MarianError(f"{directory}: {err}") from None
    generation = _read_json(directory / "generation_config.json") if (directory / "generation_config.json").is_file() else {}
    beam = int(generation.get("num_beams") or hf.get("num_beams") or 5)  # the beam the model is published with
    cfg = ExperimentConfig(
        data=DataConfig(source="text", src_lang=str(src_lang), tgt_lang=str(tgt_lang),
                        max_len=min(DataConfig().max_len, model.max_positions - 2)),
        tokenizer=TokenizerConfig(joint=not separate), model=model,
        trainer=TrainerConfig(max_steps=1),  # (trained elsewhere: fine-tune with a config of yours)
        decoding=DecodingOptions(beam_size=max(beam, 1)))
    validate(cfg)
    meta = {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "tokenizer": tokenizer.state_dict(),
            "imported_from": {"format": "hf-marian", "directory": directory.name,
                              "transformers_version": hf.get("transformers_version")}}
    return {"state_dict": {f"model.{k}": v for k, v in state.items()}, "nmt": meta}


# -- an nmt checkpoint -> a directory that transformers' MarianMTModel and MarianTokenizer load --


def _residual_order(cfg: ModelConfig) -> torch.Tensor | None:
    """Our model's d_model columns in Marian's order, or None when they are already: transformers
    rebuilds Marian's sinusoids (sines, then cosines), so a model with interleaved positions is
    written in a permuted basis of its residual stream (columns 0, 2, 4, ..., then 1, 3, 5, ...).
    Every layer is equivariant under a permutation of those features (LayerNorm normalises over
    all of them; projections read and write them through their weights), so the function is the same."""
    if cfg.positions == "halves":
        return None
    return torch.cat([torch.arange(0, cfg.d_model, 2), torch.arange(1, cfg.d_model, 2)])


def export_weights(state: Mapping[str, torch.Tensor], cfg: ModelConfig, joint: bool = True) -> dict[str, torch.Tensor]:
    """Our Transformer's state dict -> MarianMTModel's (ids unchanged: the export's vocab.json is
    our id order), q/k/v split, every tensor its own contiguous copy (safetensors refuses shared
    storage). `joint`: one vocabulary (model.shared holds it); else the encoder and the decoder
    have embeddings of their own, as Marian's with share_encoder_decoder_embeddings false."""
    perm = _residual_order(cfg)

    def cols(t: torch.Tensor) -> torch.Tensor:  # a weight reading the residual stream
        return t if perm is None else t[:, perm]

    def rows(t: torch.Tensor) -> torch.Tensor:  # a weight or bias writing it, or a LayerNorm parameter
        return t if perm is None else t[perm]

    out: dict[str, torch.Tensor] = {}
    if joint:
        out["model.shared.weight"] = cols(state["src_embed.tokens.weight"])
    out["model.encoder.embed_tokens.weight"] = cols(state["src_embed.tokens.weight"])
    out["model.decoder.embed_tokens.weight"] = cols(state["tgt_embed.tokens.weight"])
    out["lm_head.weight"] = cols(state["generator.weight"])
    bias = state.get("generator.bias")
    out["final_logits_bias"] = (torch.zeros(state["generator.weight"].shape[0]) if bias is None else bias)[None, :]
    for side in ("encoder", "decoder"):
        n_layers = cfg.n_encoder_layers if side == "encoder" else cfg.n_decoder_layers
        for n in range(n_layers):
            l, hf_l = f"{side}.layers.{n}.", f"model.{side}.layers.{n}."
            q, k, v = state[f"{l}self_attn.qkv_proj.weight"].chunk(3)
            qb, kb, vb = state[f"{l}self_attn.qkv_proj.bias"].chunk(3)
            for x, w, b in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
                out[f"{hf_l}self_attn.{x}_proj.weight"], out[f"{hf_l}self_attn.{x}_proj.bias"] = cols(w), b
            out[f"{hf_l}self_attn.out_proj.weight"] = rows(state[f"{l}self_attn.out_proj.weight"])
            out[f"{hf_l}self_attn.out_proj.bias"] = rows(state[f"{l}self_attn.out_proj.bias"])
            out[f"{hf_l}fc1.weight"], out[f"{hf_l}fc1.bias"] = cols(state[f"{l}ffn.w1.weight"]), state[f"{l}ffn.w1.bias"]
            out[f"{hf_l}fc2.weight"], out[f"{hf_l}fc2.bias"] = rows(state[f"{l}ffn.w2.weight"]), rows(state[f"{l}ffn.w2.bias"])
            last = "res2" if side == "encoder" else "res3"
            for part in ("weight", "bias"):
                out[f"{hf_l}self_attn_layer_norm.{part}"] = rows(state[f"{l}res1.norm.{part}"])
                out[f"{hf_l}final_layer_norm.{part}"] = rows(state[f"{l}{last}.norm.{part}"])
            if side == "decoder":
                out[f"{hf_l}encoder_attn.q_proj.weight"] = cols(state[f"{l}cross_attn.q_proj.weight"])
                out[f"{hf_l}encoder_attn.q_proj.bias"] = state[f"{l}cross_attn.q_proj.bias"]
                k, v = state[f"{l}cross_attn.kv_proj.weight"].chunk(2)
                kb, vb = state[f"{l}cross_attn.kv_proj.bias"].chunk(2)
                for x, w, b in (("k", k, kb), ("v", v, vb)):
                    out[f"{hf_l}encoder_attn.{x}_proj.weight"], out[f"{hf_l}encoder_attn.{x}_proj.bias"] = cols(w), b
                out[f"{hf_l}encoder_attn.out_proj.weight"] = rows(state[f"{l}cross_attn.out_proj.weight"])
                out[f"{hf_l}encoder_attn.out_proj.bias"] = rows(state[f"{l}cross_attn.out_proj.bias"])
                for part in ("weight", "bias"):
                    out[f"{hf_l}encoder_attn_layer_norm.{part}"] = rows(state[f"{l}res2.norm.{part}"])
    return {k: t.detach().float().contiguous().clone() for k, t in out.items()}


def export_hf_marian(path: str | Path, out_dir: str | Path, reports: Sequence[Path] = ()) -> Path:
    """Write checkpoint `path` as a Marian model directory (config.json, model.safetensors,
    source.spm, target.spm, vocab.json (and target_vocab.json for separate vocabularies),
    tokenizer_config.json, generation_config.json, README.md) that transformers'
    MarianMTModel.from_pretrained and MarianTokenizer load offline. `reports`: nmt-evaluate
    report.json files whose scores (with their signatures) the model card quotes."""
    from nmt.checkpoint import read_stored_model
    from nmt.errors import ExportError
    from nmt.models import describe_model
    from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

    stored = read_stored_model(path)
    cfg, tok = stored.cfg.model, stored.tokenizer
    if cfg.type != "transformer":
        raise ExportError(f"only Transformer checkpoints can be exported to Marian (model.type is {cfg.type})")
    if cfg.norm_first:
        raise ExportError("transformers' Marian models are post-norm: a pre-norm checkpoint (model.norm_first) "
                          "cannot be written as one")
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError("--format hf-marian needs the safetensors package: pip install 'nmt-toolkit[hf]'") from None
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        pieces = tok.tgt_pieces(list(range(tok.tgt_vocab_size)))
        src_pieces = pieces if tok.joint else tok.src_pieces(list(range(tok.src_vocab_size)))
        vocabs = {}  # file -> piece -> id: one vocab.json, or a source and a target one
        for name, table in (("vocab.json", src_pieces),) + ((("target_vocab.json", pieces),) if not tok.joint else ()):
            vocabs[name] = {p: i for i, p in enumerate(table)}
            if len(vocabs[name]) != len(table):
                raise ExportError(f"{path}: the vocabulary holds a piece twice; it cannot be written as {name}")
        data = stored.cfg.data
        hf = {"model_type": "marian", "architectures": ["MarianMTModel"], "vocab_size": len(src_pieces),
              "decoder_vocab_size": len(pieces), "d_model": cfg.d_model, "encoder_layers": cfg.n_encoder_layers,
              "decoder_layers": cfg.n_decoder_layers, "encoder_attention_heads": cfg.n_heads,
              "decoder_attention_heads": cfg.n_heads, "encoder_ffn_dim": cfg.d_ff, "decoder_ffn_dim": cfg.d_ff,
              "activation_function": cfg.activation, "scale_embedding": True, "max_position_embeddings": cfg.max_positions,
              "share_encoder_decoder_embeddings": tok.joint, "tie_word_embeddings": cfg.tie_embeddings,
              "dropout": cfg.dropout, "attention_dropout": cfg.attention_dropout,
              "activation_dropout": cfg.activation_dropout, "pad_token_id": PAD_ID, "eos_token_id": EOS_ID,
              "decoder_start_token_id": BOS_ID, "forced_eos_token_id": EOS_ID, "is_encoder_decoder": True}
        generation = {"decoder_start_token_id": BOS_ID, "pad_token_id": PAD_ID, "eos_token_id": EOS_ID,
                      "forced_eos_token_id": EOS_ID, "bad_words_ids": [[PAD_ID], [BOS_ID]],
                      "num_beams": stored.cfg.decoding.beam_size, "max_length": cfg.max_positions - 1,
                      "min_new_tokens": stored.cfg.decoding.min_len,  # (ours counts tokens before EOS, as this)
                      "early_stopping": True}  # (our beam search stops at K ended hypotheses, as this)
        decoding = stored.cfg.decoding
        if decoding.length_penalty in ("length", "none"):  # generate's is |Y|^alpha; GNMT's it does not have
            generation["length_penalty"] = decoding.alpha if decoding.length_penalty == "length" else 0.0
        files = {"config.json": hf, "generation_config.json": generation, **vocabs,
                 "tokenizer_config.json": {"source_lang": data.src_lang, "target_lang": data.tgt_lang,
                                           "separate_vocabs": not tok.joint, "unk_token": pieces[UNK_ID],
                                           "eos_token": pieces[EOS_ID], "pad_token": pieces[PAD_ID],
                                           "model_max_length": cfg.max_positions - 1}}
        for name, value in files.items():
            (out / name).write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "source.spm").write_bytes(tok.src_model)
        (out / "target.spm").write_bytes(tok.tgt_model or tok.src_model)
        save_file(export_weights(stored.state, cfg, tok.joint), str(out / "model.safetensors"), metadata={"format": "pt"})
        scores = [_report_line(Path(r)) for r in reports]
        (out / "README.md").write_text(model_card(stored, describe_model(cfg), Path(path).name, scores), encoding="utf-8")
    except OSError as err:
        raise ExportError(f"cannot write the export to {out}: {err.strerror or err}") from None
    return out


def _report_line(report: Path) -> str:
    """One line of the model card from an nmt-evaluate report.json: test set, scores, signatures."""
    from nmt.errors import ExportError

    try:
        r = json.loads(report.read_text(encoding="utf-8"))
        scores = ", ".join(f"{name.upper() if name != 'chrf' else 'chrF2'} {v['score']:.2f} (`{v['signature']}`)"
                           for name, v in r["scores"].items())
        return f"{Path(r['src_file']).name} ({r['segments']:,} segments, {r['decoding']}): {scores}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{report}: not an nmt-evaluate report.json ({err})") from None


def model_card(stored: Any, architecture: str, name: str, scores: Sequence[str] = ()) -> str:
    """The README.md of an exported model: what it is, where it came from, how to run it."""
    data = stored.cfg.data
    corpora = data.train if isinstance(data.train, list) else [data.train]
    lines = [
        "---", f"language: [{data.src_lang}, {data.tgt_lang}]", "tags: [translation, marian, nmt-toolkit]",
        "pipeline_tag: translation", "---", "",
        f"# {data.src_lang}→{data.tgt_lang} Transformer trained with nmt", "",
        f"Exported from the nmt checkpoint `{name}` by `nmt-export --format hf-marian`.", "",
        f"- Architecture: {architecture}; vocabulary of {stored.tokenizer.tgt_vocab_size:,} SentencePiece pieces.",
        f"- Training data: {data.source} corpus {', '.join(map(str, corpora))}.",
        f"- Decoding the model was tuned for: {stored.cfg.decoding.describe()}.",
    ]
    if scores:
        lines += ["", "## Scores (nmt-evaluate)", ""] + [f"- {line}" for line in scores]
    lines += ["", "## Use", "", "```python", "from transformers import MarianMTModel, MarianTokenizer",
              "tokenizer = MarianTokenizer.from_pretrained(PATH)", "model = MarianMTModel.from_pretrained(PATH)",
              'batch = tokenizer(["..."], return_tensors="pt", padding=True)',
              "print(tokenizer.batch_decode(model.generate(**batch), skip_special_tokens=True))", "```", ""]
    return "\n".join(lines)
