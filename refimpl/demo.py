"""`refimpl demo`: ULIM end to end on planted-interest data, and the paper's tables (spec/demo.md).

Builds the synthetic data (refimpl.data.synthetic), trains every model with the same budget
(refimpl.train): YouTube DNN, MIND, ULIM, ULIM-half-sequence, ULIM-self-attention and PGIN;
retrieves by the cascade (ULIM) or by whole-pool search (the baselines); prints
- Table 1 (ULIM paper): HR@N at three cut-offs for YouTube DNN, MIND and ULIM;
- Table 2: the ablations;
- HR against K, the number of PGIN categories (a text table, and a PNG with --plot when
  matplotlib is installed: `pip install refimpl[plot]`);
and writes every number to a JSON file. The cut-offs are the paper's 500/1000/2000 scaled to the
catalogue (50/100/200 of 20,000 items; 20/40/80 of 1,000 with --quick).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from refimpl._check import IntArray
from refimpl.data.synthetic import QUICK_CONFIG, SyntheticConfig, SyntheticData, generate
from refimpl.threads import blas_threads
from refimpl.train import (
    EvalConfig,
    Samples,
    SequenceConfig,
    TrainConfig,
    Trained,
    category_subsequences,
    evaluate_mind,
    evaluate_ulim,
    evaluate_youtube_dnn,
    heldout_samples,
    pgin_top_categories,
    train_mind,
    train_pgin,
    train_ulim,
    train_youtube_dnn,
    training_samples,
)

PAPER_CUTOFFS = (500, 1000, 2000)
PAPER_TABLE_1: dict[str, tuple[float, ...]] = {
    "YouTube DNN": (4.95, 9.53, 14.93),
    "MIND": (5.03, 9.66, 15.15),
    "ULIM": (6.02, 10.76, 16.55),
}
"""ULIM Table 1 (Taobao): HR@500/1000/2000 in percent."""


@dataclass(frozen=True)
class DemoConfig:
    data: SyntheticConfig
    seq: SequenceConfig
    train: TrainConfig
    cutoffs: tuple[int, ...]
    num_routes: int  # K of Tables 1 and 2
    k_values: tuple[int, ...]  # the K of the sensitivity table
    backend: str = "hnsw"


DEFAULT = DemoConfig(
    data=replace(SyntheticConfig(), num_users=1_000, num_items=5_000),
    seq=SequenceConfig(
        short_length=100, long_length=2_000, max_subsequence=128, mind_length=100,
        pgin_long_length=50, pgin_short_length=20, pgin_history=50,
    ),
    train=TrainConfig(
        steps=200, batch_size=64, num_negatives=64, dim=32, num_heads=2, num_interests=4,
        lr=1e-2, pgin_steps=300, pgin_dim=16,
    ),
    cutoffs=(50, 100, 200),
    num_routes=4,
    k_values=(1, 2, 3, 4, 6, 8),
)
"""The default run: the default process (50 categories, sequences of 1,500-2,000 events) with
1,000 users and 5,000 items, sized to finish in under 5 minutes on 2 cores in pure NumPy. With
the data's default 20,000 items, 200 steps of 64 rows show each item's id to the loss less than
once as a positive and the in-category loss does not move (spec/demo.md); `--items 20000` runs it."""

QUICK = DemoConfig(
    data=QUICK_CONFIG,
    seq=SequenceConfig(
        short_length=20, long_length=400, max_subsequence=64, mind_length=50,
        pgin_long_length=50, pgin_short_length=10, pgin_history=10,
    ),
    train=TrainConfig(
        steps=150, batch_size=64, num_negatives=32, dim=16, num_heads=2, num_interests=4,
        lr=1e-2, pgin_steps=60, pgin_dim=16,
    ),
    cutoffs=(20, 40, 80),
    num_routes=4,
    k_values=(1, 2, 4, 6),
    backend="exact",
)
"""`--quick`: 400 users, 20 categories, 1,000 items, sequences of 350-400 events."""


@dataclass
class Run:
    """Everything the demo measured."""

    config: dict[str, Any]
    data: dict[str, Any]
    table1: dict[str, dict[str, float]] = field(default_factory=dict)
    table2: dict[str, dict[str, float]] = field(default_factory=dict)
    given_category: dict[str, dict[str, float]] = field(default_factory=dict)
    hr_vs_k: dict[str, dict[str, float]] = field(default_factory=dict)
    pgin: dict[str, float] = field(default_factory=dict)
    training: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def _data_summary(data: SyntheticData, cfg: DemoConfig) -> dict[str, Any]:
    held = heldout_samples(data)
    cats = held.categories[:, None]
    _, full = category_subsequences(data, held, cats, cfg.seq, cfg.seq.long_length)
    _, half = category_subsequences(data, held, cats, cfg.seq, cfg.seq.long_length // 2)
    _, short = category_subsequences(data, held, cats, cfg.seq, cfg.seq.short_length)
    return {
        "users": data.num_users,
        "items": data.num_items,
        "categories": data.num_categories,
        "events": int(data.events.shape[0]),
        "mean_length": float(data.lengths().mean()),
        "target_category_in_short_sequence": float(short.any(axis=2).mean()),
        "target_category_in_half_sequence": float(half.any(axis=2).mean()),
        "target_category_in_full_sequence": float(full.any(axis=2).mean()),
    }


def _percent(hr: dict[int, float]) -> dict[str, float]:
    return {str(n): round(100.0 * v, 2) for n, v in hr.items()}


def _training(model: Trained) -> dict[str, float]:
    head = float(np.mean(model.losses[:10]))
    tail = float(np.mean(model.losses[-10:]))
    return {"seconds": round(model.seconds, 2), "first_loss": head, "last_loss": tail}


@dataclass(frozen=True)
class _Setting:
    """What every stage of a run reads: the config, the data, the training samples and the
    held-out targets, how to evaluate, and where progress goes."""

    cfg: DemoConfig
    data: SyntheticData
    samples: Samples
    held: Samples
    ev: EvalConfig
    stream: TextIO | None


def run(cfg: DemoConfig, stream: TextIO | None = sys.stderr) -> Run:
    """Generate, train, retrieve, measure."""
    start = time.perf_counter()
    data = generate(cfg.data)
    setting = _Setting(
        cfg, data, training_samples(data, cfg.seq), heldout_samples(data),
        EvalConfig(cutoffs=cfg.cutoffs, backend=cfg.backend), stream,
    )
    result = Run(config=asdict(cfg), data=_data_summary(data, cfg))
    routes, half_routes = _pgin_routes(setting, result)
    _baselines(setting, result)
    _ulim_variants(setting, result, routes, half_routes)
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def _pgin_routes(setting: _Setting, result: Run) -> tuple[IntArray, IntArray]:
    """Trains PGIN, records its top-K accuracy; PGIN's top categories (S, max K) reading the whole
    long sequence and reading its recent half (ULIM-half-sequence's routes)."""
    cfg, data, held = setting.cfg, setting.data, setting.held
    pgin = train_pgin(data, setting.samples, cfg.seq, cfg.train, setting.stream)
    max_k = min(max((cfg.num_routes, *cfg.k_values)), data.num_categories)
    routes = pgin_top_categories(pgin, data, held, cfg.seq, max_k)
    half = cfg.seq.long_length // 2
    half_routes = pgin_top_categories(pgin, data, held, cfg.seq, max_k, long_length=half)
    result.training["PGIN"] = _training(pgin)
    for k in sorted({cfg.num_routes, *cfg.k_values}):
        hit = np.any(routes[:, : min(k, max_k)] == held.categories[:, None], axis=1)
        result.pgin[f"top{k}_accuracy"] = round(100.0 * float(hit.mean()), 2)
    return routes, half_routes


def _baselines(setting: _Setting, result: Run) -> None:
    """Trains and evaluates YouTube DNN and MIND (Table 1)."""
    cfg, data, held = setting.cfg, setting.data, setting.held
    youtube = train_youtube_dnn(data, setting.samples, cfg.seq, cfg.train, setting.stream)
    result.training["YouTube DNN"] = _training(youtube)
    result.table1["YouTube DNN"] = _percent(
        evaluate_youtube_dnn(youtube, data, held, cfg.seq, setting.ev)
    )
    mind = train_mind(data, setting.samples, cfg.seq, cfg.train, setting.stream)
    result.training["MIND"] = _training(mind)
    result.table1["MIND"] = _percent(evaluate_mind(mind, data, held, cfg.seq, setting.ev))


def _ulim_variants(setting: _Setting, result: Run, routes: IntArray, half_routes: IntArray) -> None:
    """Trains and evaluates ULIM and its ablations (Tables 1 and 2, HR against K, and each
    given the true next category)."""
    cfg, data, held = setting.cfg, setting.data, setting.held
    k = min(cfg.num_routes, routes.shape[1])
    variants = (
        ("ULIM", "target", cfg.seq.long_length, routes),
        ("ULIM-half-sequence", "target", cfg.seq.long_length // 2, half_routes),
        ("ULIM-self-attention", "self", cfg.seq.long_length, routes),
    )
    for name, encoder, length, variant_routes in variants:
        model = train_ulim(
            data, setting.samples, cfg.seq, cfg.train, name=name, long_encoder=encoder,
            long_length=length, stream=setting.stream,
        )
        result.training[name] = _training(model)
        hr = _percent(evaluate_ulim(model, data, held, variant_routes[:, :k], cfg.seq, setting.ev))
        result.table2[name] = hr
        if variant_routes is not routes:
            result.table2[f"{name} (ULIM's routes)"] = _percent(
                evaluate_ulim(model, data, held, routes[:, :k], cfg.seq, setting.ev)
            )
        if name == "ULIM":
            result.table1[name] = hr
            result.hr_vs_k = _hr_vs_k(model, setting, routes)
        result.given_category[name] = _percent(
            evaluate_ulim(model, data, held, held.categories[:, None], cfg.seq, setting.ev)
        )


def _hr_vs_k(model: Trained, setting: _Setting, routes: IntArray) -> dict[str, dict[str, float]]:
    table = {}
    for k in setting.cfg.k_values:
        top_k = routes[:, : min(k, routes.shape[1])]
        table[str(k)] = _percent(
            evaluate_ulim(model, setting.data, setting.held, top_k, setting.cfg.seq, setting.ev)
        )
    return table


def _row(name: str, values: dict[str, float], width: int) -> str:
    return f"{name:<{width}}" + "".join(f"{v:>10.2f}" for v in values.values())


def _table(title: str, rows: dict[str, dict[str, float]], label: str = "HR@") -> str:
    if not rows:
        return ""
    width = max(len(name) for name in rows) + 2
    cutoffs = next(iter(rows.values())).keys()
    header = f"{'':<{width}}" + "".join(f"{label + c:>10}" for c in cutoffs)
    lines = [title, header, "-" * len(header)]
    lines += [_row(name, values, width) for name, values in rows.items()]
    return "\n".join(lines)


def format_report(result: Run) -> str:
    """The tables as text (HR in percent)."""
    paper = {
        name: dict(zip([str(c) for c in PAPER_CUTOFFS], values, strict=True))
        for name, values in PAPER_TABLE_1.items()
    }
    k = result.config["num_routes"]
    hr_vs_k = {f"K = {kk}": row for kk, row in result.hr_vs_k.items()}
    data = result.data
    parts = [
        f"data: {data['users']} users, {data['items']} items, {data['categories']} categories, "
        f"{data['events']} events (mean length {data['mean_length']:.0f}); the held-out item's "
        f"category occurs in the short / half / full sequence for "
        f"{100 * data['target_category_in_short_sequence']:.1f} / "
        f"{100 * data['target_category_in_half_sequence']:.1f} / "
        f"{100 * data['target_category_in_full_sequence']:.1f}% of users",
        _table(f"Table 1: HR@N (%), ULIM with PGIN's top-{k} categories", result.table1),
        _table("         the paper's Table 1 (Taobao, HR@500/1000/2000)", paper),
        _table(f"Table 2: ablations, HR@N (%), top-{k} categories", result.table2),
        _table(
            "Given the true next category (one route, no PGIN): the long-term encoder alone",
            result.given_category,
        ),
        _table("ULIM: HR@N (%) against K, the number of PGIN categories", hr_vs_k),
        "PGIN top-K accuracy (%): "
        + ", ".join(f"{name} {value:.1f}" for name, value in result.pgin.items()),
        f"total {result.seconds:.1f} s",
    ]
    return "\n\n".join(part for part in parts if part)


def save_plot(result: Run, path: Path) -> bool:
    """HR@N against K as a PNG; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ks = [int(k) for k in result.hr_vs_k]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for cutoff in result.config["cutoffs"]:
        axes.plot(ks, [result.hr_vs_k[str(k)][str(cutoff)] for k in ks], marker="o",
                  label=f"HR@{cutoff}")
    axes.set_xlabel("K (PGIN categories)")
    axes.set_ylabel("HR@N (%)")
    axes.set_title("ULIM: sensitivity to K")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refimpl demo",
        description="Train ULIM, its ablations and the baselines on planted-interest data and "
        "print the ULIM paper's tables.",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (about 20 s)")
    parser.add_argument("--out", default="results.json", help="JSON results file")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--plot", default=None, help="PNG of HR against K (needs matplotlib)")
    parser.add_argument(
        "--backend", choices=("exact", "hnsw"), default=None,
        help="retrieval back end (default: hnsw, exact with --quick)",
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--users", type=int, default=None, help="override the number of users")
    parser.add_argument("--items", type=int, default=None, help="override the number of items")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    return parser


def config_for(args: argparse.Namespace) -> DemoConfig:
    """The demo config the command-line options select."""
    cfg = QUICK if args.quick else DEFAULT
    data = replace(cfg.data, seed=args.seed)
    if args.users is not None:
        data = replace(data, num_users=args.users)
    if args.items is not None:
        data = replace(data, num_items=args.items)
    train = replace(cfg.train, seed=args.seed)
    if args.steps is not None:
        train = replace(train, steps=args.steps)
    cfg = replace(cfg, data=data, train=train)
    return cfg if args.backend is None else replace(cfg, backend=args.backend)


def main(argv: list[str]) -> int:
    """The `refimpl demo` command; returns the exit status."""
    args = _parser().parse_args(argv)
    cfg = config_for(args)
    with blas_threads(args.threads):
        result = run(cfg)
    print(format_report(result))
    Path(args.out).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    print(f"\nresults written to {args.out}")
    if args.plot is not None:
        if save_plot(result, Path(args.plot)):
            print(f"plot written to {args.plot}")
        else:
            print("plot skipped: matplotlib is not installed (pip install refimpl[plot])",
                  file=sys.stderr)
    return 0
