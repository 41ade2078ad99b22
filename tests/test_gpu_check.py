"""scripts/gpu_check.sh --tiny: the GPU check's code path on CPU (data, training, decoding with
torch and CTranslate2), so the real run on a lent GPU does not fail on a broken part."""

import json
import subprocess

import pytest

from tests.conftest import ROOT, needs_shared


@pytest.mark.slow  # the whole GPU check in miniature, about 1 minute; CI runs the slow tests too (.ci/run)
def test_gpu_check_tiny_mode_runs_every_part_with_real_figures(tmp_path):
    needs_shared("tatoeba-cmn", "train.zh")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    parts = result["parts"]
    assert result["failed"] == []
    assert set(parts) == {"data", "train_eager", "decode_torch", "decode_ctranslate2"}
    assert all(p["status"] == "ok" for p in parts.values())
    assert parts["data"]["pairs_kept"] > 0
    train = parts["train_eager"]
    assert train["target_tokens_per_s"] > 0 and train["flop_per_target_token"] > 0
    assert train["mfu"] is None and "CPU" in train["mfu_reason"]
    for name, dtype in (("decode_torch", "bfloat16"), ("decode_ctranslate2", "float32")):  # CTranslate2: no CPU float16
        runs = parts[name]["runs"]
        assert [(r["batch_sentences"], r["dtype"]) for r in runs] == [(8, dtype), (16, dtype)]
        assert all(r["sentences_out"] == r["sentences_in"] > 0 and r["sentences_per_s"] > 0 for r in runs)
