"""Configuration: typed, validated, overridable; bad input fails at start with one line."""

from pathlib import Path

import pytest

from nmt.config import ConfigError, from_dict, load_config, parse_override

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_comment_every_key(path):
    load_config(path)
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#"):
            assert "#" in line, f"{path.name}: key without a comment: {line.strip()}"


def test_shipped_configs_include_the_required_ones():
    assert {"transformer_base.yaml", "transformer_small.yaml", "quickstart.yaml", "toy_reverse.yaml"} <= {
        p.name for p in CONFIGS}


def test_base_config_is_the_papers_base_model():
    cfg = load_config(Path(CONFIGS[0]).parent / "transformer_base.yaml")
    m, o = cfg.model, cfg.optim
    assert (m.n_encoder_layers, m.n_decoder_layers, m.d_model, m.d_ff, m.n_heads, m.dropout) == (6, 6, 512, 2048, 8, 0.1)
    assert (o.label_smoothing, o.adam_betas, o.adam_eps, o.warmup_steps, o.lr_schedule) == (0.1, [0.9, 0.98], 1e-9, 4000, "noam")
    assert cfg.data.max_tokens * cfg.trainer.accumulate_grad_batches == 25000


@pytest.mark.parametrize("values, message", [
    ({"model": {"d_modle": 512}}, "unknown key 'model.d_modle'"),
    ({"modle": {}}, "unknown key 'modle'"),
    ({"model": {"d_model": "big"}}, "model.d_model: expected int, got 'big'"),
    ({"model": {"dropout": True}}, "model.dropout: expected float"),
    ({"model": {"d_model": 500, "n_heads": 8}}, r"model.d_model \(500\) must be divisible by model.n_heads \(8\)"),
    ({"model": {"dropout": 1.5}}, r"model.dropout must be in \[0, 1\)"),
    ({"data": {"source": "ftp"}}, "data.source: 'ftp' is not one of"),
    ({"model": {"activation": "gelu"}}, "model.activation: 'gelu' is not one of relu, swish"),
    ({"model": {"positions": "rotary"}}, "model.positions: 'rotary' is not one of interleaved, halves"),
    ({"model": {"type": "rnn", "activation": "swish"}}, "model.activation, positions and output_bias are Transformer options"),
    ({"optim": {"adam_betas": [0.9]}}, "optim.adam_betas must be two numbers"),
    ({"trainer": {"max_steps": -1, "max_epochs": -1}}, "set at least one of trainer.max_steps"),
    ({"trainer": {"max_time": "10 minutes", "max_steps": 5}}, "trainer.max_time must look like DD:HH:MM:SS"),
    ({"trainer": {"ema_decay": 1.0}}, r"trainer.ema_decay must be in \[0, 1\), got 1.0"),
    ({"trainer": {"precision": "bf17"}}, r"trainer.precision must be one of 32-true, .*auto, got .bf17."),
    ({"data": {"source": "text", "train": ["a", "b"], "train_weights": [1]}},
     r"data.train_weights: 1 weight\(s\) for 2 data.train"),
    ({"data": {"source": "text", "train": ["a", "b"], "train_weights": [1, -0.5]}}, "data.train_weights must be >= 0"),
    ({"data": {"source": "text", "train": ["a", "b"], "train_weights": [0, 0]}}, "with at least one > 0"),
    ({"data": {"source": "text", "train": ["a", "b"], "train_weights": [1, 0.5], "streaming": True}},
     "data.train_weights needs in-memory training data"),
    ({"tokenizer": {"type": "bpe", "sampling_alpha": 0.1}}, "set tokenizer.type unigram, not bpe"),
    ({"tokenizer": {"sampling_alpha": -0.1}}, "tokenizer.sampling_alpha must be >= 0 and sampling_nbest >= 2, got -0.1 and 64"),
    ({"tokenizer": {"sampling_alpha": 0.1, "sampling_nbest": 1}}, "sampling_nbest >= 2, got 0.1 and 1"),
    ({"tokenizer": {"sampling_alpha": 0.1}, "data": {"prepared_dir": "p"}},
     "tokenizer.sampling_alpha needs in-memory training data"),
    ({"data": {"source": "hub"}, "trainer": {"max_steps": 5}}, "data.hub_name is required"),
    ({"decoding": {"beam_size": 0}}, "decoding.beam_size: beam_size must be >= 1, got 0"),
    ({"decoding": {"beam_size": 2, "n_best": 3}}, r"decoding.n_best: n_best \(3\) cannot exceed beam_size \(2\)"),
    ({"decoding": {"length_penalty": "wu"}}, "decoding.length_penalty: length_penalty must be one of gnmt, length, none"),
    ({"decoding": {"beam": 4}}, "unknown key 'decoding.beam'"),
])
def test_bad_values_fail_with_a_one_line_message(values, message):
    values.setdefault("trainer", {}).setdefault("max_steps", 10)
    with pytest.raises(ConfigError, match=message) as err:
        from_dict(values)
    assert "\n" not in str(err.value)


def test_overrides_are_parsed_as_yaml_and_type_checked():
    assert parse_override("model.dropout=0.3") == (["model", "dropout"], 0.3)
    assert parse_override("trainer.max_time=00:00:05:00") == (["trainer", "max_time"], "00:00:05:00")
    cfg = from_dict({"trainer": {"max_steps": 1}}, ["model.d_model=256", "model.n_heads=4", "optim.adam_betas=[0.9, 0.99]"])
    assert (cfg.model.d_model, cfg.optim.adam_betas) == (256, [0.9, 0.99])
    with pytest.raises(ConfigError, match="unknown key 'model.width'"):
        from_dict({"trainer": {"max_steps": 1}}, ["model.width=3"])
    with pytest.raises(ConfigError, match="--set expects section.key=value"):
        parse_override("model.dropout")


def test_old_decoding_length_keys_of_the_trainer_section_still_load_into_decoding():
    cfg = from_dict({"trainer": {"max_steps": 1, "max_decode_len_a": 1.0, "max_decode_len_b": 3}})
    assert (cfg.decoding.max_len_a, cfg.decoding.max_len_b) == (1.0, 3)
    cfg = from_dict({"trainer": {"max_steps": 1}}, ["trainer.max_decode_len_b=4", "decoding.beam_size=2"])
    assert (cfg.decoding.max_len_b, cfg.decoding.beam_size) == (4, 2)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {d_model: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_stpes: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'trainer.max_stpes'"):
        load_config(typo)
