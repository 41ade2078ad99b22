"""The results table of docs/results.md: each model x test set, BLEU / chrF with signatures, next to
the WMT22 systems' own outputs scored the same way.

    python scripts/results_table.py --model tatoeba_cpu=runs/tatoeba_cpu/average.ckpt --alpha tatoeba_cpu=1.0 \
        --model transformer_small=runs/compare/transformer/checkpoints/best.ckpt [--reuse] [--write-docs]

Test sets (from ../shared/data), by default: Tatoeba test, WMT22 general (references A and B),
NTREX-128 (English-original news) and TED talks (WMT21 MQM); `--set NAME` (repeatable) picks
others of SETS below (captions, microblogs, FLORES, and valid splits for choices). Beam 5; a model's GNMT length-penalty alpha
is 0.6 unless --alpha NAME=VALUE says otherwise (take it from scripts/tune_decoding.py on the
valid split). For each model the table also states its training steps, training time and machine,
read from the run directory next to the checkpoint. Writes RUNS/<model>/<set>.hyp.en,
RUNS/results.json and, with --write-docs, the section of docs/results.md between the
`<!-- MARKER:begin -->` and `<!-- MARKER:end -->` lines (`--marker`, default results_table).
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("../shared/data")
SETS = {  # name: (source, references, note)
    "Tatoeba test": ("tatoeba-cmn/test.zh", ["tatoeba-cmn/test.en"], "2,000 short everyday sentences"),
    "WMT22 general": ("wmt22-generaltest2022-zhen/test.zh",
                      ["wmt22-generaltest2022-zhen/test.en", "wmt22-generaltest2022-zhen/test.en.refB"],
                      "1,875 segments, news/e-commerce/social/conversation, 2 references"),
    "NTREX-128": ("ntrex128-zhen/test.zh", ["ntrex128-zhen/test.en"], "1,997 news sentences; English is the original"),
    "TED (WMT21 MQM)": ("ted-wmt21-mqm-zhen/test.zh", ["ted-wmt21-mqm-zhen/test.en"], "529 TED talk segments"),
    "IWSLT17 TED test": ("iwslt17-ted-zhen/test.zh", ["iwslt17-ted-zhen/test.en"], "1,459 TED talk segments"),
    "captions test": ("mmt-3am-zhen/test.zh", ["mmt-3am-zhen/test.en"], "1,000 image captions"),
    "microblogs test": ("microtopia-zhen/test.zh", ["microtopia-zhen/test.en"], "1,250 microblog posts"),
    "FLORES devtest": ("flores200-devtest-zhen/test.zh", ["flores200-devtest-zhen/test.en"],
                       "1,012 Wikipedia-style sentences"),
    # valid splits: for choices (the test splits are scored once, with what valid chose)
    "Tatoeba valid": ("tatoeba-cmn/valid.zh", ["tatoeba-cmn/valid.en"], "2,000 pairs"),
    "captions valid": ("mmt-3am-zhen/valid.zh", ["mmt-3am-zhen/valid.en"], "1,000 pairs"),
    "microblogs valid": ("microtopia-zhen/valid.zh", ["microtopia-zhen/valid.en"], "1,250 pairs"),
}
DEFAULT_SETS = ["Tatoeba test", "WMT22 general", "NTREX-128", "TED (WMT21 MQM)"]
# the domain tag (data.train_tags, configs/all_domains_cpu.yaml's names) a --tagged model decodes a set with;
# sets of other domains, and sets whose tag the model lacks, are decoded untagged
SET_DOMAINS = {"Tatoeba test": "tatoeba", "Tatoeba valid": "tatoeba", "captions test": "captions",
               "captions valid": "captions", "microblogs test": "microblogs", "microblogs valid": "microblogs"}
WMT22_SYSTEMS = DATA / "wmt22-generaltest2022-zhen" / "system-outputs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=CKPT", help="a model to score (repeatable)")
    p.add_argument("--alpha", action="append", default=[], metavar="NAME=VALUE", help="GNMT length penalty of a model")
    p.add_argument("--tagged", action="append", default=[], metavar="NAME",
                   help="a model trained with domain tags: each set decoded with its domain's tag (SET_DOMAINS)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "results", help="hypotheses and results.json")
    p.add_argument("--reuse", action="store_true", help="keep hypotheses already written for a model and set")
    p.add_argument("--set", dest="sets", action="append", choices=list(SETS), metavar="NAME",
                   help=f"a test set (repeatable; default: {', '.join(DEFAULT_SETS)}); one of: {', '.join(SETS)}")
    p.add_argument("--write-docs", action="store_true", help="replace the --marker section of docs/results.md")
    p.add_argument("--marker", default="results_table", help="the section's marker name in docs/results.md")
    args = p.parse_args(argv)
    args.sets = args.sets or DEFAULT_SETS
    return args


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


def training_record(checkpoint: Path) -> dict:
    """Steps, training wall-clock time and machine of the run a checkpoint comes from."""
    import torch

    # RUN/checkpoints/x.ckpt, or RUN/averageN.ckpt written next to the run's checkpoints/ by the recipe
    run_dir = checkpoint.parent if (checkpoint.parent / "checkpoints").is_dir() else checkpoint.parent.parent
    record: dict = {"run_dir": str(run_dir)}
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        record["steps"] = ckpt.get("global_step")
        for key, state in ckpt.get("callbacks", {}).items():
            if key.startswith(("LastCheckpoint", "StopAndSave")) and "elapsed" in state:
                record["train_minutes"] = round(state["elapsed"] / 60, 1)
    env = run_dir / "environment.json"
    if env.is_file():
        first = json.loads(env.read_text(encoding="utf-8"))[0]
        record["machine"] = first.get("machine")
        record["git_commit"] = first.get("git_commit")
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = {name: SETS[name] for name in args.sets}
    missing = [name for name, (src, _, _) in chosen.items() if not (DATA / src).is_file()]
    if missing:
        sys.exit(f"results_table.py: needs ../shared/data (missing: {', '.join(missing)}); run from the repository root")
    from nmt.api import Translator
    from nmt.evaluation import corpus_scores
    from nmt.provenance import environment

    alphas = {k: float(v) for k, v in (a.split("=", 1) for a in args.alpha)}
    results: dict = {"command": shlex.join(["python", "scripts/results_table.py", *(argv or sys.argv[1:])]),
                     "environment": environment(), "test_sets": {}, "models": {}, "wmt22_systems": {}}
    sets = {name: (read_lines(DATA / src), [read_lines(DATA / r) for r in refs], note)
            for name, (src, refs, note) in chosen.items()}
    for name, (src, refs, note) in sets.items():
        results["test_sets"][name] = {"source": chosen[name][0], "references": chosen[name][1],
                                      "sentences": len(src), "note": note}
    for spec in args.model:
        name, _, path = spec.partition("=")
        checkpoint = Path(path)
        alpha = alphas.get(name, 0.6)
        model = {"checkpoint": str(checkpoint), "alpha": alpha, "training": training_record(checkpoint), "scores": {}}
        translator = None
        for set_name, (src, refs, _) in sets.items():
            out = args.runs / name / f"{slug(set_name)}.hyp.en"
            domain = SET_DOMAINS.get(set_name, "") if name in args.tagged else None
            if args.reuse and out.is_file():
                hyps, seconds = read_lines(out), None
            else:
                translator = translator or Translator.from_checkpoint(checkpoint)
                if domain is not None and domain not in translator.domains:
                    domain = ""  # untagged, like the untagged corpora of its training data
                print(f"[{name}] beam 5, alpha {alpha:g}{f', domain {domain}' if domain else ''}: {set_name} "
                      f"({len(src)} sentences)", flush=True)
                t0 = time.perf_counter()
                changes = {} if domain is None else {"domain": domain}
                hyps = [t.text for t in translator.translate(src, beam_size=5, length_penalty="gnmt", alpha=alpha,
                                                             **changes)]
                seconds = round(time.perf_counter() - t0, 1)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
            scores = corpus_scores(hyps, refs, tgt_lang="en")
            model["scores"][set_name] = {"bleu": scores["bleu"]["score"], "chrf": scores["chrf"]["score"],
                                         "length_ratio": scores["bleu"]["length_ratio"], "seconds": seconds,
                                         "bleu_signature": scores["bleu"]["signature"],
                                         "chrf_signature": scores["chrf"]["signature"], "hypotheses": str(out),
                                         "domain": domain}
        results["models"][name] = model
    for system in sorted(WMT22_SYSTEMS.glob("*.en")) if "WMT22 general" in sets else []:
        src, refs, _ = sets["WMT22 general"]
        scores = corpus_scores(read_lines(system), refs, tgt_lang="en")
        results["wmt22_systems"][system.stem] = {"bleu": scores["bleu"]["score"], "chrf": scores["chrf"]["score"]}
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = markdown(results)
    print(table)
    if args.write_docs:
        docs = ROOT / "docs" / "results.md"
        text = docs.read_text(encoding="utf-8")
        begin, end = f"<!-- {args.marker}:begin -->", f"<!-- {args.marker}:end -->"
        section = f"{begin}\n{table}{end}"
        if begin in text:
            head, rest = text.split(begin, 1)
            text = head + section + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        docs.write_text(text, encoding="utf-8")
    return 0


def slug(set_name: str) -> str:
    """'TED (WMT21 MQM)' -> 'ted-wmt21-mqm': a file name for a set's hypotheses."""
    return "-".join("".join(c if c.isalnum() else " " for c in set_name.lower()).split())


def short_commit(commit: str | None) -> str:
    """e93d06b4713283270e0cdc8d1770724caccd0b08+dirty -> e93d06b+dirty (uncommitted changes)."""
    if not commit:
        return "?"
    return commit.split("+")[0][:7] + ("+dirty" if commit.endswith("+dirty") else "")


def markdown(results: dict) -> str:
    names = list(results["test_sets"])
    lines = ["| model | training | " + " | ".join(f"{n} BLEU / chrF" for n in names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for name, m in results["models"].items():
        t = m["training"]
        training = ", ".join(x for x in (f"{t['steps']:,} steps" if t.get("steps") else "",
                                         f"{t['train_minutes']} min" if t.get("train_minutes") else "") if x)
        cells = [f"{m['scores'][n]['bleu']:.2f} / {m['scores'][n]['chrf']:.2f}" for n in names]
        lines.append(f"| {name} (alpha {m['alpha']:g}) | {training} | " + " | ".join(cells) + " |")
    systems = results["wmt22_systems"]
    if systems and "WMT22 general" in names:
        wmt = names.index("WMT22 general")
        for system, s in sorted(systems.items(), key=lambda kv: -kv[1]["bleu"]):
            cells = ["" for _ in names]
            cells[wmt] = f"{s['bleu']:.2f} / {s['chrf']:.2f}"
            lines.append(f"| WMT22 system: {system} | (submitted output) | " + " | ".join(cells) + " |")
    first = next(iter(results["models"].values()))
    sig = {n: (first["scores"][n]["bleu_signature"], first["scores"][n]["chrf_signature"]) for n in names}
    lines += ["", "Signatures (BLEU; chrF):"]
    lines += [f"- {n}: `{b}`; `{c}`" for n, (b, c) in sig.items()]
    lines += ["", "Test sets: " + "; ".join(f"{n}: {t['note']}" for n, t in results["test_sets"].items()) + "."]
    lines += ["", "Training (from each run directory's environment.json and last.ckpt):"]
    for name, m in results["models"].items():
        t = m["training"]
        machine = t.get("machine") or {}
        where = (f"{machine.get('description')}, {machine.get('torch_threads')} torch threads"
                 + (f", CUDA {machine['cuda']}" if machine.get("cuda") else ", no GPU")) if machine else "an unrecorded machine"
        tags = {n: s["domain"] for n, s in m["scores"].items() if s.get("domain") is not None}
        tagged = ("; decoded with the domain tags " + ", ".join(f"{n}: {d or 'none'}" for n, d in tags.items())) if tags else ""
        lines.append(f"- {name}: `{m['checkpoint']}`, trained at commit {short_commit(t.get('git_commit'))} on {where}"
                     f"{tagged}.")
    lines += ["", f"Produced by `{results['command']}` (beam 5; scoring with sacrebleu as in the signatures)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
