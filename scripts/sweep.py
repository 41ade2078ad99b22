"""A small hyper-parameter sweep at a fixed training budget: every variant trains for the same
wall-clock time, then its last checkpoint translates the valid split and the variants are ranked.

    python scripts/sweep.py configs/tatoeba_cpu.yaml --budget 00:00:06:00 \
        --vary optim.peak_lr=0.0005,0.002 --vary model.dropout=0.1,0.3 --out runs/sweep

--vary KEY=V1,V2 lists values of one config key. By default the sweep changes one key at a time
from the config (the baseline plus one run per listed value: what each lever is worth alone);
--grid runs every combination instead. --variant "KEY=V;KEY2=V2" adds one variant that changes
several keys together (e.g. a 6+1 layer model), or a key whose value holds commas (a YAML list). Each variant is `nmt-train CONFIG --set ...` in its own
process with `trainer.max_time=BUDGET`, so the variants see the same data, seed and wall clock.
Scores come from the valid split only: tuning on test would make its score meaningless.

Output: OUT/<variant>/ (the runs), OUT/results.json and OUT/results.md (sorted by valid BLEU).
--reuse skips variants whose run finished earlier. On a shared machine, run nothing else meanwhile:
the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the experiment file every variant starts from")
    p.add_argument("--vary", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                   help="values to try for one key (repeatable); YAML values, e.g. model.norm_first=true")
    p.add_argument("--grid", action="store_true", help="every combination of the --vary values (default: one key at a time)")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=V;KEY2=V2",
                   help="one more variant: several changes together, separated by ';' (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a change applied to every variant, the baseline included")
    p.add_argument("--budget", default="00:00:06:00", help="training wall-clock time per variant, DD:HH:MM:SS")
    p.add_argument("--beam-size", type=int, default=5, help="beam size for scoring the valid split")
    p.add_argument("--average", type=int, default=0, metavar="N",
                   help="score the average of the last N step checkpoints (needs trainer.save_every_n_steps)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep", help="directory for the runs and the table")
    p.add_argument("--reuse", action="store_true", help="keep the results of variants already trained in --out")
    return p.parse_args(argv)


def parse_vary(items: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values:
            sys.exit(f"sweep.py: error: --vary expects SECTION.KEY=V1,V2, got '{item}'")
        out.append((key.strip(), [v.strip() for v in values.split(",")]))
    return out


def parse_variants(items: list[str]) -> list[list[str]]:
    """--variant "KEY=V;KEY2=V2" -> ["KEY=V", "KEY2=V2"]: one variant changing several keys."""
    out = []
    for item in items:
        overrides = [o.strip() for o in item.split(";") if o.strip()]
        bad = [o for o in overrides if "=" not in o or "." not in o.partition("=")[0]]
        if not overrides or bad:
            sys.exit(f"sweep.py: error: --variant expects SECTION.KEY=VALUE;SECTION.KEY=VALUE, got '{item}'")
        out.append(overrides)
    return out


def variants(vary: list[tuple[str, list[str]]], grid: bool) -> list[list[str]]:
    """Lists of `key=value` overrides; the first is the baseline (no change) unless --grid."""
    if grid:
        keys = [k for k, _ in vary]
        return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(vs for _, vs in vary))]
    return [[]] + [[f"{key}={value}"] for key, values in vary for value in values]


def slug(overrides: list[str]) -> str:
    if not overrides:
        return "baseline"
    text = re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(o.split(".", 1)[1] for o in overrides))
    if len(text) > 100:  # long values (lists of paths): a prefix and a digest keep names distinct
        text = text[:90] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return text


def run_variant(args: argparse.Namespace, overrides: list[str], run_dir: Path) -> dict:
    sets = [*args.overrides, f"trainer.max_time={args.budget}", "trainer.max_steps=-1",
            "trainer.early_stopping_patience=0", *overrides]
    command = [sys.executable, "-m", "nmt.cli.train", args.config, "--output-dir", str(run_dir), "--no-test"]
    command += [a for s in sets for a in ("--set", s)]
    log = run_dir.parent / f"{run_dir.name}.log"  # (not with_suffix: a name like alpha=0.1 has a dot)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with log.open("w", encoding="utf-8") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=Path.cwd()).returncode
    text = log.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
        return {"overrides": overrides, "error": last[0], "log": str(log)}
    done = re.search(r"done in [\d.]+ min, (\d+) optimizer steps, ([\d,]+) target tokens/s", text)
    return {"overrides": overrides, "run_dir": str(run_dir), "train_wall_s": round(time.time() - start, 1),
            "steps": int(done.group(1)) if done else None,
            "tokens_per_s": int(done.group(2).replace(",", "")) if done else None}


def score(args: argparse.Namespace, result: dict) -> dict:
    """Translate the valid split with the run's last (or averaged) checkpoint; BLEU and chrF."""
    import torch

    from nmt.api import Translator
    from nmt.checkpoint import average_checkpoints, last_checkpoints, write_checkpoint
    from nmt.config import load_config
    from nmt.data import load_raw
    from nmt.evaluation import corpus_scores

    torch.manual_seed(0)
    run_dir = Path(result["run_dir"])
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if args.average:
        checkpoint = run_dir / "checkpoints" / f"average{args.average}.ckpt"
        write_checkpoint(average_checkpoints(last_checkpoints(run_dir / "checkpoints", args.average)), checkpoint)
    cfg = load_config(run_dir / "config.yaml")
    raw = load_raw(cfg.data, "valid")
    src, ref = [s.strip() for s in raw["src"]], [t.strip() for t in raw["tgt"]]
    translator = Translator.from_checkpoint(checkpoint)
    t0 = time.perf_counter()
    hyp = [t.text for t in translator.translate(src, beam_size=args.beam_size)]
    scores = corpus_scores(hyp, [ref], tgt_lang=cfg.data.tgt_lang)
    return {**result, "checkpoint": str(checkpoint), "valid_sentences": len(src),
            "decode_s": round(time.perf_counter() - t0, 1),
            "valid_bleu": round(scores["bleu"]["score"], 2), "valid_chrf": round(scores["chrf"]["score"], 2),
            "bleu_signature": scores["bleu"]["signature"]}


def write_table(args: argparse.Namespace, results: list[dict]) -> str:
    ok = sorted((r for r in results if "valid_bleu" in r), key=lambda r: -r["valid_bleu"])
    base = next((r for r in results if not r["overrides"] and "valid_bleu" in r), None)
    scoring = f"beam {args.beam_size}" + (f", average of the last {args.average} checkpoints" if args.average else "")
    lines = [f"Sweep of `{args.config}`: {args.budget} of training per variant, valid split scored with "
             f"{scoring}.", "",
             "| rank | change | valid BLEU | Δ baseline | chrF | steps | target tok/s |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for rank, r in enumerate(ok, start=1):
        delta = f"{r['valid_bleu'] - base['valid_bleu']:+.2f}" if base else ""
        change = ", ".join(f"`{o}`" for o in r["overrides"]) or "(baseline)"
        lines.append(f"| {rank} | {change} | {r['valid_bleu']:.2f} | {delta} | {r['valid_chrf']:.2f} | "
                     f"{r['steps'] or ''} | {r['tokens_per_s'] or ''} |")
    for r in results:
        if "error" in r:
            lines.append(f"| - | {', '.join(r['overrides'])} | failed: {r['error']} | | | | |")
    if ok:
        lines += ["", f"BLEU signature: `{ok[0]['bleu_signature']}`"]
    table = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(table, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps({"config": args.config, "budget": args.budget,
                                                        "set": args.overrides, "results": results}, indent=2) + "\n",
                                           encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))  # fail early on a missing/bad file
    todo = variants(parse_vary(args.vary), args.grid) + parse_variants(args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = {}
    if args.reuse and (args.out / "results.json").is_file():
        previous = {slug(r["overrides"]): r for r in json.loads((args.out / "results.json").read_text())["results"]
                    if "valid_bleu" in r}
    results = []
    for i, overrides in enumerate(todo, start=1):
        name = slug(overrides)
        if name in previous:
            results.append(previous[name])
            continue
        print(f"[{i}/{len(todo)}] {name}: training for {args.budget}", flush=True)
        run_dir = args.out / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        result = run_variant(args, overrides, run_dir)
        if "error" not in result:
            result = score(args, result)
            print(f"    valid BLEU {result['valid_bleu']:.2f}, chrF {result['valid_chrf']:.2f}, "
                  f"{result['steps']} steps", flush=True)
        else:
            print(f"    failed: {result['error']} (log: {result['log']})", flush=True)
        results.append(result)
        write_table(args, results)
    print(write_table(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
