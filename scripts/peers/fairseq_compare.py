"""Same-run comparison against fairseq 0.12.2 (driven by scripts/peers/fairseq.sh; runs in nmt's
.venv and calls the fairseq tools of a separate environment made by `fairseq.sh install`).

    python scripts/peers/fairseq_compare.py speed   [--minutes 3] [--out runs/peers/fairseq] [--env DIR]
    python scripts/peers/fairseq_compare.py quality fairseq-usual|fairseq-recipe [--minutes 30] [--out ...]

Tokenisation is nmt's own code (nmt.tokenizer.train_tokenizer with the config's tokenizer
section), so both toolkits see the same SentencePiece pieces; fairseq gets them as
space-separated pieces through fairseq-preprocess --joined-dictionary. Hypotheses are decoded
from pieces with that SentencePiece model and scored by nmt.evaluation.corpus_scores (sacrebleu)
against the raw references, read in place from ../shared/data.

speed: the HSK workload of scripts/bench.py (configs/bench_hsk.yaml): fairseq-train for the
budget, then nmt-train (bench.py's own train_nmt, max_time = the same budget), back to back; each
translates the 354 test sentences with beam 5, 32 sentences per batch. OUT/speed/results.json.

quality: the Tatoeba+HSK run of shared/peers/FAIRSEQ.md. fairseq-usual = the anchor's flags, scored
with checkpoint_best.pt and fairseq's default length penalty; fairseq-recipe = the hyperparameters
of configs/tatoeba_cpu.yaml, then, on the valid split only, the last checkpoint against averages of
the last 2/4/8 step checkpoints (fairseq's scripts/average_checkpoints.py) and the length penalty,
as scripts/recipe_tatoeba.sh does; then the Tatoeba test and WMT22. OUT/<variant>/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TATOEBA, WMT22 = SHARED / "tatoeba-cmn", SHARED / "wmt22-generaltest2022-zhen"
ALPHAS = "0,0.3,0.6,1,1.5,2,3,4"  # scripts/tune_decoding.py's grid (there GNMT alphas; here fairseq --lenpen)
BASE_ALPHA = 0.6  # scripts/tune_decoding.py --base-alpha: the length penalty the checkpoints are compared at
THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
COMMANDS: list[str] = []  # every command run, for results.json


def say(message: str = "") -> None:
    print(message, flush=True)


# -- running commands ------------------------------------------------------------------------------


def fairseq_env(env_dir: Path) -> dict:
    env = dict(os.environ, **THREADS, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", PYTHONWARNINGS="ignore")
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    return env


def run(cmd: list[str], *, log: Path | None = None, env: dict | None = None, echo=lambda line: True,
        cwd: Path = ROOT, append: bool = False) -> dict:
    """Run a command, printing it first; its output goes to `log` (and the lines `echo` accepts to
    the console). Returns wall seconds and peak RSS; a failure stops the comparison."""
    shown = " ".join(f"{k}={v}" for k, v in sorted((env or {}).items()) if k in (*THREADS, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"))
    text = (shown + " " if shown else "") + shlex.join(str(c) for c in cmd)
    COMMANDS.append(text.replace(str(ROOT) + "/", ""))
    say(f"+ {text}" + (f"  > {log}" if log else ""))
    start = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd, errors="replace")
    tail: list[str] = []
    with (log.open("a" if append else "w", encoding="utf-8") if log else open(os.devnull, "w")) as out:
        for line in proc.stdout:
            out.write(line)
            tail = (tail + [line])[-30:]
            if echo(line):
                sys.stdout.write("  " + line)
                sys.stdout.flush()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stdout.write("".join(tail))
        raise SystemExit(f"fairseq_compare.py: command failed (exit {code}): {text}" + (f" (log {log})" if log else ""))
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def fairseq_versions(env_dir: Path) -> dict:
    code = ("import json, importlib.metadata as m, platform; names = ['fairseq', 'torch', 'numpy', 'hydra-core', "
            "'omegaconf', 'antlr4-python3-runtime', 'sentencepiece', 'sacrebleu']\n"
            "v = {}\nfor n in names:\n    try: v[n] = m.version(n)\n    except m.PackageNotFoundError: v[n] = None\n"
            "v['python'] = platform.python_version(); print(json.dumps(v))")
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def provenance(env_dir: Path) -> dict:
    from nmt.provenance import cpu_model, environment

    nmt_env = environment()
    return {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                        "load_average_at_start": Path("/proc/loadavg").read_text().split()[:3]
                        if Path("/proc/loadavg").is_file() else None},
            "commit": nmt_env["git_commit"], "versions": {"nmt_env": nmt_env["versions"],
                                                          "fairseq_env": fairseq_versions(env_dir)},
            "threads": THREADS}


def load_average() -> list[str] | None:
    return Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else None


# -- data: nmt's tokenizer, pieces for fairseq-preprocess -------------------------------------------


def write_pieces(path: Path, rows: list[list[int]], tokenizer, side: str) -> None:
    pieces = tokenizer.src_pieces if side == "src" else tokenizer.tgt_pieces
    path.write_text("".join(" ".join(pieces(ids)) + "\n" for ids in rows), encoding="utf-8")


def preprocess(env: dict, env_dir: Path, pieces: Path, dest: Path, splits: dict[str, str]) -> dict:
    """fairseq-preprocess --joined-dictionary on PIECES/{train,valid,...}.{zh,en}."""
    cmd = [env_dir / "bin" / "fairseq-preprocess", "--source-lang", "zh", "--target-lang", "en",
           "--trainpref", pieces / "train", "--destdir", dest, "--joined-dictionary", "--workers", "2"]
    for flag, names in splits.items():
        cmd += [flag, ",".join(str(pieces / n) for n in names.split(","))]
    shutil.rmtree(dest, ignore_errors=True)
    return run(cmd, log=dest.parent / "preprocess.log", env=env, echo=lambda l: "| [" in l and "types" in l or "Wrote" in l)


# -- fairseq logs and generation output --------------------------------------------------------------


LOG_LINE = re.compile(r"\| (train_inner|train|valid) \| (\{.*\})\s*$")


def fairseq_log(path: Path) -> dict[str, list[dict]]:
    """fairseq-train --log-format json: the train_inner / train / valid records, values as floats."""
    records: dict[str, list[dict]] = {"train_inner": [], "train": [], "valid": []}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LOG_LINE.search(line)
        if m:
            tag = m.group(1)  # train/valid summaries prefix their keys with the tag, train_inner does not
            rec = {k[len(tag) + 1:] if k.startswith(tag + "_") else k: _num(v) for k, v in json.loads(m.group(2)).items()}
            records[tag].append(rec)
    return records


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def steady_wps(log: dict, skip_updates: int) -> dict:
    """Target tokens/s of fairseq's own `wps` over its train_inner intervals after the first
    `skip_updates` updates: total tokens / total time (each interval: wpb * updates tokens in
    wpb * updates / wps seconds), and the median interval wps."""
    rows, prev = [], 0
    for rec in log["train_inner"]:
        start, prev = prev, int(rec["num_updates"])
        if start >= skip_updates and rec.get("wps"):
            n = prev - start
            rows.append((rec["wpb"] * n, rec["wpb"] * n / rec["wps"], rec["wps"]))
    if not rows:
        return {"tokens_per_s": None, "intervals": 0}
    tokens, seconds = sum(r[0] for r in rows), sum(r[1] for r in rows)
    median = sorted(r[2] for r in rows)[len(rows) // 2]
    return {"tokens_per_s": round(tokens / seconds, 1), "median_interval_wps": median, "intervals": len(rows),
            "timed_updates": prev - skip_updates, "timed_seconds": round(seconds, 1),
            "log_interval_updates": int(log["train_inner"][0]["num_updates"])}


TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s")


def generate(env: dict, env_dir: Path, data_bin: Path, checkpoint: Path, subset: str, out: Path, *,
             beam: int, batch_size: int, lenpen: float, max_len: tuple[float, int] | None) -> dict:
    """fairseq-generate on a binarised subset; returns the hypotheses (pieces, in input order) and timings."""
    cmd = [env_dir / "bin" / "fairseq-generate", data_bin, "--path", checkpoint, "--gen-subset", subset,
           "--source-lang", "zh", "--target-lang", "en", "--beam", str(beam), "--batch-size", str(batch_size),
           "--lenpen", f"{lenpen:g}", "--cpu", "--num-workers", "0", "--seed", "1"]
    if max_len:
        cmd += ["--max-len-a", f"{max_len[0]:g}", "--max-len-b", str(max_len[1])]
    timing = run(cmd, log=out, env=env, echo=lambda l: "Translated" in l)
    hyps: dict[int, list[str]] = {}
    summary = None
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("H-"):
            fields = line.split("\t")
            hyps[int(fields[0][2:])] = fields[2].split() if len(fields) > 2 else []
        elif (m := TRANSLATED.search(line)):
            summary = m
    ordered = [hyps[i] for i in range(len(hyps))]
    result = {"process_seconds": timing["seconds"], "peak_rss_mb": timing["peak_rss_mb"], "pieces": ordered}
    if summary:
        result.update(sentences=int(summary.group(1).replace(",", "")), target_tokens=int(summary.group(2).replace(",", "")),
                      seconds=float(summary.group(3)))
    return result


def detok(tokenizer, pieces: list[list[str]]) -> list[str]:
    """Pieces -> text with the SentencePiece model (special and unknown ids dropped, as nmt's decode_tgt does)."""
    return [tokenizer.decode_tgt(tokenizer.tgt_ids(p)) for p in pieces]


def score(hyps: list[str], refs: list[list[str]]) -> dict:
    from nmt.evaluation import corpus_scores

    s = corpus_scores(hyps, refs, tgt_lang="en")
    b = s["bleu"]
    bp = 1.0 if b["sys_len"] >= b["ref_len"] else math.exp(1 - b["ref_len"] / max(b["sys_len"], 1))
    return {"bleu": b["score"], "chrf": s["chrf"]["score"], "bp": round(bp, 3), "ratio": b["length_ratio"],
            "bleu_signature": b["signature"], "chrf_signature": s["chrf"]["signature"]}


def read_lines(path: Path, limit: int = 0) -> list[str]:
    from nmt.textio import read_text_lines

    lines = read_text_lines(path)
    return lines[:limit] if limit else lines


# -- speed -----------------------------------------------------------------------------------------------


def load_bench():
    spec = importlib.util.spec_from_file_location("nmt_bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def bench_child(kind: str, out: Path, **kwargs) -> dict:
    """One of scripts/bench.py's measurements, run as bench.py runs it (its own process)."""
    spec = json.dumps({"kind": kind, "out": str(out), **kwargs})
    cmd = [sys.executable, ROOT / "scripts" / "bench.py", "--child", spec]
    log = out / f"nmt-{kind}.log"
    timing = run(cmd, log=log, env=dict(os.environ, **THREADS), echo=lambda l: not l.startswith("{"))
    result = json.loads(log.read_text(encoding="utf-8").strip().splitlines()[-1])
    result["peak_rss_mb"] = timing["peak_rss_mb"]
    result["process_seconds"] = timing["seconds"]
    return result


def speed(args) -> int:
    from nmt.config import load_config
    from nmt.tokenizer import train_tokenizer

    bench = load_bench()
    out = (args.out / "speed").resolve()
    shutil.rmtree(out, ignore_errors=True)  # a timing is always measured anew
    out.mkdir(parents=True)
    env_dir, env = args.env, fairseq_env(args.env)
    report = {"what": "HSK speed workload (scripts/bench.py / configs/bench_hsk.yaml): fairseq 0.12.2 and nmt back "
                      "to back on this machine", "budget_minutes": args.minutes, **provenance(env_dir)}
    seconds_budget = int(round(args.minutes * 60))

    say(f"== data: hsk-sentences-audio items 1-{bench.N_TRAIN} train, the rest test (scripts/bench.py write_workload)")
    data = bench.write_workload(out)
    cfg = load_config(ROOT / "configs" / "bench_hsk.yaml", [f"data.train={data / 'train'}", f"data.valid={data / 'test'}"])
    train_src, train_tgt = read_lines(data / "train.zh"), read_lines(data / "train.en")
    say(f"== SentencePiece: nmt.tokenizer.train_tokenizer, {cfg.tokenizer.type} {cfg.tokenizer.vocab_size} joint "
        f"(configs/bench_hsk.yaml), on {len(train_src)} train pairs")
    tokenizer = train_tokenizer(train_src, train_tgt, cfg.tokenizer)
    tokenizer.save(out / "spm")
    pieces = out / "pieces"
    pieces.mkdir()
    for split in ("train", "test"):
        src, tgt = read_lines(data / f"{split}.zh"), read_lines(data / f"{split}.en")
        write_pieces(pieces / f"{split}.zh", tokenizer.encode_src(src), tokenizer, "src")
        write_pieces(pieces / f"{split}.en", tokenizer.encode_tgt(tgt), tokenizer, "tgt")
    data_bin = out / "fairseq-bin"
    preprocess(env, env_dir, pieces, data_bin, {"--validpref": "test"})

    say(f"== fairseq-train: {args.minutes:g} minutes (--stop-time-hours {args.minutes / 60:.6g}), no validation")
    save = out / "fairseq-checkpoints"
    train_cmd = [env_dir / "bin" / "fairseq-train", data_bin, "--arch", "transformer",
                 "--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
                 "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
                 "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--dropout", "0.1",
                 "--attention-dropout", "0.1", "--share-decoder-input-output-embed",
                 "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
                 "--adam-betas", "(0.9,0.98)", "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt",
                 "--warmup-updates", "1000", "--warmup-init-lr", "1e-7", "--max-tokens", "4096",
                 "--stop-time-hours", f"{args.minutes / 60:.6g}", "--disable-validation", "--seed", "1",
                 "--cpu", "--num-workers", "0", "--save-dir", save, "--no-epoch-checkpoints",
                 "--save-interval", "1000000",  # one checkpoint, at the end: the timing is training, not checkpoint I/O
                 "--log-format", "json", "--log-interval", "5"]
    load_start = load_average()
    t = run(train_cmd, log=out / "fairseq-train.log", env=env,
            echo=lambda l: re.search(r'train_inner \| .*"num_updates": "\d*[05]0"', l) or "Stopping training" in l)
    log = fairseq_log(out / "fairseq-train.log")
    fs_train = {**steady_wps(log, skip_updates=args.warmup_updates), "process_seconds": t["seconds"],
                "peak_rss_mb": t["peak_rss_mb"], "updates": int(log["train"][-1]["num_updates"]) if log["train"] else 0,
                "load_average_before": load_start, "load_average_after": load_average()}
    say(f"  fairseq: {fs_train['tokens_per_s']} target tokens/s (wps, updates {args.warmup_updates}+), "
        f"{fs_train['updates']} updates, peak RSS {t['peak_rss_mb']} MB")

    say("== fairseq-generate: the 354 test sentences, beam 5, batches of 32 (length penalty 1 = score/|Y|, as nmt's bench)")
    refs = read_lines(data / "test.en")
    g = generate(env, env_dir, data_bin, save / "checkpoint_last.pt", "valid", out / "fairseq-generate.txt",
                 beam=5, batch_size=32, lenpen=1.0, max_len=(1.5, 10))
    hyps = detok(tokenizer, g.pop("pieces"))
    (out / "fairseq-test.en").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    fs_decode = {**g, "bleu": score(hyps, [refs])["bleu"], "sentences_per_s": round(len(hyps) / g["seconds"], 1),
                 "target_tokens_per_s": round(g["target_tokens"] / g["seconds"], 1)}
    say(f"  fairseq: {fs_decode['seconds']} s of generation ({fs_decode['process_seconds']} s whole process), "
        f"BLEU {fs_decode['bleu']}")

    say(f"== nmt-train (scripts/bench.py train_nmt): the same budget, trainer.max_time {seconds_budget} s")
    max_time = f"00:{seconds_budget // 3600:02d}:{seconds_budget % 3600 // 60:02d}:{seconds_budget % 60:02d}"
    load_start = load_average()
    nmt_train = bench_child("train_nmt", out, steps=-1, warmup=args.warmup_updates, max_tokens=4096,
                            run_dir=str(out / "nmt-run"), overrides=[f"trainer.max_time={max_time}"])
    nmt_train.update(load_average_before=load_start, load_average_after=load_average())
    same_spm = (out / "nmt-run" / "tokenizer" / "spm.model").read_bytes() == (out / "spm" / "spm.model").read_bytes()
    say(f"  nmt: {nmt_train['tokens_per_s']} target tokens/s (steps {args.warmup_updates}+), "
        f"peak RSS {nmt_train['peak_rss_mb']} MB; same SentencePiece model as fairseq's: {same_spm}")

    say("== nmt decoding (scripts/bench.py decode, torch fp32): beam 5, batches of 32, |Y|^1 length penalty")
    nmt_decode = bench_child("decode", out, engine="torch", model=nmt_train.pop("checkpoint"),
                             src_file=str(data / "test.zh"), ref_file=str(data / "test.en"))
    nmt_decode.pop("hypotheses", None)
    say(f"  nmt: {nmt_decode['seconds']} s, BLEU {nmt_decode['bleu']}")

    report.update({
        "workload": {"train_pairs": len(train_src), "test_pairs": len(refs), "sentencepiece": "unigram 4,000 joint "
                     "(nmt.tokenizer.train_tokenizer, configs/bench_hsk.yaml)", "same_sentencepiece_model": same_spm,
                     "timed_from_update": args.warmup_updates,
                     "tokens": "target tokens incl. EOS, padding excluded (fairseq's ntokens / wps; nmt's bench.py)"},
        "fairseq": {"train": fs_train, "decode": fs_decode},
        "nmt": {"train": nmt_train, "decode": nmt_decode},
        "ratio": {"train_tokens_per_s_nmt_over_fairseq": round(nmt_train["tokens_per_s"] / fs_train["tokens_per_s"], 3)
                  if fs_train["tokens_per_s"] else None,
                  "decode_seconds_fairseq_over_nmt": round(fs_decode["seconds"] / nmt_decode["seconds"], 3),
                  # the two models write outputs of different lengths: tokens/s compares the work per second
                  "decode_target_tokens_per_s_nmt_over_fairseq": round(nmt_decode["target_tokens_per_s"]
                                                                       / fs_decode["target_tokens_per_s"], 3)},
        "differences": [
            "fairseq: the anchor's speed flags (FAIRSEQ.md): lr 5e-4, warm-up 1,000 from 1e-7, no gradient clipping, "
            "decoder input/output embeddings shared but a separate encoder embedding, attention dropout 0.1; nmt: "
            "configs/bench_hsk.yaml: peak lr 1e-3, warm-up 400, clipping at norm 1.0, three-way tying, no attention dropout",
            "fairseq saves one checkpoint at the end (--save-interval 1000000; the anchor's per-epoch saves would be "
            "in its time); nmt writes last.ckpt at the end (and every trainer.checkpoint_every, 5 min)",
            "decode timing: fairseq's own 'Translated ... in Xs' (generation only, first batches included); nmt: "
            "bench.py's timing after a 32-sentence warm-up; model loading excluded from both",
            "max output length a*src+b with a=1.5, b=10 on both (the anchor ran fairseq's default cap of 200)"],
        "commands": COMMANDS})
    path = out / "results.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT) + "/", "") + "\n", encoding="utf-8")
    say(f"\nfairseq {fs_train['tokens_per_s']} vs nmt {nmt_train['tokens_per_s']} target tokens/s "
        f"(nmt/fairseq {report['ratio']['train_tokens_per_s_nmt_over_fairseq']}); decoding 354 sentences: fairseq "
        f"{fs_decode['seconds']} s, nmt {nmt_decode['seconds']} s; BLEU {fs_decode['bleu']} / {nmt_decode['bleu']}")
    say(f"wrote {path}")
    return 0


# -- quality --------------------------------------------------------------------------------------------


def quality_data(args, out: Path, recipe: bool) -> tuple[object, Path, dict]:
    """Tatoeba train + HSK as configs/tatoeba_cpu.yaml reads them; nmt's tokenizer (recipe: with the
    config's zh_hans source normalisation and max_len/max_len_ratio filter; usual: the anchor's plain
    unigram 8,000 without either); pieces of train, valid, Tatoeba test and WMT22."""
    from nmt.config import load_config
    from nmt.data import drop_reasons, load_raw, training_pairs
    from nmt.tokenizer import Tokenizer, train_tokenizer

    cfg = load_config(ROOT / "configs" / "tatoeba_cpu.yaml")
    tok_cfg = cfg.tokenizer
    if not recipe:
        tok_cfg.src_normalize, tok_cfg.tgt_normalize = [], []
    settings = {"train": [str(t) for t in cfg.data.train], "tokenizer": dataclasses.asdict(tok_cfg),
                "filter": {"max_len": cfg.data.max_len, "max_len_ratio": cfg.data.max_len_ratio} if recipe else None,
                "limit_valid": args.limit_valid, "limit_test": args.limit_test}
    data = out / "data"
    stamp = data / "DONE.json"
    if stamp.is_file() and json.loads(stamp.read_text())["settings"] == settings:
        say(f"== data: {data} is ready (same settings)")
        done = json.loads(stamp.read_text())
        return Tokenizer.load(data / "spm"), data / "fairseq-bin", done["stats"]
    shutil.rmtree(data, ignore_errors=True)
    (data / "pieces").mkdir(parents=True)
    with _cwd(ROOT):  # the config's paths are relative to the project root
        read = len(load_raw(cfg.data, "train"))
        kept = list(training_pairs(cfg.data))  # without the pairs data.drop_pattern drops, as nmt trains
        src, tgt = [ex["src"].strip() for ex in kept], [ex["tgt"].strip() for ex in kept]
    say(f"== SentencePiece: nmt.tokenizer.train_tokenizer, {tok_cfg.type} {tok_cfg.vocab_size} joint, "
        f"src_normalize {tok_cfg.src_normalize or 'none'}, on {len(src)} pairs of {', '.join(settings['train'])}")
    tokenizer = train_tokenizer(src, tgt, tok_cfg)
    tokenizer.save(data / "spm")
    src_ids, tgt_ids = tokenizer.encode_src(src), tokenizer.encode_tgt(tgt)
    stats = {"train_pairs_read": read, "dropped_by_pattern": read - len(src)}
    if recipe:  # nmt's cleaning: drop empty, longer than max_len pieces, or length ratio above max_len_ratio
        why = drop_reasons([len(x) for x in src_ids], [len(x) for x in tgt_ids], max_len=cfg.data.max_len,
                           max_len_ratio=cfg.data.max_len_ratio)
        keep = [i for i, w in enumerate(why) if not w]
        stats["dropped"] = {r: int((why == r).sum()) for r in ("empty", "too_long", "ratio")}
        src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    stats["train_pairs"] = len(src_ids)
    pieces = data / "pieces"
    write_pieces(pieces / "train.zh", src_ids, tokenizer, "src")
    write_pieces(pieces / "train.en", tgt_ids, tokenizer, "tgt")
    for name, prefix, limit in (("valid", TATOEBA / "valid", args.limit_valid), ("test", TATOEBA / "test", args.limit_test),
                                ("wmt22", WMT22 / "test", args.limit_test)):
        s, t = read_lines(Path(f"{prefix}.zh"), limit), read_lines(Path(f"{prefix}.en"), limit)
        write_pieces(pieces / f"{name}.zh", tokenizer.encode_src(s), tokenizer, "src")
        write_pieces(pieces / f"{name}.en", tokenizer.encode_tgt(t), tokenizer, "tgt")
        stats[f"{name}_pairs"] = len(s)
    say(f"  {stats}")
    preprocess(fairseq_env(args.env), args.env, pieces, data / "fairseq-bin",
               {"--validpref": "valid", "--testpref": "test,wmt22"})  # subsets valid, test (Tatoeba), test1 (WMT22)
    stamp.write_text(json.dumps({"settings": settings, "stats": stats}, indent=2) + "\n")
    return tokenizer, data / "fairseq-bin", stats


class _cwd:
    def __init__(self, path: Path) -> None:
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc):
        os.chdir(self.old)


def train_flags(recipe: bool, minutes: float, save_every: int, keep: int, total_updates: int = 0) -> list[str]:
    arch = ["--arch", "transformer", "--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
            "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
            "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--share-all-embeddings",
            "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam"]
    if not recipe:  # FAIRSEQ.md: the quality anchor run
        return arch + ["--lr-scheduler", "inverse_sqrt", "--label-smoothing", "0.1", "--adam-betas", "(0.9,0.98)",
                       "--dropout", "0.1", "--attention-dropout", "0.1", "--lr", "1e-3", "--warmup-updates", "1000",
                       "--warmup-init-lr", "1e-7", "--max-tokens", "4096", "--stop-time-hours", f"{minutes / 60:.6g}",
                       "--seed", "1", "--no-epoch-checkpoints"]
    from nmt.config import load_config

    cfg = load_config(ROOT / "configs" / "tatoeba_cpu.yaml")
    m, o = cfg.model, cfg.optim
    assert (m.d_model, m.n_heads, m.d_ff, m.n_encoder_layers, m.n_decoder_layers) == (256, 4, 1024, 3, 3), "config changed"
    assert o.lr_schedule in ("inverse_sqrt", "linear") and m.tie_embeddings and not m.norm_first
    if o.lr_schedule == "inverse_sqrt":
        warmup = o.warmup_steps
        schedule = ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(warmup)]
    else:  # nmt's linear schedule is in fractions of the wall-clock budget; fairseq's counts updates
        if total_updates <= 0:
            raise SystemExit("fairseq_compare: the recipe's linear schedule needs --total-updates N (the optimizer "
                             "steps nmt's own run made in the same budget: fairseq's polynomial_decay counts updates)")
        warmup = max(1, round(o.warmup_fraction * total_updates))
        schedule = ["--lr-scheduler", "polynomial_decay", "--power", "1", "--end-learning-rate", "0",
                    "--warmup-updates", str(warmup), "--total-num-update", str(total_updates)]
    return arch + schedule + [
        "--dropout", f"{m.dropout:g}", "--attention-dropout", f"{m.attention_dropout:g}",
        "--activation-dropout", f"{m.activation_dropout:g}", "--adam-eps", f"{o.adam_eps:g}",
        "--adam-betas", f"({o.adam_betas[0]:g},{o.adam_betas[1]:g})", "--weight-decay", f"{o.weight_decay:g}",
        "--label-smoothing", f"{o.label_smoothing:g}", "--lr", f"{o.peak_lr:g}",
        # nmt's step 1 runs at peak_lr / warmup (fairseq's update k runs at the lr set after update k-1)
        *(["--warmup-init-lr", f"{o.peak_lr / warmup:g}"] if o.lr_schedule == "inverse_sqrt" else []), "--max-tokens", str(cfg.data.max_tokens),
        "--clip-norm", f"{cfg.trainer.gradient_clip_val:g}", "--stop-time-hours", f"{minutes / 60:.6g}",
        "--seed", str(cfg.trainer.seed), "--save-interval-updates", str(save_every),
        "--keep-interval-updates", str(keep), "--no-epoch-checkpoints"]


QUALITY_DIFFERENCES = {
    "fairseq-usual": [
        "the anchor run of FAIRSEQ.md, not our recipe: 4,096-token batches, warm-up 1,000 from 1e-7, dropout 0.1 and "
        "attention dropout 0.1, Adam eps 1e-8; SentencePiece unigram 8,000 without the zh_hans (OpenCC t2s) source "
        "normalisation and no max_len/max_len_ratio filter (fairseq keeps pairs up to 1,024 positions)",
        "validation (loss only) at each epoch end; scored with checkpoint_best.pt (lowest valid loss), no averaging, "
        "fairseq's default --lenpen 1 (score / |Y|), no tuning"],
    "fairseq-recipe": [
        "same SentencePiece model, normalisation and length filter as nmt's recipe (nmt's own tokenizer code)",
        "validation: fairseq validates (loss only, full valid split) at every step-checkpoint save (every 200 updates) "
        "and at each epoch end, inside the time budget; nmt validates every 1,000 steps (loss + greedy BLEU on 500)",
        "length penalty: fairseq's --lenpen divides by |Y|^a; nmt's tuning uses GNMT ((5+|Y|)/6)^a; same grid of a",
        "averaging: the last 2/4/8 step checkpoints in both; fairseq's via scripts/peers/fairseq_average.py (fairseq's "
        "scripts/average_checkpoints.py is not in the sdist; --averager takes it from a fairseq checkout)",
        "fairseq's own initialisation, batching (sorted by length, max(src,tgt) incl. EOS x sentences <= max-tokens) "
        "and data order; --warmup-init-lr peak/warmup so that update 1 runs at nmt's step-1 lr",
        "schedule: nmt's linear warm-up and decay are fractions of the wall-clock budget; fairseq's polynomial_decay "
        "(power 1, to 0) counts updates: its total is --total-updates, the steps nmt's own run made in the same budget"],
}


def quality(args) -> int:
    recipe = args.variant == "fairseq-recipe"
    out = (args.out / args.variant).resolve()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    env_dir, env = args.env, fairseq_env(args.env)
    report = {"what": f"Tatoeba+HSK quality run, {args.variant}", "budget_minutes": args.minutes, **provenance(env_dir)}
    tokenizer, data_bin, stats = quality_data(args, out, recipe)
    save = out / "checkpoints"

    if (out / "TRAINED").is_file():
        say(f"== fairseq-train: {out / 'TRAINED'} exists, training skipped (--fresh to train again)")
    else:
        resume = (save / "checkpoint_last.pt").is_file()
        say(f"== fairseq-train: {args.minutes:g} minutes" + (" (resuming checkpoint_last.pt)" if resume else ""))
        cmd = [env_dir / "bin" / "fairseq-train", data_bin, *train_flags(recipe, args.minutes, args.save_interval_updates,
                                                                          args.keep_interval_updates, args.total_updates),
               "--cpu", "--num-workers", "0", "--save-dir", save, "--log-format", "json", "--log-interval", "50"]
        t = run(cmd, log=out / "fairseq-train.log", append=resume, env=env,
                echo=lambda l: "| valid |" in l or "| train |" in l or "Stopping training" in l or "train_inner" in l)
        (out / "TRAINED").write_text(json.dumps(t) + "\n")
    log = fairseq_log(out / "fairseq-train.log")  # a resumed run appends to it
    last = log["train"][-1] if log["train"] else {}
    training = {"updates": int(last["num_updates"]) if last else None,
                "epochs": int(last.get("epoch", 0)) or None, "validations": len(log["valid"]),
                "last_valid_loss": log["valid"][-1]["loss"] if log["valid"] else None,
                "wps_mean_of_intervals": round(sum(r["wps"] for r in log["train_inner"]) / len(log["train_inner"]), 1)
                if log["train_inner"] else None,
                **json.loads((out / "TRAINED").read_text())}
    say(f"  {training}")

    gen = dict(beam=5, batch_size=64, max_len=(1.5, 10))  # FAIRSEQ.md's generation flags (nmt's defaults too)
    valid_refs = [read_lines(TATOEBA / "valid.en", args.limit_valid)]
    decode_dir = out / "decode"
    decode_dir.mkdir(exist_ok=True)

    def scored(checkpoint: Path, subset: str, lenpen: float, refs: list[list[str]], tag: str) -> dict:
        g = generate(env, env_dir, data_bin, checkpoint, subset, decode_dir / f"{tag}.txt", lenpen=lenpen, **gen)
        hyps = detok(tokenizer, g.pop("pieces"))
        (decode_dir / f"{tag}.en").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        row = {"checkpoint": checkpoint.name, "lenpen": lenpen, **score(hyps, refs),
               "generation_seconds": g.get("seconds"), "process_seconds": g["process_seconds"]}
        say(f"  {tag}: BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f}, BP {row['bp']} ({row['generation_seconds']} s)")
        return row

    tuning = None
    if recipe:
        averager = args.averager or ROOT / "scripts" / "peers" / "fairseq_average.py"
        say(f"== checkpoints: the last, and averages of the last 2, 4, 8 step checkpoints ({averager.name})")
        steps = sorted(save.glob("checkpoint_*_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
        candidates = [save / "checkpoint_last.pt"]
        for n in (2, 4, 8):
            if len(steps) < n:
                say(f"  average of {n}: only {len(steps)} step checkpoint(s), skipped")
                continue
            target = out / f"average{n}.pt"
            run([env_dir / "bin" / "python", averager, "--inputs", save, "--num-update-checkpoints", str(n),
                 "--output", target], env=env, log=out / f"average{n}.log", echo=lambda l: "averaged" in l or "Finished" in l)
            candidates.append(target)
        say(f"== valid split ({len(valid_refs[0])} sentences): the checkpoint at lenpen {BASE_ALPHA:g}, then --lenpen "
            f"over {ALPHAS} (fairseq's score / |Y|^lenpen)")
        rows = [scored(c, "valid", BASE_ALPHA, valid_refs, f"valid-{c.stem}-lenpen{BASE_ALPHA:g}") for c in candidates] \
            if len(candidates) > 1 else []
        chosen = save / "checkpoint_last.pt" if not rows else Path(
            next(c for c in candidates if c.name == max(rows, key=lambda r: r["bleu"])["checkpoint"]))
        for alpha in (float(a) for a in ALPHAS.split(",")):
            if not any(r["checkpoint"] == chosen.name and r["lenpen"] == alpha for r in rows):
                rows.append(scored(chosen, "valid", alpha, valid_refs, f"valid-{chosen.stem}-lenpen{alpha:g}"))
        best = max((r for r in rows if r["checkpoint"] == chosen.name), key=lambda r: r["bleu"])
        lenpen = best["lenpen"]
        tuning = {"rows": rows, "chosen_checkpoint": chosen.name, "chosen_lenpen": lenpen, "averager": str(averager),
                  "step_checkpoints": [p.name for p in steps],
                  "valid_sentences": len(valid_refs[0])}
        say(f"  chosen on valid: {chosen.name}, lenpen {lenpen:g}")
    else:
        chosen, lenpen = save / "checkpoint_best.pt", 1.0  # the usual: lowest valid loss, fairseq's default lenpen
        say(f"== fairseq-usual: {chosen.name} (lowest valid loss), --lenpen 1 (fairseq's default), no tuning")

    say(f"== test sets: {chosen.name}, beam 5, lenpen {lenpen:g}")
    tat_refs = [read_lines(TATOEBA / "test.en", args.limit_test)]
    wmt_refs = [read_lines(WMT22 / "test.en", args.limit_test), read_lines(WMT22 / "test.en.refB", args.limit_test)]
    tests = {"tatoeba_test": scored(chosen, "test", lenpen, tat_refs, "tatoeba-test")}
    wmt = scored(chosen, "test1", lenpen, wmt_refs[:1], "wmt22")
    hyps = read_lines(decode_dir / "wmt22.en")
    tests["wmt22_refA"] = wmt
    tests["wmt22_refsAB"] = {**wmt, **score(hyps, wmt_refs)}
    for name, r in tests.items():
        say(f"  {name}: BLEU {r['bleu']:.2f}, chrF {r['chrf']:.2f}  [{r['bleu_signature']}] [{r['chrf_signature']}]")

    report.update({"data": stats, "sentencepiece": json.loads((out / "data" / "DONE.json").read_text())["settings"]["tokenizer"],
                   "training": training, "tuning": tuning, "test": tests,
                   "limits": {"valid": args.limit_valid or "full", "test": args.limit_test or "full"},
                   "differences_from_nmt_recipe": QUALITY_DIFFERENCES[args.variant],
                   "load_average_at_end": load_average(), "commands": COMMANDS})
    path = out / "results.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False).replace(str(ROOT) + "/", "") + "\n", encoding="utf-8")
    say(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", type=Path, default=ROOT / "build" / "peers" / "fairseq-env", help="fairseq's environment")
    common.add_argument("--out", type=Path, default=ROOT / "runs" / "peers" / "fairseq", help="output directory")
    common.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of every fairseq and nmt process "
                        "(default 2: FAIRSEQ.md; on a machine where something else runs, 2 threads on 2 cores is "
                        "several times slower than 1)")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed", parents=[common], help="the HSK speed workload, fairseq then nmt")
    s.add_argument("--minutes", type=float, default=3.0, help="training budget of each toolkit (default 3: FAIRSEQ.md)")
    s.add_argument("--warmup-updates", type=int, default=20, help="first updates left out of tokens/s (bench.py: 20)")
    q = sub.add_parser("quality", parents=[common], help="the Tatoeba+HSK run")
    q.add_argument("variant", nargs="?", default="fairseq-recipe", choices=["fairseq-usual", "fairseq-recipe"])
    q.add_argument("--minutes", type=float, default=30.0, help="training budget (default 30)")
    q.add_argument("--save-interval-updates", type=int, default=200, help="recipe: step checkpoint every N updates "
                   "(configs/tatoeba_cpu.yaml trainer.save_every_n_steps)")
    q.add_argument("--keep-interval-updates", type=int, default=8, help="recipe: step checkpoints kept (keep_last_checkpoints)")
    q.add_argument("--limit-valid", type=int, default=0, help="only the first N valid sentences (0: all; smoke checks)")
    q.add_argument("--limit-test", type=int, default=0, help="only the first N sentences of each test set (0: all)")
    q.add_argument("--averager", type=Path, default=None,
                   help="fairseq's scripts/average_checkpoints.py from a checkout of its git repository (v0.12.2; "
                   "the sdist lacks it); default: scripts/peers/fairseq_average.py, the same averaging")
    q.add_argument("--total-updates", type=int, default=0,
                   help="recipe with the linear schedule: fairseq's total updates (the steps of nmt's own 30-minute run)")
    q.add_argument("--fresh", action="store_true", help="delete OUT/VARIANT first (else a trained model is reused)")
    args = p.parse_args(argv)
    args.env = args.env.resolve()
    THREADS.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    load = load_average()
    if load and float(load[0]) > 0.5:
        say(f"warning: load average {' '.join(load)}: this machine is not idle, so every timing (and what fits in "
            "the training budget) is off; results.json records the load")
    args.out = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    if not (args.env / "bin" / "fairseq-train").is_file():
        sys.exit(f"fairseq_compare.py: no fairseq in {args.env}: run scripts/peers/fairseq.sh install first")
    return speed(args) if args.command == "speed" else quality(args)


if __name__ == "__main__":
    sys.exit(main())
