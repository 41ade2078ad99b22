"""The per-sentence confidence (nmt/confidence.py, nmt-calibrate): its signals, AUROC and ECE by
hand, the logistic fit against a known model, the re-decoding of degenerate outputs, and the
calibration travelling from nmt-calibrate through the checkpoint to every output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nmt import Translator
from nmt.confidence import Calibration, auroc, expected_calibration_error, fit, repeated_share, signals
from tests.test_cli import run


def test_signals_by_hand():
    assert repeated_share([1, 2, 3, 1, 2, 3]) == pytest.approx(0.25)  # (1,2,3) again, of 4 trigrams
    assert repeated_share([1, 2]) == 0.0 and repeated_share([5, 5, 5, 5]) == pytest.approx(0.5)
    mean_lp, deviation, repeats = signals([7, 8, 9], -2.0, 3, median_ratio=0.1)
    assert mean_lp == pytest.approx(-0.5)  # 3 tokens + EOS
    assert deviation == pytest.approx(abs(math.log(4 / 4) - 0.1)) and repeats == 0.0


def test_auroc_and_expected_calibration_error_by_hand():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([0.9, 0.2, 0.3], [False, True, True]) == pytest.approx(0.0)
    # bins 0.1-0.2: confidence .15, half good (.35 off); 0.8-0.9: .85, all good (.15 off); each half the items
    assert expected_calibration_error([0.15, 0.15, 0.85, 0.85], [0, 1, 1, 1]) == pytest.approx(0.25)


def test_the_logistic_fit_recovers_a_known_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    z = 1.5 * (x[:, 0] - 0.0) / 1.0 - 1.0 * (x[:, 1] - 1.0) / 2.0 + 0.3  # on the standardised scale
    good = rng.random(4000) < 1 / (1 + np.exp(-z))
    c = fit(x, good, threshold=50.0, ratios=rng.normal(size=4000), search="beam 5")
    assert c.weights == pytest.approx((1.5, -1.0, 0.0), abs=0.12) and c.bias == pytest.approx(0.3, abs=0.12)
    probs = [c.confidence(row) for row in x]
    truth = 1 / (1 + np.exp(-z))
    assert auroc(probs, good.tolist()) == pytest.approx(auroc(truth.tolist(), good.tolist()), abs=0.01)
    assert expected_calibration_error(probs, good.tolist()) < 0.03
    assert Calibration.from_state_dict(json.loads(json.dumps(c.state_dict()))) == c


def calibration(low: float, high: float) -> Calibration:
    return Calibration(threshold=50.0, mean=(0, 0, 0), std=(1, 1, 1), weights=(1, 0, 0), bias=0.0, median_ratio=0.0,
                       ratio_range=(low, high), search="", sentences=100, good_share=0.5)


def test_loops_and_lengths_far_off_are_degenerate():
    c = calibration(-0.5, 0.5)  # a margin of 0.5: ratios from -1 to 1 are usual
    assert c.degenerate([4, 5, 6, 7, 8], 5) is None
    assert c.degenerate([4, 5, 6] * 4, 12) == "loop"  # 10 trigrams, 7 repeated
    assert c.degenerate(list(range(4, 11)), 5) is None  # ratio log(8/6) = 0.29: inside
    assert c.degenerate(list(range(4, 24)), 5) == "long"  # log(21/6) = 1.25 > 0.5 + 0.5
    assert c.degenerate([4], 10) == "short"  # log(2/11) = -1.70 < -1
    assert c.degenerate([4, 5, 6, 7], 10) is None  # log(5/11) = -0.79
    assert c.shortest(5) == 3 and c.shortest(10) == 6  # ceil(e^-0.5 * 6) - 1, ceil(e^-0.5 * 11) - 1
    assert calibration(-9.0, 0.0).shortest(3) == 0


@pytest.fixture(scope="module")
def translator(toy_ckpt):
    return Translator.from_checkpoint(toy_ckpt)


TEXTS = ["a b c d", "e f g", "h i j a b", "c"]


def test_degenerate_outputs_are_decoded_again_with_no_repeated_trigrams(toy_ckpt, translator):
    expected = translator.translate(TEXTS, beam_size=3, no_repeat_ngram_size=3)
    strict = Translator.from_checkpoint(toy_ckpt)
    strict.calibration = calibration(-5.0, -5.0)  # every output is far longer than "usual"
    got = strict.translate(TEXTS, beam_size=3)
    assert [t.text for t in got] == [t.text for t in expected]
    assert all(t.redecoded for t in got) and strict.redecoded == 4
    assert all(0.0 <= t.confidence <= 1.0 for t in got)
    assert not any(t.redecoded for t in strict.translate(TEXTS, beam_size=3, no_repeat_ngram_size=2))  # set: not again
    assert not any(t.redecoded for t in strict.translate(TEXTS, beam_size=3, redecode=False))  # turned off
    assert strict.redecoded == 4


def test_too_short_outputs_are_decoded_again_at_least_as_long_as_the_valid_splits_shortest(toy_ckpt, translator):
    """Usual ratios here: log((out + 1) / (src + 1)) = 1 exactly, so an output is too short when it
    has fewer than e * (src + 1) - 1 tokens; it is then decoded with that as its minimum length
    (within the length limit), one option set per length."""
    strict = Translator.from_checkpoint(toy_ckpt)
    strict.calibration = c = calibration(1.0, 1.0)
    first = translator.translate(TEXTS, beam_size=3)
    got = strict.translate(TEXTS, beam_size=3)
    lengths = set()
    for t, plain, g in zip(TEXTS, first, got):
        n = len(plain.source_ids)
        if c.degenerate(plain.target_ids, n) != "short":
            assert not g.redecoded and g.text == plain.text
            continue
        least = min(c.shortest(n), strict.output_limit(n, strict.defaults))
        (want,) = translator.translate([t], beam_size=3, no_repeat_ngram_size=3, min_len=least)
        assert g.redecoded and g.text == want.text and len(g.target_ids) >= least
        lengths.add(least)
    assert len(lengths) >= 2  # sentences of different lengths: decoded under different minimum lengths


def test_nmt_calibrate_stores_a_calibration_every_output_then_reports(toy_ckpt, translator, tmp_path):
    """References: the model's own output for half of the sentences (chrF 100) and text with none
    of its characters for the others (chrF 0), so both classes are there whatever the toy learnt."""
    sources = [" ".join("abcdefghij"[(i * 7 + j * 3) % 10] for j in range(3 + i % 6)) for i in range(40)]
    outputs = [t.text for t in translator.translate(sources)]
    (tmp_path / "valid.xx").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    (tmp_path / "valid.yy").write_text("".join((o if i % 2 else "zzz qqq") + "\n" for i, o in enumerate(outputs)),
                                       encoding="utf-8")
    out = tmp_path / "calibrated.ckpt"
    proc = run("nmt.cli.calibrate", str(toy_ckpt), "-o", str(out), "--src", str(tmp_path / "valid.xx"),
               "--ref", str(tmp_path / "valid.yy"))
    assert proc.returncode == 0, proc.stderr
    assert "calibrated on 40 pairs" in proc.stdout and "50.0% at or above chrF 50" in proc.stdout
    calibrated = Translator.from_checkpoint(out)
    assert calibrated.calibration is not None and calibrated.calibration.sentences == 40
    (r,) = calibrated.translate(["a b c"])
    assert 0.0 <= r.confidence <= 1.0 and r.as_dict()["confidence"] == round(r.confidence, 4)
    assert translator.translate(["a b c"])[0].confidence is None  # no calibration, no confidence
    assert calibrated.translate(["a b c"], beam_size=1)[0].confidence is None  # greedy search has no score
    jsonl = run("nmt.cli.translate", "--checkpoint", str(out), "--src", "xx", "--tgt", "yy", "--output-format", "jsonl",
                stdin="a b c\n")
    assert jsonl.returncode == 0 and 0.0 <= json.loads(jsonl.stdout)["confidence"] <= 1.0
    kept = run("nmt.cli.translate", "--checkpoint", str(out), "--src", "xx", "--tgt", "yy", "--output-format", "jsonl",
               "--no-redecode", stdin="a b c\n")
    assert kept.returncode == 0 and json.loads(kept.stdout)["redecoded"] is False
    (tmp_path / "foreign.yy").write_text("zzz qqq\n" * 40, encoding="utf-8")  # every output below chrF 50
    same = run("nmt.cli.calibrate", str(toy_ckpt), "-o", str(out), "--src", str(tmp_path / "valid.xx"),
               "--ref", str(tmp_path / "foreign.yy"))
    assert same.returncode == 2 and "choose another --threshold" in same.stderr and "Traceback" not in same.stderr


def test_a_damaged_calibration_is_a_one_line_error(toy_ckpt, tmp_path):
    import torch

    ckpt = torch.load(toy_ckpt, weights_only=True)
    ckpt["nmt"]["calibration"] = {"threshold": 50.0}
    torch.save(ckpt, tmp_path / "bad.ckpt")
    proc = run("nmt.cli.translate", "--checkpoint", str(tmp_path / "bad.ckpt"), "--src", "xx", "--tgt", "yy",
               stdin="a b\n")
    assert proc.returncode == 2 and "damaged confidence calibration entry" in proc.stderr
    assert "Traceback" not in proc.stderr
