"""Load test of nmt-serve on loopback (issue 9): dynamic batching on against off, in one run. Not a
test: nothing here asserts a time.

    python scripts/bench_serve.py --checkpoint CKPT [--clients 32] [--requests 512]
        [--lines-per-request 1] [--beam-size 5] [--batch-wait-ms 5] [--out runs/bench_serve]

For each mode, an `nmt-serve` process is started on a free loopback port and warmed up; then
--clients concurrent clients (asyncio + httpx, one process) send --requests requests in all, each
with --lines-per-request sentences taken in turn from the Tatoeba test split (or from the embedded
HSK corpus when ../shared/data is absent). Reported per mode: requests/s, sentences/s, p50/p95/p99
latency of a request as the client sees it, mean batch size as the server formed it, and errors.
The modes run one after the other on the same machine, so the ratio between them is the result;
the client shares the CPU with the server, as it would on one machine.

Writes OUT/results.json and OUT/results.md; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TATOEBA = ROOT.parent / "shared" / "data" / "tatoeba-cmn" / "test.zh"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint from nmt-train (e.g. the Tatoeba recipe's)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--requests", type=int, default=512, help="requests per mode (default 512)")
    p.add_argument("--lines-per-request", type=int, default=1, help="sentences per request (default 1)")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="the server's gathering window with batching on")
    p.add_argument("--out", type=Path, default=Path("runs/bench_serve"))
    return p.parse_args(argv)


def sentences() -> tuple[list[str], str]:
    if TATOEBA.exists():
        return [s for s in TATOEBA.read_text(encoding="utf-8").splitlines() if s.strip()], "../shared/data/tatoeba-cmn/test.zh"
    from nmt.config import DataConfig
    from nmt.data import load_raw

    test = load_raw(DataConfig(source="hsk", src_lang="zh", tgt_lang="en"), "test")
    return [s for s in test["src"] if s.strip()], "embedded HSK corpus (test split)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, batching: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "nmt.cli.serve", "--checkpoint", args.checkpoint, "--port", str(port),
           "--log-level", "warning", "--max-lines", str(max(64, args.lines_per_request)),
           "--batch-wait-ms", str(args.batch_wait_ms)] + ([] if batching else ["--no-batching"])
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 120
    while True:
        try:
            httpx.get(f"{url}/health", timeout=5).raise_for_status()
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"bench_serve.py: nmt-serve did not start ({' '.join(cmd)})")
            time.sleep(0.2)


async def load(url: str, bodies: list[dict], clients: int) -> tuple[list[float], int, float]:
    """Send every body once with `clients` concurrent clients; latencies in seconds, errors, wall time."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies, errors = [], 0

    async def client(http):
        nonlocal errors
        while not queue.empty():
            body = queue.get_nowait()
            start = time.perf_counter()
            response = await http.post(f"{url}/translate", json=body)
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_mode(args, batching: bool, bodies: list[dict]) -> dict:
    import httpx

    proc, url = start_server(args, batching)
    try:
        asyncio.run(load(url, bodies[: 2 * args.clients], args.clients))  # warm-up: not measured
        before = httpx.get(f"{url}/health").json()
        latencies, errors, wall = asyncio.run(load(url, bodies, args.clients))
        after = httpx.get(f"{url}/health").json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    batches, lines = after["batches"] - before["batches"], after["lines"] - before["lines"]
    n_lines = sum(len(b["text"]) for b in bodies)
    return {"mode": f"batching on ({args.batch_wait_ms:g} ms)" if batching else "batching off",
            "requests": len(bodies), "sentences": n_lines, "seconds": round(wall, 2),
            "requests_per_s": round(len(bodies) / wall, 2), "sentences_per_s": round(n_lines / wall, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "p99_ms": round(1000 * percentile(latencies, 99), 1), "mean_ms": round(1000 * statistics.mean(latencies), 1),
            "batches": batches, "mean_batch_lines": round(lines / max(batches, 1), 2), "errors": errors}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nmt.provenance import describe_machine

    pool, source = sentences()
    k = args.lines_per_request
    bodies = [{"text": [pool[(i * k + j) % len(pool)] for j in range(k)], "beam_size": args.beam_size}
              for i in range(args.requests)]
    rows = [run_mode(args, batching, bodies) for batching in (False, True)]
    off, on = rows
    report = {"checkpoint": args.checkpoint, "sentences_from": source, "clients": args.clients,
              "requests": args.requests, "lines_per_request": k, "beam_size": args.beam_size,
              "machine": describe_machine(), "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
              "rows": rows, "speedup_requests_per_s": round(on["requests_per_s"] / off["requests_per_s"], 2),
              "p95_ratio": round(on["p95_ms"] / off["p95_ms"], 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"nmt-serve load test: {args.clients} concurrent clients, {args.requests} requests of {k} sentence(s), "
             f"beam {args.beam_size}, checkpoint `{args.checkpoint}`, sentences from {source}; "
             f"machine: {report['machine']}.", "",
             "| mode | requests/s | sentences/s | p50 ms | p95 ms | p99 ms | mean batch (lines) | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['requests_per_s']} | {r['sentences_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['p99_ms']} | {r['mean_batch_lines']} | {r['errors']} |" for r in rows]
    lines += ["", f"Batching on / off: {report['speedup_requests_per_s']}x the requests/s, "
                  f"{report['p95_ratio']}x the p95 latency."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
