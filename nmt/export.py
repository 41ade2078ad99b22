"""Export a Transformer checkpoint to CTranslate2 (fast CPU/GPU inference, int8), and translate
with the export.

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
on its own: `nmt-translate --engine ctranslate2 --checkpoint DIR`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nmt.checkpoint import CheckpointError, LoadedModel
from nmt.config import ConfigError, from_dict
from nmt.decoding.beam import BeamOptions
from nmt.tokenizer import EOS_ID, PAD_ID, Tokenizer

EXPORT_FORMAT = 1
META_FILE = "nmt.json"
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16")


class ExportError(RuntimeError):
    pass


def _import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise ExportError("the CTranslate2 engine needs the ctranslate2 package: pip install 'nmt[ctranslate2]'") from None
    return ctranslate2


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


def export_ctranslate2(loaded: LoadedModel, out_dir: str | Path, *, quantization: str | None = None) -> Path:
    """Write a CTranslate2 model directory for a Transformer checkpoint (weights in float32 unless
    `quantization` is one of QUANTIZATIONS; CTranslate2 can also quantize at load time)."""
    _import_ctranslate2()
    from ctranslate2.specs import transformer_spec

    cfg, model, tok = loaded.cfg.model, loaded.model, loaded.tokenizer
    if cfg.type != "transformer":
        raise ExportError(f"only Transformer checkpoints can be exported to CTranslate2 (model.type is {cfg.type})")
    if quantization not in (None, *QUANTIZATIONS):
        raise ExportError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    # alignment_heads = all heads: attention heatmaps average the heads of the last layer, as ours do
    spec = transformer_spec.TransformerSpec.from_config((cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads,
                                                        pre_norm=cfg.norm_first, alignment_heads=cfg.n_heads)
    enc, dec = spec.encoder, spec.decoder
    _embeddings(enc, model.src_embed, cfg.max_positions)
    _embeddings(dec, model.tgt_embed, cfg.max_positions)
    for theirs, ours in zip(enc.layer, model.encoder.layers):
        _linear(theirs.self_attention.linear[0], ours.self_attn.qkv_proj)
        _linear(theirs.self_attention.linear[1], ours.self_attn.out_proj)
        _norm(theirs.self_attention.layer_norm, ours.res1.norm)
        _norm(theirs.ffn.layer_norm, ours.res2.norm)
        _linear(theirs.ffn.linear_0, ours.ffn.w1)
        _linear(theirs.ffn.linear_1, ours.ffn.w2)
    for theirs, ours in zip(dec.layer, model.decoder.layers):
        _linear(theirs.self_attention.linear[0], ours.self_attn.qkv_proj)
        _linear(theirs.self_attention.linear[1], ours.self_attn.out_proj)
        _norm(theirs.self_attention.layer_norm, ours.res1.norm)
        _linear(theirs.attention.linear[0], ours.cross_attn.q_proj)
        _linear(theirs.attention.linear[1], ours.cross_attn.kv_proj)
        _linear(theirs.attention.linear[2], ours.cross_attn.out_proj)
        _norm(theirs.attention.layer_norm, ours.res2.norm)
        _norm(theirs.ffn.layer_norm, ours.res3.norm)
        _linear(theirs.ffn.linear_0, ours.ffn.w1)
        _linear(theirs.ffn.linear_1, ours.ffn.w2)
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
        tok.save(out)
        meta = {"format": EXPORT_FORMAT, "quantization": quantization, "config": loaded.cfg.to_dict()}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise ExportError(f"cannot write the export to {out}: {err.strerror or err}") from None
    return out


class CTranslate2Model:
    """An export directory loaded into a `ctranslate2.Translator`. It stands where the torch model
    stands in `LoadedModel`; `nmt.translator` hands it whole batches through `decode_batch`."""

    def __init__(self, directory: Path, tokenizer: Tokenizer, *, device: str = "cpu", compute_type: str = "default",
                 threads: int = 0) -> None:
        ctranslate2 = _import_ctranslate2()
        device_type, _, index = device.partition(":")
        try:
            self.translator = ctranslate2.Translator(str(directory), device=device_type, device_index=int(index or 0),
                                                     compute_type=compute_type, intra_threads=threads)
        except (RuntimeError, ValueError) as err:
            raise CheckpointError(f"{directory}: CTranslate2 cannot load this model ({str(err).splitlines()[0]})") from None
        self.tokenizer = tokenizer

    def decode_batch(self, src: torch.Tensor, options: BeamOptions, *, greedy: bool, record_attention: bool,
                     sampling=None) -> list:
        """src (b, S) ids with EOS and padding -> per sentence: the n-best (token ids, score) and the
        best one's attention (target tokens + EOS, source tokens + EOS), as `nmt.translator` expects.

        Our search options map onto CTranslate2's: length penalty |Y|^alpha with |Y| counting EOS
        (return_end_token) and per-sentence length limits a * src_len + b. CTranslate2 has one limit
        per batch, so a sentence whose output exceeds its own limit is decoded again on its own."""
        if options.length_penalty == "gnmt":
            raise ExportError("the ctranslate2 engine has no GNMT length penalty: use length_penalty 'length' "
                              "(|Y|^alpha) or 'none'")
        rows = [[i for i in row if i != PAD_ID] for row in src.tolist()]
        limits = [int(len(row) * options.max_len_a + options.max_len_b) for row in rows]  # as max_output_lengths
        results = self._translate(rows, max(limits), options, record_attention, sampling)
        for j, (row, limit) in enumerate(zip(rows, limits)):
            if len(results[j][0][0][0]) > limit:  # generated beyond this sentence's own limit
                results[j] = self._translate([row], limit, options, record_attention, sampling)[0]
        return results

    def _translate(self, rows: list[list[int]], limit: int, options: BeamOptions, record_attention: bool,
                   sampling) -> list:
        kwargs = dict(beam_size=options.beam_size, num_hypotheses=options.n_best, return_scores=True,
                      return_end_token=True, max_decoding_length=limit + 1, min_decoding_length=options.min_len,
                      length_penalty=0.0 if options.length_penalty == "none" else options.alpha,
                      no_repeat_ngram_size=options.no_repeat_ngram_size, return_attention=record_attention)
        if sampling is not None:
            kwargs.update(beam_size=1, num_hypotheses=1, sampling_topk=sampling.top_k or 0,
                          sampling_topp=sampling.top_p, sampling_temperature=sampling.temperature)
        pieces = [self.tokenizer.src_pieces(row) for row in rows]  # the EOS id becomes "</s>"
        out = []
        for result in self.translator.translate_batch(pieces, **kwargs):
            nbest = []
            for hyp, score in zip(result.hypotheses, result.scores):
                ids = self.tokenizer.tgt_ids(hyp)
                ids = ids[:-1] if ids and ids[-1] == EOS_ID else ids[:limit]  # cut at the limit, as ours stops there
                nbest.append((ids, score))
            attention = torch.tensor(result.attention[0]) if record_attention and result.attention else None
            out.append((nbest, attention))
        return out


def load_ctranslate2(directory: str | Path, *, device: str = "cpu", int8: bool = False,
                     threads: int = 0) -> LoadedModel:
    """An export directory -> LoadedModel whose model is a CTranslate2Model."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file() or not (directory / "model.bin").is_file():
        raise CheckpointError(f"{directory}: not a CTranslate2 export by nmt-export (needs model.bin and {META_FILE})")
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        cfg = from_dict(meta["config"])
        tokenizer = Tokenizer.load(directory)
    except (ValueError, KeyError, TypeError, OSError, ConfigError) as err:
        raise CheckpointError(f"{directory}/{META_FILE}: unreadable export metadata ({err})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{directory}: export format {meta.get('format')!r} is not the one this version reads "
                              f"({EXPORT_FORMAT})")
    model = CTranslate2Model(directory, tokenizer, device=device, compute_type="int8" if int8 else "default",
                             threads=threads)
    return LoadedModel(cfg=cfg, tokenizer=tokenizer, model=model)
