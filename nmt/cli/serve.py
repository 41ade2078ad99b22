"""nmt-serve --checkpoint CKPT [--host 127.0.0.1] [--port 8080] [--batch-wait-ms 5] [...]

Serves one model over HTTP: POST /translate, GET /health, a page at / and the OpenAPI schema at
/docs. Needs the serve extra: pip install 'nmt[serve]'. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from nmt.cli import UsageError, add_dtype_flag, check_device, check_precision, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-serve", description="Serve a trained model over HTTP.")
    p.add_argument("--checkpoint", required=True,
                   help="a .ckpt written by nmt-train, or with --engine ctranslate2 a directory written by nmt-export")
    p.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch", help="as in nmt-translate")
    p.add_argument("--int8", action="store_true", help="8-bit weights, as in nmt-translate")
    add_dtype_flag(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the server)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its batch (default 5)")
    p.add_argument("--max-batch-lines", type=int, default=128, help="lines decoded together at most (default 128)")
    p.add_argument("--no-batching", action="store_true", help="decode every request alone (for comparison)")
    p.add_argument("--max-lines", type=int, default=64, help="lines per request; more is refused with 413 (default 64)")
    p.add_argument("--max-chars", type=int, default=20000,
                   help="characters per request; more is refused with 413 (default 20000)")
    p.add_argument("--max-beam-size", type=int, default=16, help="largest beam a request may ask for (default 16)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info)")
    return p.parse_args(argv)


def check_port(host: str, port: int) -> None:
    """Fail before loading the model when the address cannot be bound (taken, or not this machine's)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _body(args: argparse.Namespace) -> int:
    for flag, value, least in (("--port", args.port, 0), ("--max-lines", args.max_lines, 1),
                               ("--max-chars", args.max_chars, 1), ("--max-batch-lines", args.max_batch_lines, 1),
                               ("--max-beam-size", args.max_beam_size, 1), ("--batch-wait-ms", args.batch_wait_ms, 0)):
        if value < least or (flag == "--port" and value > 65535):
            raise UsageError(f"{flag} {value}: out of range")
    try:
        import uvicorn

        from nmt.serve import ServeOptions, create_app
    except ImportError as err:
        raise UsageError(f"nmt-serve needs the serve extra ({err.name} is missing): pip install 'nmt[serve]'") from None
    check_port(args.host, args.port)
    if args.engine == "torch":
        check_device(args.device)
    from nmt import Translator

    check_precision(args)
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device, engine=args.engine, int8=args.int8,
                                            dtype=args.dtype)
    options = ServeOptions(max_lines=args.max_lines, max_chars=args.max_chars, max_beam_size=args.max_beam_size,
                           batching=not args.no_batching, batch_wait_ms=args.batch_wait_ms,
                           max_batch_lines=args.max_batch_lines)
    app = create_app(translator, options, name=Path(args.checkpoint).name)
    print(f"nmt-serve: {translator.src_lang}->{translator.tgt_lang} from {args.checkpoint}, "
          f"http://{args.host}:{args.port}/ (batching {'off' if args.no_batching else f'{args.batch_wait_ms:g} ms'})",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
    uvicorn.Server(config).run()  # a bind failure after check_port: uvicorn logs it and exits 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("nmt-serve", lambda: _body(args))


if __name__ == "__main__":
    sys.exit(main())
