"""Decoding benchmark (issue 20): the torch engine against CTranslate2 on one trained model, with
and without the vocabulary shortlist, in one run. Not a test: nothing here asserts a time.

    python scripts/bench_decode.py CKPT [--out runs/bench_decode] [--k 50] [--frequent 100]

CKPT: a Transformer checkpoint of the Tatoeba recipe (runs/tatoeba_cpu/average2.ckpt after
`bash scripts/recipe_tatoeba.sh`). The script builds its shortlist (nmt-shortlist), exports it to
CTranslate2 (vmap.txt included), then decodes with beam 5, length penalty |Y|^1, 32 sentences per
batch, after a warm-up batch, each measurement in its own process (bench.py's `decode` child):

- the Tatoeba test split (2,000 sentences) and WMT22 zh-en (1,875 news sentences): torch fp32 with
  the preallocated cache (linear layers through oneDNN, the default), with MKL's (torch's own
  nn.Linear), with the growing (torch.cat) cache, with a torch.compile'd decoder step (MKL's linear
  layers: dynamo cannot trace the packed oneDNN operator; and with inductor's `freezing`, which
  prepacks them for oneDNN itself; compiling is in its warm-up, `warm_up_seconds` in the JSON), in bfloat16 (`--dtype bfloat16`), with the shortlist, with 2 worker
  processes of 1 thread each (--workers 2) without and with the shortlist, torch int8; CTranslate2 fp32 and int8, each without and with the shortlist (use_vmap).
  Decoding seconds, target tokens/s, BLEU, and the share of outputs identical to the same engine
  and precision without the shortlist (torch fp32 for the torch rows);
- the whole `nmt-translate` process (start-up included, its default batching) on the Tatoeba test;
- decoding seconds per sentence against source length (10-token buckets up to 250 tokens, up to
  32 sentences each: the sources of both test sets first, then runs of 2-12 consecutive WMT22
  sentences joined into one line, which fill the long buckets the test sets leave nearly empty),
  torch fp32 and CTranslate2 fp32: OUT/cost_by_length.png.

Writes OUT/results.json and OUT/results.md; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import BATCH, BEAM, ROOT, SHARED, bleu, child, command_rss, plot_cost_by_length, say  # scripts/ is on sys.path

from nmt.provenance import describe_machine

TESTS = {"tatoeba": SHARED / "tatoeba-cmn" / "test", "wmt22": SHARED / "wmt22-generaltest2022-zhen" / "test"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_decode")
    p.add_argument("--k", type=int, default=50, help="nmt-shortlist --k")
    p.add_argument("--frequent", type=int, default=100, help="nmt-shortlist --frequent")
    p.add_argument("--quick", action="store_true",
                   help="only torch fp32 (2 threads, growing cache, 2 workers, 1 thread) and CTranslate2 fp32 (its "
                        "default 2 workers, 1 thread) and int8, on both test sets")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name, prefix in TESTS.items():
        if not Path(str(prefix) + ".zh").is_file():
            raise SystemExit(f"bench_decode: needs {prefix}.zh (../shared/data beside the project)")
    report: dict = {"machine": describe_machine(), "command": " ".join(["python", "scripts/bench_decode.py", *sys.argv[1:]]),
                    "checkpoint": str(args.checkpoint), "search": f"beam {BEAM}, length penalty |Y|^1, {BATCH} sentences per batch"}
    report["environment"] = child(out, "environment")

    ckpt = out / "model.ckpt"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nmt.cli.shortlist", str(args.checkpoint), "-o", str(ckpt),
                    "--k", str(args.k), "--frequent", str(args.frequent)], check=True, cwd=ROOT)
    report["shortlist"] = {"k": args.k, "frequent": args.frequent, "build_seconds": round(time.perf_counter() - start, 1)}
    subprocess.run([sys.executable, "-m", "nmt.cli.export", str(ckpt), str(out / "ct2")], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    ct2 = str(out / "ct2")
    short = {"options": {"shortlist": True}}
    modes = {  # name: (spec, the row its outputs are compared with)
        "torch fp32": (dict(engine="torch", model=str(ckpt)), "torch fp32"),
        "torch fp32, MKL linear (no oneDNN)": (dict(engine="torch", model=str(ckpt), onednn=False), "torch fp32"),
        "torch fp32, growing cache": (dict(engine="torch", model=str(ckpt), growing_cache=True), "torch fp32"),
        "torch fp32, compiled step": (dict(engine="torch", model=str(ckpt), compiled=True, onednn=False), "torch fp32"),
        "torch fp32, compiled step, frozen weights": (dict(engine="torch", model=str(ckpt), compiled=True, onednn=False,
                                                           freezing=True), "torch fp32"),
        "torch bf16 (--dtype bfloat16)": (dict(engine="torch", model=str(ckpt), dtype="bfloat16"), "torch fp32"),
        "torch fp32, shortlist": (dict(engine="torch", model=str(ckpt), **short), "torch fp32"),
        "torch fp32, 2 workers x 1 thread": (dict(engine="torch", model=str(ckpt), workers=2), "torch fp32"),
        "torch fp32, shortlist, 2 workers": (dict(engine="torch", model=str(ckpt), workers=2, **short), "torch fp32"),
        "torch fp32, 1 thread": (dict(engine="torch", model=str(ckpt), threads=1), "torch fp32"),
        "torch int8": (dict(engine="torch", model=str(ckpt), int8=True), "torch fp32"),
        "ctranslate2 fp32": (dict(engine="ctranslate2", model=ct2), "ctranslate2 fp32"),
        "ctranslate2 fp32, 1 thread": (dict(engine="ctranslate2", model=ct2, workers=1), "ctranslate2 fp32"),
        "ctranslate2 fp32, shortlist": (dict(engine="ctranslate2", model=ct2, **short), "ctranslate2 fp32"),
        "ctranslate2 int8": (dict(engine="ctranslate2", model=ct2, int8=True), "ctranslate2 int8"),
        "ctranslate2 int8, shortlist": (dict(engine="ctranslate2", model=ct2, int8=True, **short), "ctranslate2 int8"),
    }
    if args.quick:
        modes = {name: modes[name] for name in ("torch fp32", "torch fp32, growing cache", "torch fp32, 2 workers x 1 thread",
                                                "torch fp32, 1 thread", "ctranslate2 fp32", "ctranslate2 fp32, 1 thread",
                                                "ctranslate2 int8")}
    # the compiled steps run 2-3x slower than eager on Tatoeba (docs/performance.md): not repeated on WMT22
    tatoeba_only = {"torch fp32, compiled step", "torch fp32, compiled step, frozen weights"}
    report["decoding"] = {}
    for test, prefix in TESTS.items():
        say(f"decoding {prefix}.zh ({report['search']})")
        files = dict(src_file=str(prefix) + ".zh", ref_file=str(prefix) + ".en")
        rows, hyps = {}, {}
        modes_here = {name: m for name, m in modes.items() if test == "tatoeba" or name not in tatoeba_only}
        for name, (spec, _) in modes_here.items():
            rows[name] = child(out, "decode", **spec, **files)
            hyps[name] = rows[name].pop("hypotheses")
        for name, (_, against) in modes_here.items():
            r = rows[name]
            r["identical_to"] = against
            r["identical"] = sum(a == b for a, b in zip(hyps[name], hyps[against])) / len(hyps[against])
            say(f"  {name:36s} {r['seconds']:7.2f} s  {r['target_tokens_per_s']:8.1f} tok/s  "
                f"identical to {against} {100 * r['identical']:5.1f}%  BLEU {r['bleu']}")
        report["decoding"][test] = rows

    if args.quick:
        (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT) + "/", "") + "\n")
        (out / "results.md").write_text(markdown(report), encoding="utf-8")
        say(f"\n{markdown(report)}")
        return 0
    say("nmt-translate, the whole process, on the Tatoeba test")
    cli = {}
    test = str(TESTS["tatoeba"]) + ".zh"
    for name, engine, model, extra in (("torch fp32", "torch", ckpt, []), ("torch fp32, shortlist", "torch", ckpt, ["--shortlist"]),
                                       ("torch fp32, --workers 2", "torch", ckpt, ["--workers", "2"]),
                                       ("torch fp32, shortlist, --workers 2", "torch", ckpt, ["--shortlist", "--workers", "2"]),
                                       ("ctranslate2 fp32", "ctranslate2", ct2, []),
                                       ("ctranslate2 int8", "ctranslate2", ct2, ["--int8"]),
                                       ("ctranslate2 int8, shortlist", "ctranslate2", ct2, ["--int8", "--shortlist"])):
        seconds, rss = command_rss([sys.executable, "-m", "nmt.cli.translate", "--checkpoint", str(model), "--engine",
                                    engine, "--src", "zh", "--tgt", "en", "-i", test, "-o", os.devnull, "--beam-size",
                                    str(BEAM), "--length-penalty", "length", "--alpha", "1", *extra])
        cli[name] = {"seconds": round(seconds, 2), "peak_rss_mb": round(rss)}
        say(f"  {name:30s} {seconds:6.2f} s  peak RSS {rss:.0f} MB")
    report["nmt_translate"] = cli

    say("decoding cost against source length")
    lengths_src = out / "lengths.zh"
    lines = [line for prefix in TESTS.values() for line in Path(str(prefix) + ".zh").read_text(encoding="utf-8").splitlines()]
    # beyond the test sets' longest sentences (few above 110 tokens), up to the model's positions:
    # runs of 2-12 consecutive WMT22 sentences (its documents' order) joined into one source line
    wmt = Path(str(TESTS["wmt22"]) + ".zh").read_text(encoding="utf-8").splitlines()
    lines += ["".join(wmt[i:i + n]) for n in range(2, 13) for i in range(0, len(wmt) - n, n)]
    lengths_src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report["cost_by_length"] = {name: child(out, "decode", src_file=str(lengths_src), buckets=True, max_len=250,
                                            **modes[name][0])["buckets"]
                                for name in ("torch fp32", "ctranslate2 fp32")}

    text = json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT) + "/", "")
    (out / "results.json").write_text(text + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(report), encoding="utf-8")
    plot_cost_by_length(report["cost_by_length"], out / "cost_by_length.png")
    say(f"\n{markdown(report)}\nwrote {out / 'results.json'}, {out / 'results.md'} and {out / 'cost_by_length.png'}")
    return 0


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}; torch {r['environment']['versions'].get('torch', '?')}, ctranslate2 "
             f"{r['environment']['versions'].get('ctranslate2', '?')}. Command: `{r['command']}`. {r['search']}; "
             f"shortlist --k {r['shortlist']['k']} --frequent {r['shortlist']['frequent']} "
             f"(built in {r['shortlist']['build_seconds']} s).", ""]
    for test, rows in r["decoding"].items():
        ct2 = rows["ctranslate2 fp32"]["seconds"]
        lines += [f"| {test}: {rows['torch fp32']['sentences']:,} sentences | decoding s | target tokens/s | "
                  "vs CTranslate2 fp32 | identical to | BLEU |", "|---|---:|---:|---:|---|---:|"]
        for name, d in rows.items():
            lines.append(f"| {name} | {d['seconds']:.2f} | {d['target_tokens_per_s']:,.0f} | {d['seconds'] / ct2:.2f}x | "
                         f"{100 * d['identical']:.1f}% {d['identical_to']} | {d['bleu']} |")
        lines.append("")
    if "nmt_translate" in r:  # not with --quick
        lines += ["| nmt-translate, Tatoeba test, whole process | seconds | peak RSS (MB) |", "|---|---:|---:|"]
        lines += [f"| {name} | {c['seconds']:.2f} | {c['peak_rss_mb']} |" for name, c in r["nmt_translate"].items()]
    sig = r["decoding"]["tatoeba"]["torch fp32"]["signature"]
    lines += ["", f"BLEU signature: `{sig}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
