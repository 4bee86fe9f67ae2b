"""One way to train and evaluate every retrieval model of the papers on an interaction log
(spec/pipelines.md).

    trained = train("MIND+HN", interactions)          # the model's paper's protocol and settings
    metrics = evaluate(trained)                         # Metrics: HitRate@N, Precision@N, ... in %

- `MODELS`: every model by name (YouTube DNN, MIND, MIND+HN, ComiRec-DR(+HN), DSSM, UMI and its
  ablations, PGIN, ULIM and its ablations), with the paper it comes from, the pipelines that
  implement it, what it predicts and whether it reads the log's profile fields.
- A pipeline is one paper's experimental setting: how a training row's history is cut, the
  training budget, the metric. Its config type selects it: `ULIMPipelineConfig` (ULIM's windows,
  refimpl.pipelines.ulim and refimpl.pipelines.pgin; HR@N per target, the cascade from PGIN's
  routes for ULIM, top-K accuracy for PGIN) or `refimpl.pipelines.umi.UMIPipelineConfig` (histories
  truncated at T, served by UMI eq. 1; HitRate@N and Precision@N per request). A model implemented
  by both (YouTube DNN, MIND, MIND+HN) trains in the pipeline whose config is given.
- The protocol is the `Split` (refimpl.data.protocols): any split of the log works in either
  pipeline; without one, the pipeline's paper's protocol is used (leave-last-out for ULIM's,
  strong generalization with T = max_length and the config's seed for UMI's).
- Profile fields flow from the log into MIND, MIND+HN, DSSM, UMI and PGIN.

The per-model functions of refimpl.pipelines.ulim, .pgin and .umi are the implementation behind
this interface (and the ULIM demo's finer tables read their serving parts); this module is the
documented entry point.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from refimpl._check import BoolArray, require_choice, require_positive_int
from refimpl.category_baselines import top_k_accuracy
from refimpl.data.interactions import Interactions
from refimpl.data.protocols import Split, leave_last_out, strong_generalization
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.pipelines import pgin, ulim, umi
from refimpl.pipelines.evaluation import EvalConfig
from refimpl.pipelines.inputs import Samples, request_samples, samples_seen
from refimpl.pipelines.ulim import SequenceConfig
from refimpl.pipelines.umi import UMIPipelineConfig
from refimpl.train import Curve, TrainConfig, training_record

__all__ = [
    "MODELS",
    "PIPELINES",
    "Metrics",
    "ModelInfo",
    "TrainedModel",
    "ULIMPipelineConfig",
    "evaluate",
    "train",
]

ULIM_PIPELINE = "ulim"
UMI_PIPELINE = "umi"
PIPELINES = (ULIM_PIPELINE, UMI_PIPELINE)
"""The pipelines: ULIM's (config `ULIMPipelineConfig`) and UMI's (config `UMIPipelineConfig`)."""


@dataclass(frozen=True)
class ModelInfo:
    """What `MODELS` says about a model."""

    paper: str  # the paper whose tables it is in
    pipelines: tuple[str, ...]  # the PIPELINES implementing it; the first one trains it by default
    predicts: str  # "items" (retrieval) or "categories" (PGIN, ULIM's router)
    reads_profile: bool  # reads the log's user profile fields
    summary: str


_BOTH = (ULIM_PIPELINE, UMI_PIPELINE)
MODELS: dict[str, ModelInfo] = {
    "YouTube DNN": ModelInfo("ULIM, UMI", _BOTH, "items", False, "mean-pooled behaviours, one user vector"),
    "MIND": ModelInfo("ULIM, UMI", _BOTH, "items", True, "K capsule interests and the profile fields"),
    "MIND+HN": ModelInfo("UMI", (UMI_PIPELINE, ULIM_PIPELINE), "items", True,
                         "MIND trained with UMI's harder negatives (refimpl.nn.multi_interest_readout)"),
    "ComiRec-DR": ModelInfo("UMI", (UMI_PIPELINE,), "items", False, "per-position dynamic routing"),
    "ComiRec-DR+HN": ModelInfo("UMI", (UMI_PIPELINE,), "items", False, "ComiRec-DR with harder negatives"),
    "DSSM": ModelInfo("UMI", (UMI_PIPELINE,), "items", True, "a user tower over the profile fields only"),
    "UMI": ModelInfo("UMI", (UMI_PIPELINE,), "items", True,
                     "user-guided attention, capsule routing, interest refinement, harder negatives"),
    "UMI w/o DAR": ModelInfo("UMI", (UMI_PIPELINE,), "items", True, "UMI without the user-guided attention"),
    "UMI w/o IR": ModelInfo("UMI", (UMI_PIPELINE,), "items", True, "UMI without the interest refinement"),
    "UMI w/o HN": ModelInfo("UMI", (UMI_PIPELINE,), "items", True, "UMI with the standard readout"),
    "PGIN": ModelInfo("ULIM", (ULIM_PIPELINE,), "categories", True,
                      "the next category's distribution, ULIM's router"),
    "ULIM": ModelInfo("ULIM", (ULIM_PIPELINE,), "items", False,
                      "short-term and per-category long-term interests, served by the cascade from PGIN"),
    "ULIM-half-sequence": ModelInfo("ULIM", (ULIM_PIPELINE,), "items", False,
                                    "ULIM reading the most recent half of each category subsequence"),
    "ULIM-self-attention": ModelInfo("ULIM", (ULIM_PIPELINE,), "items", False,
                                     "ULIM with a self-attention long-term encoder"),
    "ULIM-catalogue-negatives": ModelInfo("ULIM", (ULIM_PIPELINE,), "items", False,
                                          "ULIM whose short-term loss draws negatives from the whole catalogue"),
}
"""Every model `train` knows, by name (UMI Table 2's models, UMI's ablations, then ULIM's)."""

# ULIM's variants as refimpl.pipelines.ulim.train_ulim's (long_encoder, long_input, short_negatives)
_ULIM_VARIANTS = {
    "ULIM": ("target", "whole", "in_category"),
    "ULIM-half-sequence": ("target", "recent_half", "in_category"),
    "ULIM-self-attention": ("self", "whole", "in_category"),
    "ULIM-catalogue-negatives": ("target", "whole", "catalogue"),
}


@dataclass(frozen=True)
class ULIMPipelineConfig:
    """ULIM's pipeline: the windows (`seq`), the training rule and sizes of every model (`train`;
    `train.seed` is the run's seed, PGIN's too), PGIN's size and budget (`pgin`), the evaluation's
    cut-offs, back end and seen-item policy (`evaluation`) and K, the number of PGIN's categories
    ULIM's cascade routes to (`num_routes`; PGIN's top-k accuracy is reported for k = 1..K).
    Checked at construction."""

    seq: SequenceConfig = field(default_factory=SequenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pgin: pgin.PGINTrainConfig = field(default_factory=pgin.PGINTrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    num_routes: int = 4

    def __post_init__(self) -> None:
        for name, kind in (("seq", SequenceConfig), ("train", TrainConfig), ("pgin", pgin.PGINTrainConfig),
                           ("evaluation", EvalConfig)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise TypeError(f"config.{name}: expected a {kind.__name__}, got {type(value).__name__}")
        require_positive_int("config.num_routes", self.num_routes)


PipelineConfig = ULIMPipelineConfig | UMIPipelineConfig
_CONFIGS: dict[str, type] = {ULIM_PIPELINE: ULIMPipelineConfig, UMI_PIPELINE: UMIPipelineConfig}


@dataclass(frozen=True)
class TrainedModel:
    """A model trained by `train`: its name, the log and split it trained on, the config (whose type
    says the pipeline), the pipeline's trained object (`model`: a refimpl.pipelines.ulim.Trained, a
    refimpl.pipelines.pgin.PGINRun or a refimpl.pipelines.umi.Trained), ULIM's router (the trained
    PGIN its cascade routes by) and the training record."""

    name: str
    interactions: Interactions
    split: Split
    config: PipelineConfig
    model: Any
    curve: Curve | pgin.PGINCurve
    seconds: float
    router: TrainedModel | None = None

    @property
    def pipeline(self) -> str:
        return ULIM_PIPELINE if isinstance(self.config, ULIMPipelineConfig) else UMI_PIPELINE

    def training_record(self) -> dict[str, float]:
        """The training run in numbers (`refimpl.train.training_record`)."""
        return training_record(self.curve, self.seconds)


@dataclass(frozen=True)
class Metrics:
    """A trained model measured on a split's requests: `values` maps a metric at a cut-off to its
    value in percent ("HR@10": ULIM's pipeline, one row per target; "HitRate@10", "Precision@10":
    UMI's, one row per request, UMI eq. 15-16; "Accuracy@2": PGIN's top-2 category accuracy);
    `protocol` says the protocol, T, the request counts and the seen-item policy."""

    model: str
    protocol: str
    values: dict[str, float]


def _check_pipeline(name: str, config: object) -> None:
    """The config is of a pipeline that implements the model."""
    info = MODELS[name]
    for pipeline, kind in _CONFIGS.items():
        if isinstance(config, kind):
            if pipeline not in info.pipelines:
                expected = " or ".join(_CONFIGS[p].__name__ for p in info.pipelines)
                raise TypeError(f"config: {name} is trained by a {expected}, got a {kind.__name__}")
            return
    raise TypeError(f"config: expected a ULIMPipelineConfig or a UMIPipelineConfig, got {type(config).__name__}")


def _check_split(interactions: Interactions, split: Split) -> Split:
    """The split must be one of this log's (train_end per user, requests inside the users' events)."""
    if not isinstance(split, Split):
        raise TypeError(f"split: expected a Split, got {type(split).__name__}")
    if split.train_end.shape != (interactions.num_users,):
        raise ValueError(f"train_end: expected shape ({interactions.num_users},) (one per user of the log), "
                         f"got {split.train_end.shape}")
    request_samples(interactions, split.validation)
    request_samples(interactions, split.test)
    return split


def _default_split(interactions: Interactions, config: PipelineConfig) -> Split:
    """The pipeline's paper's protocol: ULIM's leave-last-out, or UMI's strong generalization (the
    config's seed and T), as refimpl.pipelines.umi.prepare draws it."""
    if isinstance(config, ULIMPipelineConfig):
        return leave_last_out(interactions)
    umi.validate_pipeline_config(config)
    return strong_generalization(interactions, config.seed, config.max_length)


def train(
    name: str,
    interactions: Interactions,
    split: Split | None = None,
    config: PipelineConfig | None = None,
    *,
    router: TrainedModel | None = None,
    visit_start: BoolArray | None = None,
    stream: TextIO | None = sys.stderr,
) -> TrainedModel:
    """Train model `name` (a key of MODELS) on `interactions` under `split` by refimpl.train.fit.

    `config` selects the pipeline (its type) and its settings; None: the default config of the
    model's first pipeline. `split` None: the pipeline's paper's protocol. ULIM and its ablations
    route by a trained PGIN: `router` (a TrainedModel of "PGIN" on the same log), else one is
    trained first with the same config and split. `visit_start` (E,): the log's visit starts, PGIN's
    targets where the log marks visits (the synthetic data); else PGIN's targets are the category
    changes. Progress lines go to `stream` (None: silent)."""
    name = require_choice("name", name, tuple(MODELS))
    if not isinstance(interactions, Interactions):
        raise TypeError(f"interactions: expected an Interactions, got {type(interactions).__name__}")
    if config is None:
        config = _CONFIGS[MODELS[name].pipelines[0]]()
    _check_pipeline(name, config)
    if router is not None and name not in _ULIM_VARIANTS:
        raise ValueError(f"router: only ULIM and its ablations route by PGIN, got one for {name}")
    split = _default_split(interactions, config) if split is None else _check_split(interactions, split)
    if isinstance(config, UMIPipelineConfig):
        trained = umi.train_model(name, umi.prepare(interactions, config, split), config, stream)
        return TrainedModel(name, interactions, split, config, trained, trained.curve, trained.seconds)
    seq, cfg = config.seq, config.train
    if name == "PGIN":
        run = pgin.train_pgin(interactions, split, seq, replace(config.pgin, seed=cfg.seed), stream,
                              visit_start=visit_start)
        return TrainedModel(name, interactions, split, config, run, run.curve, run.curve.seconds)
    if name == "YouTube DNN":
        model = ulim.train_youtube_dnn(interactions, split, seq, cfg, stream)
    elif name in ("MIND", "MIND+HN"):
        readout = ReadoutConfig(mode="harder_negatives" if name == "MIND+HN" else "standard")
        model = ulim.train_mind(interactions, split, seq, cfg, stream, readout)
    else:
        if router is None:
            router = train("PGIN", interactions, split, config, visit_start=visit_start, stream=stream)
        elif not isinstance(router, TrainedModel) or router.name != "PGIN":
            raise TypeError(f"router: expected a TrainedModel of PGIN, got {getattr(router, 'name', router)!r}")
        elif router.model.config.num_categories != interactions.num_categories:
            raise ValueError(f"router: expected a PGIN over the log's {interactions.num_categories} categories, "
                             f"got {router.model.config.num_categories}")
        encoder, long_input, short_negatives = _ULIM_VARIANTS[name]
        model = ulim.train_ulim(interactions, split, seq, cfg, name=name, long_encoder=encoder,
                                long_input=long_input, stream=stream, short_negatives=short_negatives)
    return TrainedModel(name, interactions, split, config, model, model.curve, model.seconds, router)


REQUESTS = ("test", "validation")


def evaluate(
    trained: TrainedModel,
    interactions: Interactions | None = None,
    split: Split | None = None,
    requests: str = "test",
) -> Metrics:
    """Measure a trained model on the `requests` ("test" or "validation") of its split, or of
    another log and split (`interactions`, `split`: the same items and categories; a log without
    `split` is split by the pipeline's paper's protocol). The metric is the pipeline's (see
    Metrics); seen items are kept or excluded as the config says (UMI's pipeline excludes them by
    default, ULIM's keeps them)."""
    if not isinstance(trained, TrainedModel):
        raise TypeError(f"trained: expected a TrainedModel, got {type(trained).__name__}")
    require_choice("requests", requests, REQUESTS)
    config = trained.config
    if interactions is None:
        if split is not None:
            raise ValueError("split: a split of another log needs that log (interactions), got None")
        log, split = trained.interactions, trained.split
    else:
        if not isinstance(interactions, Interactions):
            raise TypeError(f"interactions: expected an Interactions, got {type(interactions).__name__}")
        log = interactions
        split = _default_split(log, config) if split is None else _check_split(log, split)
    if isinstance(config, UMIPipelineConfig):
        prepared = umi.prepare(log, config, split)
        if requests == "validation":
            prepared = replace(prepared, split=replace(prepared.split, test=prepared.split.validation))
        scores = umi.evaluate(trained.model, prepared, config)
        values = {**{f"HitRate@{n}": v for n, v in scores.hit_rate.items()},
                  **{f"Precision@{n}": v for n, v in scores.precision.items()}}
        return Metrics(trained.name, prepared.split.describe(config.seen), values)
    ev = config.evaluation
    held = request_samples(log, split.test if requests == "test" else split.validation)
    if held.size == 0:
        raise ValueError(f"requests: the split's {requests} requests are empty")
    protocol = split.describe(ev.seen)
    if trained.name == "PGIN":
        return Metrics(trained.name, protocol, _category_accuracy(trained, log, held, config))
    seen = samples_seen(log, held) if ev.seen == "excluded" else None
    if trained.name == "YouTube DNN":
        hit_rates = ulim.evaluate_youtube_dnn(trained.model, log, held, config.seq, ev, seen)
    elif trained.name in ("MIND", "MIND+HN"):
        hit_rates = ulim.evaluate_mind(trained.model, log, held, config.seq, ev, seen)
    else:
        assert trained.router is not None
        k = min(config.num_routes, log.num_categories)
        routes = pgin.pgin_routes(trained.router.model, log, held, config.seq, k, trained.model.long_input)
        serving = ulim.ulim_serving(trained.model, log, held, routes, config.seq, ev)
        hit_rates = serving.hit_rates(held.targets, ev, k, seen=seen)
    return Metrics(trained.name, protocol, {f"HR@{n}": 100.0 * v for n, v in hit_rates.items()})


def _category_accuracy(trained: TrainedModel, log: Interactions, held: Samples,
                       config: ULIMPipelineConfig) -> dict[str, float]:
    """PGIN's top-k accuracy (%) of the requests' target categories, k = 1..K."""
    k_max = min(config.num_routes, log.num_categories)
    top = pgin.pgin_routes(trained.model, log, held, config.seq, k_max).categories
    return {f"Accuracy@{k}": 100.0 * top_k_accuracy(top[:, :k], held.categories) for k in range(1, k_max + 1)}
