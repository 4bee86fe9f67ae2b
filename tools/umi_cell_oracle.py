"""How high can HitRate@N go on the UMI demo's data? A non-learned score that knows what the models
must learn (spec/umi.md, "Results").

For each test user of a seed of `refimpl demo umi`'s data, the user's own history events are those
whose item's audience is the user's `audience` field (spec/data.md (P6): exactly the events UMI's
gate should keep). Each item scores by the share of those events in its cell (category, style,
audience) times its share of the cell's training events (P(item | cell), counted as the baselines
count popularity), ties to global popularity; seen items excluded, as the demo serves. It needs
the planted item audiences and styles (which no model reads), so it is a reference level, not a
baseline: at a cut-off where it and the models are level, the data leave no room for an ordering.

    PYTHONPATH=. python tools/umi_cell_oracle.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from refimpl.data.synthetic_profiles import generate_profile_data
from refimpl.demos.umi import DEFAULT
from refimpl.pipelines.umi import _metrics, prepare


def oracle_hit_rates(seed: int) -> dict[int, float]:
    data = generate_profile_data(replace(DEFAULT.data, seed=seed))
    log = data.interactions
    cfg = replace(DEFAULT.pipeline, seed=seed)
    prepared = prepare(log, cfg)
    split, test = prepared.split, prepared.split.test
    cells = (log.item_category * DEFAULT.data.num_styles + data.item_style) * DEFAULT.data.num_audiences \
        + data.item_audience
    num_cells = DEFAULT.data.num_categories * DEFAULT.data.num_styles * DEFAULT.data.num_audiences
    owner = log.event_users()
    training = np.arange(log.num_events) < split.train_end[owner]
    counts = np.bincount(log.items[training], minlength=log.num_items).astype(np.float64)
    in_cell = counts / np.maximum(np.bincount(cells, weights=counts, minlength=num_cells), 1.0)[cells]
    audience = log.profile["audience"]
    scores = np.zeros((test.num_rows, log.num_items))
    for row in range(test.num_rows):
        items = log.items[test.history_start[row]:test.history_end[row]]
        own = items[data.item_audience[items] == audience[test.users[row]]]
        shares = np.bincount(cells[own], minlength=num_cells) / max(own.shape[0], 1)
        scores[row] = shares[cells] * in_cell + 1e-9 * counts / counts.max()
    return _metrics(prepared, scores, cfg).hit_rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds: expected seeds >= 0, got {args.seeds}")
    rows = {seed: oracle_hit_rates(seed) for seed in args.seeds}
    cutoffs = sorted(next(iter(rows.values())))
    print("own-event cell share x in-cell popularity, HitRate@N (%) per seed")
    print("seed " + "".join(f"{'HR@' + str(n):>9}" for n in cutoffs))
    for seed, hit in rows.items():
        print(f"{seed:>4} " + "".join(f"{hit[n]:>9.2f}" for n in cutoffs))
    means = {n: np.mean([hit[n] for hit in rows.values()]) for n in cutoffs}
    print("mean " + "".join(f"{means[n]:>9.2f}" for n in cutoffs))


if __name__ == "__main__":
    main()
