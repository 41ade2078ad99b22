"""Cross-attention heatmaps (PNG): source pieces x target pieces. Needs matplotlib (`pip install
'nmt[plot]'`). Chinese labels need a CJK font on the system (Noto Sans CJK, WenQuanYi, SimHei...);
without one matplotlib draws empty boxes for them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "DejaVu Sans"]


def save_attention_heatmap(path: Path, attention: Any, src_pieces: list[str], tgt_pieces: list[str],
                           title: str = "") -> None:
    """attention (T, S), a tensor or array: row i = how target piece i attended over the source
    pieces (sums to 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, s = attention.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * s + 2), max(3.0, 0.35 * t + 1.5)))
    data = attention.float().numpy() if hasattr(attention, "numpy") else np.asarray(attention, dtype=np.float32)
    image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs when no CJK font is installed
        plt.rcParams["font.sans-serif"] = CJK_FONTS
        ax.set_xticks(range(s), src_pieces, rotation=90, fontsize=8)
        ax.set_yticks(range(t), tgt_pieces, fontsize=8)
        ax.set_xlabel("source")
        ax.set_ylabel("target")
        if title:
            ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    plt.close(fig)
