import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def needs_shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data directory beside the project) which is absent")
    return path


@pytest.fixture
def parallel_files(tmp_path):
    """A tiny line-aligned zh/en corpus: train, valid, test prefixes under tmp_path."""
    zh = ["你好。", "我爱你。", "谢谢你。", "他是老师。", "今天很冷。", "我们走吧。", "这是我的书。", "她喜欢猫。"]
    en = ["Hello.", "I love you.", "Thank you.", "He is a teacher.", "It is cold today.", "Let's go.",
          "This is my book.", "She likes cats."]
    for split, n in (("train", 8), ("valid", 4), ("test", 4)):
        (tmp_path / f"{split}.zh").write_text("".join(z + "\n" for z in zh[:n] * 5), encoding="utf-8")
        (tmp_path / f"{split}.en").write_text("".join(e + "\n" for e in en[:n] * 5), encoding="utf-8")
    return tmp_path


@pytest.fixture(scope="session")
def toy_ckpt(tmp_path_factory) -> Path:
    """A toy-task checkpoint (xx->yy, 30 steps) trained in this process, shared by the tests that
    only need some working model."""
    from nmt.config import load_config
    from nmt.training.run import train

    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml",
                      ["trainer.max_steps=30", "trainer.val_check_interval=30", "trainer.val_bleu_sentences=20",
                       "trainer.log_every_n_steps=1", "data.limit_train=2000"])
    return train(cfg, tmp_path_factory.mktemp("toy") / "run", test=False).run_dir / "checkpoints" / "last.ckpt"
