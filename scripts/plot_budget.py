"""Test BLEU against training minutes (issue 21): reads the run directories of scripts/budget_curve.sh
(each a scripts/recipe_tatoeba.sh run with its own trainer.max_time) and writes OUT/budget.json,
OUT/budget.md and OUT/budget.png.

    python scripts/plot_budget.py runs/budget/10min runs/budget/30min ... --out runs/budget
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml


def run_row(run: Path) -> dict:
    """Budget, steps, tokens/s, the valid-split choice and the test scores of one recipe run."""
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    d, h, m, s = (int(x) for x in cfg["trainer"]["max_time"].split(":"))
    log = (run / "train.log").read_text(encoding="utf-8", errors="replace") if (run / "train.log").is_file() else ""
    done = re.findall(r"done in ([\d.]+) min, (\d+) optimizer steps, ([\d,]+) target tokens/s", log)
    choice = (run / "tuning" / "choice.log").read_text(encoding="utf-8").strip().splitlines()[-1].split()
    test = json.loads((run / "test" / "report.json").read_text(encoding="utf-8"))["scores"]
    return {"run": str(run), "minutes": d * 1440 + h * 60 + m + s / 60,
            "steps": int(done[-1][1]) if done else None,
            "tokens_per_s": int(done[-1][2].replace(",", "")) if done else None,
            "checkpoint": Path(choice[0]).name, "alpha": float(choice[1]),
            "bleu": test["bleu"]["score"], "chrf": test["chrf"]["score"],
            "bleu_signature": test["bleu"]["signature"], "chrf_signature": test["chrf"]["signature"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = sorted((run_row(r) for r in args.runs), key=lambda r: r["minutes"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "budget.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    lines = ["| training minutes | optimizer steps | target tokens/s | chosen on valid | Tatoeba test BLEU | chrF2 |",
             "|---:|---:|---:|---|---:|---:|"]
    lines += [f"| {r['minutes']:g} | {r['steps'] or ''} | {r['tokens_per_s'] or ''} | {r['checkpoint']}, GNMT alpha "
              f"{r['alpha']:g} | {r['bleu']:.2f} | {r['chrf']:.2f} |" for r in rows]
    lines += ["", f"BLEU `{rows[0]['bleu_signature']}`, chrF2 `{rows[0]['chrf_signature']}`"]
    (args.out / "budget.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["minutes"] for r in rows], [r["bleu"] for r in rows], "o-", label="BLEU")
    ax.plot([r["minutes"] for r in rows], [r["chrf"] for r in rows], "s--", label="chrF2")
    for r in rows:
        ax.annotate(f"{r['steps']} steps" if r["steps"] else "", (r["minutes"], r["bleu"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks([r["minutes"] for r in rows], [f"{r['minutes']:g}" for r in rows])
    ax.set_xlabel("training minutes (2 CPU cores, log scale)")
    ax.set_ylabel("Tatoeba test score")
    ax.set_title("The Tatoeba recipe at longer budgets")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "budget.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
