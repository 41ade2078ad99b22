"""Transformer against the RNN baseline: the same data, the same wall-clock budget, the same evaluation.

    python scripts/compare_models.py                       # 30 minutes each, then evaluate, write docs
    python scripts/compare_models.py --budget 00:00:05:00  # a quicker look
    python scripts/compare_models.py --reuse               # evaluate/write again from finished runs

For each model (default: configs/transformer_small.yaml and configs/rnn_attention.yaml, both on
the Tatoeba zh-en train split) this trains with `trainer.max_time` = the budget (validation time
included; no step limit, no early stopping, validation every --val-every batches), then takes the
best checkpoint by validation BLEU and translates, with beam 5, the Tatoeba test split and the
WMT22 general test set (two references). It writes:
  RUNS/<name>/...             the training runs (checkpoints, logs/metrics.csv, translations)
  RUNS/results.json           every number below
  docs/results.md             the section between the compare_models markers (the rest is kept)
  docs/img/learning_curve.png validation BLEU against wall-clock time, both models
  docs/img/attention_<name>.png  one heatmap per model, on the same test sentence
Run from the repository root, with ../shared/data beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from nmt.provenance import describe_machine

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- compare_models:begin -->", "<!-- compare_models:end -->"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["transformer=configs/transformer_small.yaml",
                                                    "rnn=configs/rnn_attention.yaml"], metavar="NAME=CONFIG",
                   help="the first is the baseline of the significance tests")
    p.add_argument("--budget", default="00:00:30:00", help="wall-clock training budget per model, DD:HH:MM:SS")
    p.add_argument("--val-every", type=int, default=150, help="validate every N training batches (learning curve points)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/compare"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--wmt22", type=Path, default=Path("../shared/data/wmt22-generaltest2022-zhen"))
    p.add_argument("--heatmap-line", type=int, default=45, help="Tatoeba test line (1-based) for the heatmaps")
    p.add_argument("--test-limit", type=int, default=0, help="translate only the first N sentences of each test set (0: all)")
    p.add_argument("--reuse", action="store_true", help="skip training where RUNS/<name>/train.json exists")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every model")
    return p.parse_args()


def git_commit() -> str:
    """Short HEAD of this checkout, "+dirty" with uncommitted code changes."""
    from nmt.provenance import git_commit as full

    commit = full()
    return "unknown" if commit is None else commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")


def train_one(name: str, config: str, args: argparse.Namespace) -> dict:
    from nmt.config import load_config
    from nmt.models import count_parameters, describe_model
    from nmt.checkpoint import load_model
    from nmt.training.run import train

    run_dir = args.runs_dir / name
    record = run_dir / "train.json"
    if args.reuse and record.is_file():
        print(f"[{name}] reusing {run_dir}", flush=True)
        return json.loads(record.read_text(encoding="utf-8"))
    overrides = [f"trainer.max_time={args.budget}", "trainer.max_steps=-1", "trainer.early_stopping_patience=0",
                 f"trainer.val_check_interval={args.val_every}", *args.overrides]
    cfg = load_config(config, overrides)
    commit = git_commit()
    print(f"[{name}] training {config} for {args.budget} into {run_dir}", flush=True)
    result = train(cfg, run_dir, test=False)
    loaded = load_model(result.best_checkpoint)
    info = {"name": name, "config": config, "overrides": overrides, "run_dir": str(run_dir),
            "trained_by": "python scripts/compare_models.py " + " ".join(sys.argv[1:]), "trained_at_commit": commit,
            "best_checkpoint": str(result.best_checkpoint), "best_valid_bleu": result.best_bleu,
            "parameters": count_parameters(loaded.model), "model": describe_model(loaded.cfg.model),
            "train_tokens_per_s": round(result.train_tokens_per_s, 1), "wall_s": round(result.wall_s, 1),
            "steps": _last_step(run_dir), "curve": learning_curve(run_dir)}
    record.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def _last_step(run_dir: Path) -> int:
    import torch

    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])


def learning_curve(run_dir: Path) -> list[dict]:
    """(step, wall-clock minutes, validation BLEU) at every validation, from logs/metrics.csv."""
    with open(run_dir / "logs" / "metrics.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_bleu") and r.get("wall_s")]
    return [{"step": int(r["step"]), "minutes": round(float(r["wall_s"]) / 60, 2), "val_bleu": float(r["val_bleu"])}
            for r in rows]


def read_lines(path: Path) -> list[str]:
    return [line.rstrip("\n").strip() for line in path.read_text(encoding="utf-8").splitlines()]


def evaluate(models: list[dict], test_sets: dict[str, dict], runs_dir: Path) -> dict:
    """Beam 5 on every test set with each model's best checkpoint; scores, speed, significance."""
    from nmt.api import Translator
    from nmt.evaluation import compare_systems, corpus_scores

    results: dict = {}
    for i, (set_name, ts) in enumerate(test_sets.items()):
        systems = []
        results[set_name] = {"source": str(ts["src"]), "references": [str(r) for r in ts["refs"]],
                             "sentences": len(ts["sources"]), "models": {}}
        # Each test set starts with the next model (no model always decodes first, on a cold
        # machine), and each model is warmed up (allocator, thread pools) before it is timed.
        for m in models[i % len(models):] + models[: i % len(models)]:
            translator = Translator.from_checkpoint(m["best_checkpoint"])
            options = translator.options(beam_size=5)
            print(f"[{m['name']}] {options.describe()} on {set_name} ({len(ts['sources'])} sentences)", flush=True)
            translator.translate(ts["sources"][:32], options)  # warm-up, not timed
            start = time.perf_counter()
            hyps = [x.text for x in translator.translate(ts["sources"], options)]
            seconds = time.perf_counter() - start
            out = runs_dir / m["name"] / f"{set_name}.hyp.en"
            out.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
            tokens = sum(len(ids) + 1 for ids in translator.tokenizer.encode_tgt(hyps))
            results[set_name]["models"][m["name"]] = {
                "hypotheses": str(out), "scores": corpus_scores(hyps, ts["references"], tgt_lang="en"),
                "seconds": round(seconds, 1), "sentences_per_s": round(len(hyps) / seconds, 1),
                "tokens_per_s": round(tokens / seconds, 1)}
            systems.append((m["name"], hyps))
        systems.sort(key=lambda x: [m["name"] for m in models].index(x[0]))  # the comparison in the given order
        results[set_name]["comparison"] = compare_systems(systems, ts["references"], tgt_lang="en")
    return results


def plot_learning_curves(models: list[dict], path: Path, budget_min: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for m in models:
        c = m["curve"]
        ax.plot([p["minutes"] for p in c], [p["val_bleu"] for p in c], marker="o", markersize=3,
                label=f"{m['name']} ({m['parameters'] / 1e6:.1f}M parameters)")
    ax.set_xlabel("wall-clock minutes of training (validation included)")
    ax.set_ylabel("validation BLEU (greedy, 500 sentences)")
    ax.set_xlim(0, budget_min * 1.02)
    ax.set_title("Tatoeba zh→en, 2 CPU cores", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmaps(models: list[dict], sentence: str, img_dir: Path) -> dict[str, str]:
    from nmt.api import Translator
    from nmt.plots import save_attention_heatmap

    paths = {}
    for m in models:
        translator = Translator.from_checkpoint(m["best_checkpoint"])
        tok = translator.tokenizer
        (t,) = translator.translate([sentence], beam_size=5, attention=True)
        path = img_dir / f"attention_{m['name']}.png"
        save_attention_heatmap(path, t.attention, tok.src_pieces(t.source_ids) + ["</s>"],
                               tok.tgt_pieces(t.target_ids) + ["</s>"], title=f"{m['name']}: {t.text}")
        paths[m["name"]] = str(path)
    return paths


def write_markdown(results: dict, docs: Path) -> None:
    from nmt.evaluation import comparison_table

    models, ev = results["models"], results["evaluation"]
    names = [m["name"] for m in models]
    lines = [MARK_BEGIN, "", "## Transformer against the RNN baseline (same data, same wall-clock budget)", "",
             "Trained by `" + models[0].get("trained_by", "?").strip() + "` (commit " + models[0].get("trained_at_commit", "?")
             + "); evaluated and written by `" + results["command"].strip() + "` (commit " + results["commit"] + ", "
             + results["date"] + ").",
             f"Machine: {results['machine']}. Each model trained for **{results['budget']}** of wall-clock time "
             "(validation included) on the Tatoeba zh-en train split with its shipped config; then the checkpoint "
             "with the best validation BLEU translated each test set with beam 5 (GNMT length penalty 0.6).", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = [("config", lambda m: f"`{m['config']}`"), ("model", lambda m: m["model"]),
            ("parameters", lambda m: f"{m['parameters']:,}"), ("optimizer steps", lambda m: f"{m['steps']:,}"),
            ("training target tokens/s", lambda m: f"{m['train_tokens_per_s']:,.0f}"),
            ("best validation BLEU (greedy, 500 sent.)", lambda m: f"{m['best_valid_bleu']:.2f}"),
            ("best checkpoint", lambda m: f"`{Path(m['best_checkpoint']).name}`")]
    lines += [f"| {label} | " + " | ".join(fn(m) for m in models) + " |" for label, fn in rows]
    for set_name, r in ev.items():
        lines += ["", f"### {set_name}: {r['sentences']:,} sentences, {len(r['references'])} reference(s)", "",
                  f"Source `{r['source']}`; references " + ", ".join(f"`{x}`" for x in r["references"]) + ".", "",
                  "| model | BLEU | chrF2 | length ratio | decoding sentences/s | target tokens/s |", "|---|---|---|---|---|---|"]
        for name in names:
            s = r["models"][name]
            lines.append(f"| {name} | {s['scores']['bleu']['score']:.2f} | {s['scores']['chrf']['score']:.2f} | "
                         f"{s['scores']['bleu']['length_ratio']} | {s['sentences_per_s']} | {s['tokens_per_s']:,.0f} |")
        lines += ["", "Paired bootstrap resampling (sacrebleu, 1,000 samples), baseline " + names[0] + ":", "",
                  comparison_table(r["comparison"])]
    lines += ["", "### Learning curves", "", "![validation BLEU against wall-clock minutes](img/learning_curve.png)", "",
              "| model | validation BLEU @ step (minute) |", "|---|---|"]
    for m in models:
        lines.append(f"| {m['name']} | " + ", ".join(f"{p['val_bleu']:.1f} @ {p['step']} ({p['minutes']:.0f}′)"
                                                     for p in m["curve"]) + " |")
    lines += ["", f"### Attention on the same sentence (Tatoeba test line {results['heatmap_line']})", "",
              f"Source: {results['heatmap_sentence']}", ""]
    for name, path in results["heatmaps"].items():
        lines.append(f"![{name} cross-attention](img/{Path(path).name})")
    lines += ["", "The Transformer's map is its last decoder layer's cross-attention averaged over heads; the RNN's "
              "is its single attention. Chinese labels show as boxes where no CJK font is installed.", "", MARK_END]
    path = docs / "results.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Results\n"
    block = "\n".join(lines)
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> int:
    args = parse_args()
    if not (Path("../shared/data/tatoeba-cmn").is_dir() and args.wmt22.is_dir()):
        print(f"compare_models: needs ../shared/data/tatoeba-cmn and {args.wmt22} (run from the repository root)",
              file=sys.stderr)
        return 2
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    models = [train_one(*spec.split("=", 1), args) for spec in args.models]
    tat, wmt = Path("../shared/data/tatoeba-cmn"), args.wmt22
    test_sets = {
        "Tatoeba test": {"src": tat / "test.zh", "refs": [tat / "test.en"]},
        "WMT22 general test": {"src": wmt / "test.zh", "refs": [wmt / "test.en", wmt / "test.en.refB"]},
    }
    for ts in test_sets.values():
        limit = args.test_limit or None
        ts["sources"] = read_lines(ts["src"])[:limit]
        ts["references"] = [read_lines(r)[:limit] for r in ts["refs"]]
    evaluation = evaluate(models, test_sets, args.runs_dir)
    sentence = test_sets["Tatoeba test"]["sources"][args.heatmap_line - 1]
    img = args.docs / "img"
    days, hours, minutes, seconds = (int(x) for x in args.budget.split(":"))
    budget_min = (days * 24 + hours) * 60 + minutes + seconds / 60
    plot_learning_curves(models, img / "learning_curve.png", budget_min)
    results = {"command": "python scripts/compare_models.py " + " ".join(sys.argv[1:]), "commit": git_commit(),
               "date": time.strftime("%Y-%m-%d"), "machine": describe_machine(), "budget": f"{budget_min:g} minutes",
               "models": models, "evaluation": evaluation, "heatmap_line": args.heatmap_line,
               "heatmap_sentence": sentence, "heatmaps": heatmaps(models, sentence, img)}
    (args.runs_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    write_markdown(results, args.docs)
    print(f"wrote {args.runs_dir / 'results.json'} and {args.docs / 'results.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
