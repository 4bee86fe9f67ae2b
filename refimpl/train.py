"""The one training rule every model of every paper trains by (spec/demo.md#training).

- `fit`: Adam steps of a model's `step_fn` under the stopping rule of `TrainConfig`: the validation
  loss is measured every `eval_every` steps; when it has not fallen by more than `min_improvement`
  nats for `patience` measurements in a row, the learning rate is multiplied by `lr_factor` if it
  has been cut fewer than `lr_cuts` times (reduce-on-plateau, as PyTorch's ReduceLROnPlateau), else
  training stops; it stops at the cap in any case; the params at the lowest validation loss are
  kept. `lr_schedule` "cosine" decays the learning rate from `lr` towards 0 at the cap (on top of
  the cuts). The defaults (`lr_cuts` 0, "constant") are a constant learning rate. Every step's
  random draws (batch rows, negatives, routing logits) come from the one Generator `fit` hands to
  `step_fn`: a trainer holds no generator of its own, so a run is reproduced from its seed alone.
  `held` params are not updated for the first `hold_steps` steps; at the release they get Adam
  moments and a step count of their own, starting at zero (sharing the others' step count would
  bias-correct their fresh moments as if they were old: the first released steps would run at up
  to ~2.5x the learning rate).
- `Curve` and `report_line`: the training and validation losses next to the loss of a model that
  learned nothing (`chance_sampled_softmax` for a sampled softmax).
- `validation_subset`: which of a protocol's validation rows the validation loss reads (at most
  `validation_rows`, drawn from the seed).
- `seeded_rng`: the Generator of a seed and a stream (0 training, 1 validation subset, 2 validation
  negatives), so that the streams of one seed never share draws.

The per-paper trainers live in `refimpl.pipelines` (ULIM's in `refimpl.pipelines.ulim`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol, TextIO, runtime_checkable

import numpy as np

from refimpl._check import Array, IntArray, require_choice, require_int, require_positive_int, require_real
from refimpl.models._params import Params
from refimpl.nn.row_sparse import RowSparseGrad
from refimpl.optim import AdamConfig, adam_init, adam_update, check_gradients, lazy_adam_step
from refimpl.progress import Bar, task

__all__ = [
    "OPTIMIZERS",
    "Curve",
    "LossCurve",
    "StepFn",
    "TrainConfig",
    "ValidFn",
    "chance_sampled_softmax",
    "fit",
    "report_line",
    "scheduled_lr",
    "seeded_rng",
    "training_record",
    "validation_subset",
]


DTYPES = ("float64", "float32")  # TrainConfig.dtype
LR_SCHEDULES = ("constant", "cosine")  # TrainConfig.lr_schedule
OPTIMIZERS = ("adam", "lazy_adam")  # TrainConfig.optimizer (refimpl.optim)


@dataclass(frozen=True)
class TrainConfig:
    """What every model trains by: the same batch size, negatives, width, learning rate and the
    same stopping rule (see `fit`). Checked at construction."""

    steps: int = 300  # the cap on Adam steps
    eval_every: int = 50
    patience: int = 4
    min_improvement: float = 0.002
    validation_rows: int = 1024  # validation rows the validation loss reads (drawn from the seed)
    batch_size: int = 128
    num_negatives: int = 64
    dim: int = 32
    num_heads: int = 2
    num_interests: int = 4  # MIND's K
    lr: float = 3e-3
    lr_schedule: str = "constant"  # "cosine": lr * (1 + cos(pi * step / cap)) / 2
    lr_cuts: int = 0  # plateaus that cut the lr (by lr_factor) before one stops training
    lr_factor: float = 0.3  # what a cut multiplies the lr by
    seed: int = 0
    dtype: str = "float64"  # of ULIM's and YouTube DNN's params ("float32": the same mathematics, cheaper steps)
    # "lazy_adam": row-sparse gradients update only their rows (refimpl.optim.lazy_adam_step,
    # spec/optim.md#lazy-adam), so a step does not grow with the catalogue; other mathematics than "adam"
    optimizer: str = "adam"
    # > 0: the validation loss, the stopping rule and the params returned read an exponential moving
    # average of the trained params (Polyak averaging; TF's ExponentialMovingAverage(decay)), whose
    # loss does not jump with each step's noise (spec/demo.md#training); 0: the trained params
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every", "patience", "validation_rows", "batch_size",
                     "num_negatives", "dim", "num_heads", "num_interests"):
            require_positive_int(f"cfg.{name}", getattr(self, name))
        require_real("cfg.min_improvement", self.min_improvement, low=0.0)
        require_real("cfg.lr", self.lr, low=0.0, low_open=True)
        require_choice("cfg.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        require_int("cfg.lr_cuts", self.lr_cuts, low=0)
        if not 0.0 < require_real("cfg.lr_factor", self.lr_factor) < 1.0:
            raise ValueError(f"cfg.lr_factor: expected a factor in (0, 1), got {self.lr_factor!r}")
        require_int("cfg.seed", self.seed, low=0)
        require_choice("cfg.dtype", self.dtype, DTYPES)
        require_choice("cfg.optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 <= require_real("cfg.ema_decay", self.ema_decay) < 1.0:
            raise ValueError(f"cfg.ema_decay: expected a decay in [0, 1) (0: no average), got {self.ema_decay!r}")


def seeded_rng(seed: int, stream: int = 0) -> np.random.Generator:
    """The Generator of (`seed`, `stream`): PCG64 seeded with seed + stream (0: training draws,
    1: the validation subset, 2: the validation negatives drawn once)."""
    total = require_int("seed", seed, low=0) + require_int("stream", stream, low=0)
    return np.random.Generator(np.random.PCG64(total))


def validation_subset(num_rows: int, rows: int, seed: int) -> IntArray:
    """Which of `num_rows` validation rows the validation loss reads: all of them if at most
    `rows`, else `rows` of them drawn with `seeded_rng(seed, 1)`, ascending."""
    total = require_int("num_rows", num_rows, low=0)
    count = require_positive_int("rows", rows)
    if total <= count:
        return np.arange(total, dtype=np.int64)
    chosen: IntArray = np.sort(seeded_rng(seed, 1).choice(total, size=count, replace=False))
    return chosen.astype(np.int64)


def chance_sampled_softmax(positives: IntArray, negatives: IntArray) -> float:
    """The sampled-softmax loss of a model that learned nothing (every score equal): per row
    log(1 + the negatives kept after removing accidental hits), mean over rows.
    positives (B,), negatives (N,) item ids; B >= 1."""
    for name, ids in (("positives", positives), ("negatives", negatives)):
        if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{name}: expected an integer numpy array, got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.ndim != 1:
            raise ValueError(f"{name}: expected shape (n,), got {ids.shape}")
    if positives.shape[0] == 0:
        raise ValueError("positives: the batch is empty (B = 0); the level is a mean over rows")
    kept = (negatives[None, :] != positives[:, None]).sum(axis=1)
    return float(np.mean(np.log1p(kept)))


@dataclass(frozen=True)
class Curve:
    """A training run's losses: `train` per step; `valid` at `valid_steps` (step 0 = the init);
    `chance`: the loss of a model that learned nothing (every score equal, spec/demo.md#training);
    `best_step`: where the validation loss was lowest (the params kept); `stopped_early`: the rule
    stopped it before the cap; `lr`: the learning rate of the step each measurement follows (step
    0: the base rate); `cut_steps`: the measurements after which the plateau rule cut it."""

    train: list[float]
    valid_steps: list[int]
    valid: list[float]
    chance: float
    best_step: int
    stopped_early: bool
    lr: list[float] = field(default_factory=list)
    cut_steps: list[int] = field(default_factory=list)

    @property
    def best_valid(self) -> float:
        return self.valid[self.valid_steps.index(self.best_step)]


@runtime_checkable
class LossCurve(Protocol):
    """What `training_record` reads of a curve: `Curve`, and PGIN's curve, which has its own rule."""

    @property
    def train(self) -> list[float]: ...
    @property
    def valid_steps(self) -> list[int]: ...
    @property
    def valid(self) -> list[float]: ...
    @property
    def chance(self) -> float: ...
    @property
    def best_step(self) -> int: ...
    @property
    def stopped_early(self) -> bool: ...
    @property
    def best_valid(self) -> float: ...


def training_record(curve: LossCurve, seconds: float) -> dict[str, float]:
    """A training run in numbers, as the demos' JSON reports it: `seconds` (as given), the steps
    taken, the best step, whether the rule stopped it early (1.0) or the cap (0.0), the training loss
    (mean since the last validation), the validation loss at the init and at its best, and the
    learned-nothing level. Raises TypeError if `curve` is not a curve (a `LossCurve`)."""
    if not isinstance(curve, LossCurve):
        raise TypeError(f"curve: expected a Curve, got {type(curve).__name__}")
    require_real("seconds", seconds, low=0.0)
    steps = curve.valid_steps
    tail = curve.train[-(steps[-1] - steps[-2]):] if len(steps) > 1 else curve.train
    return {
        "seconds": round(float(seconds), 2),
        "steps": len(curve.train),
        "best_step": curve.best_step,
        "stopped_early": float(curve.stopped_early),
        "train_loss": round(float(np.mean(tail)), 4) if tail else float("nan"),
        "valid_loss_init": round(curve.valid[0], 4),
        "valid_loss_best": round(curve.best_valid, 4),
        "learned_nothing": round(curve.chance, 4),
    }


def report_line(name: str, step: int, cap: int, train: float, valid: float, chance: float,
                seconds: float, lr: float | None = None) -> str:
    """One progress line: the training loss (mean of the last steps), the validation loss and the
    learned-nothing level side by side; the learning rate when given."""
    require_int("step", step, low=0)
    require_int("cap", cap, low=0)
    for label, value in (("train", train), ("valid", valid), ("chance", chance), ("seconds", seconds)):
        require_real(label, value)
    rate = "" if lr is None else f" lr {require_real('lr', lr, low=0.0):.1e}"
    return (f"{name:>20} step {step:>5}/{cap} train {train:7.4f} valid {valid:7.4f} "
            f"(learned nothing {chance:7.4f}){rate} {seconds:6.1f}s")


def scheduled_lr(cfg: TrainConfig, step: int, cap: int, cuts: int) -> float:
    """The learning rate of `step` (1-based) of at most `cap`, after `cuts` plateau cuts:
    lr * lr_factor^cuts, times (1 + cos(pi (step - 1) / cap)) / 2 under the "cosine" schedule
    (the first step at the full rate, the last near 0)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    cap = require_positive_int("cap", cap)
    step = require_int("step", step, low=1)
    if step > cap:
        raise ValueError(f"step: expected at most cap = {cap}, got {step}")
    rate = cfg.lr * cfg.lr_factor ** require_int("cuts", cuts, low=0)
    if cfg.lr_schedule == "cosine":
        rate *= 0.5 * (1.0 + float(np.cos(np.pi * (step - 1) / cap)))
    return rate


StepFn = Callable[[Params, np.random.Generator], tuple[float, Mapping[str, Array | RowSparseGrad]]]
"""One training step: (params, the Generator to draw the batch from) -> (loss, grads); a
row-sparse gradient (RowSparseGrad) needs TrainConfig.optimizer "lazy_adam"."""
ValidFn = Callable[[Params], float]
"""The validation loss of params (deterministic: its random draws are made once, beforehand)."""


def fit(
    name: str,
    params: Params,
    step_fn: StepFn,
    valid_fn: ValidFn,
    chance: float,
    cfg: TrainConfig,
    steps: int,
    rng: np.random.Generator,
    stream: TextIO | None = sys.stderr,
    held: Collection[str] = (),
    hold_steps: int = 0,
) -> tuple[Params, Curve]:
    """Adam steps of `step_fn` under the stopping rule of TrainConfig, at most `steps`; every
    step's batch is drawn from `rng`. The params named in `held` keep their values for the first
    `hold_steps` steps (their gradients are ignored) and then train with an Adam state of their own
    (moments and bias correction from zero at the release). With cfg.ema_decay = d > 0 every
    measurement reads the moving average of the trained params, a_1 = p_1, a_t = d a_{t-1} + (1 - d)
    p_t (the trained params themselves when d = 0). Returns the measured params at the lowest
    validation loss, and the curve. With cfg.optimizer "lazy_adam" the update works in place on
    copies of `params` (the caller's arrays are never written) and the best params are copied when
    they are kept. A loss from `step_fn` that is not a finite real number is refused at its step."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    steps = require_positive_int("steps", steps)
    require_real("chance", chance)
    hold_steps = require_int("hold_steps", hold_steps, low=0)
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    if isinstance(held, str) or not isinstance(held, Iterable):
        raise TypeError(f"held: expected a collection of param names, got {held!r}")
    held = tuple(held)  # read once: a generator would be empty by the time the groups are formed
    if not all(isinstance(n, str) for n in held):
        raise TypeError(f"held: expected a collection of param names, got {held!r}")
    unknown = sorted(set(held) - set(params))
    if unknown:
        raise ValueError(f"held: expected names of params ({sorted(params)}), got unknown {unknown}")
    lazy = cfg.optimizer == "lazy_adam"
    if lazy:
        params = _copied(params)
    # one Adam state per group: the free params, then (if any) the held ones, fresh at their release
    groups = [[n for n in params if n not in held], [n for n in params if n in held]]
    groups = [g for g in groups if g]
    states = [adam_init({n: params[n] for n in g}) for g in groups]
    frozen = len(groups) - 1 if held and hold_steps else -1  # the held group's index, if any is held
    start = time.perf_counter()
    best_params, best_step, best = _copied(params) if lazy else params, 0, valid_fn(params)
    curve = Curve([], [0], [best], chance, 0, False, [cfg.lr], [])
    waited = cuts = 0
    averaged: Params = {}  # the moving average of the trained params (cfg.ema_decay > 0), from step 1
    adam = AdamConfig(lr=scheduled_lr(cfg, 1, steps, cuts))
    # a bar on a terminal (its status the latest report line); off a terminal one line per measurement
    with nullcontext(Bar()) if stream is None else task(name, total=steps, unit="step", stream=stream) as bar:
        for step in range(1, steps + 1):
            if cfg.lr_schedule != "constant":
                adam = AdamConfig(lr=scheduled_lr(cfg, step, steps, cuts))
            loss, grads = step_fn(params, rng)
            if isinstance(loss, bool) or not isinstance(loss, int | float | np.integer | np.floating):
                raise TypeError(f"step_fn: expected a real loss at step {step}, got {loss!r}")
            if not np.isfinite(loss):
                raise ValueError(f"step_fn: expected a finite loss at step {step}, got {loss!r}")
            if set(grads) != set(params):
                raise ValueError(f"step_fn: expected gradients keyed as the params ({sorted(params)}), "
                                 f"got {sorted(grads)}")
            # every gradient's kind at every step, a held param's too: not first at its release
            dense = None if lazy else _dense(grads)
            updated = dict(params)
            for index, names in enumerate(groups):
                if index == frozen and step <= hold_steps:
                    continue
                group = {n: params[n] for n in names}
                if dense is None:
                    part, states[index] = lazy_adam_step(group, {n: grads[n] for n in names}, states[index], adam)
                else:
                    # the params and states were checked at their init (adam_init) and are the
                    # previous update's since; the gradients are new every step
                    check_gradients(group, {n: dense[n] for n in names})
                    part, states[index] = adam_update(group, {n: dense[n] for n in names}, states[index], adam)
                updated.update(part)
            params = updated
            if cfg.ema_decay:
                averaged = _moving_average(averaged, params, cfg.ema_decay)
            curve.train.append(loss)
            bar.advance()
            if step % cfg.eval_every and step != steps:
                continue
            measured = averaged if cfg.ema_decay else params
            valid = valid_fn(measured)
            curve.valid_steps.append(step)
            curve.valid.append(valid)
            curve.lr.append(adam.lr)
            line = report_line(name, step, steps, float(np.mean(curve.train[-cfg.eval_every:])),
                               valid, chance, time.perf_counter() - start,
                               None if cfg.lr_cuts == 0 and cfg.lr_schedule == "constant" else adam.lr)
            if bar.shown:
                bar.status(line)
            elif stream is not None:
                stream.write(line + "\n")
                stream.flush()
            if valid < best - cfg.min_improvement:
                best_params, best_step, best, waited = _copied(measured) if lazy else measured, step, valid, 0
            elif valid < best:
                best_params, best_step, best = _copied(measured) if lazy else measured, step, valid
                waited += 1
            else:
                waited += 1
            if waited >= cfg.patience:
                if cuts == cfg.lr_cuts:
                    return best_params, replace(curve, best_step=best_step, stopped_early=step < steps)
                # a plateau: a smaller step lets Adam settle where the larger one jumped about
                cuts, waited = cuts + 1, 0
                curve.cut_steps.append(step)
                adam = AdamConfig(lr=scheduled_lr(cfg, min(step + 1, steps), steps, cuts))
    return best_params, replace(curve, best_step=best_step)


def _moving_average(averaged: Params, params: Params, decay: float) -> Params:
    """d a + (1 - d) p per param, as new arrays; a copy of `params` when there is no average yet
    (`averaged` empty: lazy Adam writes into `params`)."""
    if not averaged:
        return _copied(params)
    return {name: decay * averaged[name] + (1.0 - decay) * value for name, value in params.items()}


def _copied(params: Params) -> Params:
    """A copy of every array: lazy Adam writes into the arrays it is given."""
    return {name: value.copy() for name, value in params.items()}


def _dense(grads: Mapping[str, Array | RowSparseGrad]) -> Params:
    """step_fn's gradients as arrays, for dense Adam; a row-sparse one is refused, naming step_fn."""
    sparse = sorted(name for name, g in grads.items() if isinstance(g, RowSparseGrad))
    if sparse:
        raise TypeError(f"step_fn: the gradients of {sparse} are row-sparse (RowSparseGrad); cfg.optimizer "
                        f"'adam' updates dense gradients, 'lazy_adam' row-sparse ones")
    return {name: g for name, g in grads.items() if not isinstance(g, RowSparseGrad)}
