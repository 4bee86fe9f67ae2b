"""Benchmark the Taobao user-behaviour loader (spec/data_model.md#loaders) on a generated file.

    python tools/bench_loaders.py generate PATH [--lines 10000000] [--seed 0]
    python tools/bench_loaders.py load PATH --backend {arrow,numpy} [--stage {parse,model}]

`generate` writes a file in the public release's layout (`user,item,category,behaviour,timestamp`, about
a million users, four million items, nine thousand categories, behaviours pv/buy/cart/fav at 89/2/6/3%,
nine days of timestamps), a million lines at a time. `load` reads it once and prints the lines per
second: `--stage parse` stops at the parsed columns (`read_taobao_columns`), `--stage model` builds the
`Interactions` too (`load_taobao`: re-indexing and the per-user time sort). Run `load` under
`/usr/bin/time -v` for the peak memory (its "Maximum resident set size"); one process per measurement,
so each peak is its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refimpl.data.loaders import TAOBAO_BEHAVIOURS, load_taobao, read_taobao_columns  # noqa: E402

BLOCK = 1_000_000


def generate(path: Path, lines: int, seed: int) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    behaviours = np.array(TAOBAO_BEHAVIOURS)
    with path.open("w") as out:
        for start in range(0, lines, BLOCK):
            n = min(BLOCK, lines - start)
            items = rng.integers(1, 5_000_000, n)
            columns = (
                rng.integers(1, 1_000_000, n).astype(str),
                items.astype(str),
                (items % 9_000 + 1).astype(str),
                behaviours[rng.choice(4, size=n, p=[0.89, 0.02, 0.06, 0.03])],
                rng.integers(1_511_539_200, 1_512_316_800, n).astype(str),
            )
            rows = columns[0]
            for column in columns[1:]:
                rows = np.char.add(np.char.add(rows, ","), column)
            out.write("\n".join(rows.tolist()))
            out.write("\n")


def load(path: Path, backend: str, stage: str) -> None:
    begin = time.perf_counter()
    if stage == "parse":
        count = read_taobao_columns(path, backend=backend).users.shape[0]
    else:
        count = load_taobao(path, backend=backend).num_events
    seconds = time.perf_counter() - begin
    print(f"backend={backend} stage={stage} lines={count} seconds={seconds:.2f} "
          f"lines_per_second={count / seconds:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate")
    make.add_argument("path", type=Path)
    make.add_argument("--lines", type=int, default=10_000_000)
    make.add_argument("--seed", type=int, default=0)
    read = commands.add_parser("load")
    read.add_argument("path", type=Path)
    read.add_argument("--backend", choices=("arrow", "numpy"), required=True)
    read.add_argument("--stage", choices=("parse", "model"), default="model")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.path, args.lines, args.seed)
    else:
        load(args.path, args.backend, args.stage)


if __name__ == "__main__":
    main()
