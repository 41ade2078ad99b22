"""nmt-shortlist CKPT -o OUT.ckpt [--k 50] [--frequent 100] [--set data.train=...]

Builds a vocabulary shortlist (nmt/shortlist.py) from the training pairs of the checkpoint's
config -- its prepared directory if it has one, else its data section, tokenised with the
checkpoint's own tokenizer and cleaned as in training -- and writes the checkpoint with it.
Decode with `--shortlist` (both engines); nmt-export writes it for CTranslate2 as vmap.txt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nmt.cli import UsageError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nmt-shortlist", description="Store a vocabulary shortlist in a checkpoint.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the checkpoint to write (may be CKPT itself)")
    p.add_argument("--k", type=int, default=50, help="target pieces per source piece (default 50)")
    p.add_argument("--frequent", type=int, default=100, help="most frequent target pieces, always candidates (default 100)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change the stored config's data settings, e.g. data.train=PATH (where the training data is now)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from nmt.checkpoint import read_stored_model, store_entry
        from nmt.config import from_dict
        from nmt.data import DataError, encode_and_clean, load_raw, open_prepared
        from nmt.shortlist import build_shortlist

        if args.k < 1 or args.frequent < 0:
            raise UsageError(f"--k must be >= 1 and --frequent >= 0 (got {args.k}, {args.frequent})")
        if any(not o.startswith("data.") for o in args.overrides):
            raise UsageError("--set changes data settings only (data.KEY=VALUE)")
        stored = read_stored_model(args.checkpoint)
        cfg = from_dict(stored.cfg.to_dict(), args.overrides)
        tok = stored.tokenizer
        start = time.perf_counter()
        prepared = Path(cfg.data.prepared_dir) if cfg.data.prepared_dir else None
        if prepared is not None and (prepared / "meta.json").is_file():
            ds, where = open_prepared(prepared).dataset, str(prepared)
        else:
            ds, _ = encode_and_clean(load_raw(cfg.data, "train"), tok, cfg.data)
            where = "data.train"
        if len(ds) == 0:
            raise DataError(f"{where}: no training pairs to build a shortlist from")
        pairs = ((s, t) for batch in ds.select_columns(["src_ids", "tgt_ids"]).iter(batch_size=10_000)
                 for s, t in zip(batch["src_ids"], batch["tgt_ids"]))
        shortlist = build_shortlist(pairs, src_vocab=tok.src_vocab_size, tgt_vocab=tok.tgt_vocab_size,
                                    k=args.k, n_frequent=args.frequent)
        store_entry(args.checkpoint, args.output, "shortlist", shortlist.state_dict())
        print(f"shortlist of {args.k} target pieces per source piece and {len(shortlist.frequent)} always "
              f"(the {args.frequent} most frequent and the special ones) from {len(ds):,} pairs of {where} "
              f"in {time.perf_counter() - start:.1f} s; written to {args.output}")
        return 0

    return run_cli("nmt-shortlist", body)


if __name__ == "__main__":
    sys.exit(main())
