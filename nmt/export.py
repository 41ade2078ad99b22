"""Export a Transformer checkpoint to CTranslate2 (fast CPU/GPU inference, int8).

The paper's architecture maps one to one onto CTranslate2's TransformerSpec:

    ours (nmt/models/transformer.py)            CTranslate2 spec
    src_embed.tokens / tgt_embed.tokens         encoder/decoder.embeddings (scaled by sqrt(D))
    Embeddings.pe (interleaved sin/cos)          encoder/decoder.position_encodings.encodings
    self_attn.qkv_proj (fused Q, K, V)           layer.self_attention.linear[0]
    self_attn.out_proj                           layer.self_attention.linear[1]
    cross_attn.q_proj / kv_proj / out_proj       layer.attention.linear[0] / [1] / [2]
    res1.norm / res2.norm / res3.norm            self_attention / attention / ffn .layer_norm
    ffn.w1 / ffn.w2                              layer.ffn.linear_0 / linear_1
    final_norm (pre-norm only)                   encoder/decoder.layer_norm
    generator                                    decoder.projection

The positions are written out as a table: CTranslate2's built-in sinusoids concatenate the sin and
cos halves (tensor2tensor) while the paper -- and this model -- interleave them.

An export directory holds CTranslate2's files (model.bin, config.json, vocabularies) plus ours:
nmt.json (format, the resolved experiment config) and the SentencePiece model(s), so it translates
on its own: `nmt-translate --engine ctranslate2 --checkpoint DIR` (nmt/ct2.py, without torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nmt.checkpoint import LoadedModel
from nmt.ct2 import EXPORT_FORMAT, META_FILE, import_ctranslate2
from nmt.errors import ExportError

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16")


def _linear(spec, layer: torch.nn.Linear) -> None:
    spec.weight = layer.weight.detach().float().cpu().numpy()
    if layer.bias is not None:
        spec.bias = layer.bias.detach().float().cpu().numpy()


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = norm.weight.detach().float().cpu().numpy()
    spec.beta = norm.bias.detach().float().cpu().numpy()


def _embeddings(spec, embeddings, n_positions: int) -> None:
    table = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings  # encoder: a list
    table.weight = embeddings.tokens.weight.detach().float().cpu().numpy()
    spec.position_encodings.encodings = embeddings.pe[:n_positions].detach().float().cpu().numpy()
    spec.scale_embeddings = True


def _self_attention_and_ffn(theirs, ours, *, ffn_norm: torch.nn.LayerNorm) -> None:
    """The parts encoder and decoder layers share: self-attention and feed-forward blocks."""
    _linear(theirs.self_attention.linear[0], ours.self_attn.qkv_proj)
    _linear(theirs.self_attention.linear[1], ours.self_attn.out_proj)
    _norm(theirs.self_attention.layer_norm, ours.res1.norm)
    _norm(theirs.ffn.layer_norm, ffn_norm)
    _linear(theirs.ffn.linear_0, ours.ffn.w1)
    _linear(theirs.ffn.linear_1, ours.ffn.w2)


def export_ctranslate2(loaded: LoadedModel, out_dir: str | Path, *, quantization: str | None = None) -> Path:
    """Write a CTranslate2 model directory for a Transformer checkpoint (weights in float32 unless
    `quantization` is one of QUANTIZATIONS; CTranslate2 can also quantize at load time)."""
    import_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    cfg, tok = loaded.cfg.model, loaded.tokenizer
    model: Any = loaded.model  # a Transformer (checked below); its submodules are read by name
    if cfg.type != "transformer":
        raise ExportError(f"only Transformer checkpoints can be exported to CTranslate2 (model.type is {cfg.type})")
    if quantization not in (None, *QUANTIZATIONS):
        raise ExportError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    activation = common_spec.Activation.SWISH if cfg.activation == "swish" else common_spec.Activation.RELU
    # alignment_heads = all heads: attention heatmaps average the heads of the last layer, as ours do
    spec = transformer_spec.TransformerSpec.from_config((cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads,
                                                        pre_norm=cfg.norm_first, activation=activation,
                                                        alignment_heads=cfg.n_heads)
    enc, dec = spec.encoder, spec.decoder
    _embeddings(enc, model.src_embed, cfg.max_positions)
    _embeddings(dec, model.tgt_embed, cfg.max_positions)
    for theirs, ours in zip(enc.layer, model.encoder.layers):
        _self_attention_and_ffn(theirs, ours, ffn_norm=ours.res2.norm)
    for theirs, ours in zip(dec.layer, model.decoder.layers):
        _self_attention_and_ffn(theirs, ours, ffn_norm=ours.res3.norm)
        _linear(theirs.attention.linear[0], ours.cross_attn.q_proj)
        _linear(theirs.attention.linear[1], ours.cross_attn.kv_proj)
        _linear(theirs.attention.linear[2], ours.cross_attn.out_proj)
        _norm(theirs.attention.layer_norm, ours.res2.norm)
    if cfg.norm_first:
        _norm(enc.layer_norm, model.encoder.final_norm)
        _norm(dec.layer_norm, model.decoder.final_norm)
    _linear(dec.projection, model.generator)
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = "<unk>", "<s>", "</s>"
    spec.config.decoder_start_token = "<s>"
    spec.register_source_vocabulary(tok.src_pieces(list(range(tok.src_vocab_size))))
    spec.register_target_vocabulary(tok.tgt_pieces(list(range(tok.tgt_vocab_size))))
    spec.validate()
    spec.optimize(quantization=quantization)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        spec.save(str(out))
        if loaded.shortlist is not None:  # CTranslate2's vocabulary map: translate_batch(use_vmap=True)
            loaded.shortlist.write_vmap(out / "vmap.txt", tok.src_pieces(list(range(tok.src_vocab_size))),
                                        tok.tgt_pieces(list(range(tok.tgt_vocab_size))))
        else:
            (out / "vmap.txt").unlink(missing_ok=True)
        tok.save(out)
        meta = {"format": EXPORT_FORMAT, "quantization": quantization, "config": loaded.cfg.to_dict(),
                "calibration": None if loaded.calibration is None else loaded.calibration.state_dict()}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise ExportError(f"cannot write the export to {out}: {err.strerror or err}") from None
    return out
