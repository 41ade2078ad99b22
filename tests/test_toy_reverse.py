"""The toy task learns: reversing letter sequences reaches >= 95% exact match on held-out data.

This trains a real (tiny) Transformer through the public API for about a minute on 2 CPU cores.
"""

import pytest

from nmt.checkpoint import load_model
from nmt.config import load_config
from nmt.data import toy_reverse_split
from nmt.training.run import train
from nmt.api import Translator
from nmt.translator import TorchEngine

from tests.test_cli import TOY


@pytest.mark.slow  # about 2-4 minutes of training; CI runs the slow tests too (.ci/run)
def test_toy_reverse_reaches_95_percent_exact_match(tmp_path):
    cfg = load_config(TOY, ["trainer.val_check_interval=400", "trainer.val_bleu_sentences=100"])
    result = train(cfg, tmp_path / "toy", test=False)
    loaded = load_model(result.best_checkpoint)
    pairs = toy_reverse_split("test")
    hyps = [t.text for t in Translator(TorchEngine(loaded)).translate([src for src, _ in pairs], beam_size=1)]
    exact = sum(h == ref for h, (_, ref) in zip(hyps, pairs)) / len(pairs)
    assert exact >= 0.95, f"exact match {exact:.1%}"
