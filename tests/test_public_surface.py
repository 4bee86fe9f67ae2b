"""Every public function refuses bad input clearly (spec/conventions.md), tried over the whole surface.

The surface is generated, not hand-listed: `public_modules()` walks the package, and
`public_functions()` takes every function in a module's `__all__` and every public method of a class
there. A valid call of each is recorded, arguments and all, while the golden cases and `_valid_calls`
run (a profiler hook sees every call); `test_every_public_function_has_a_recorded_call` fails for a
new public function nothing calls, so a new function is covered by default.

Each recorded call is then replayed with one argument spoiled by one bad-input kind (wrong rank,
wrong dtype, NaN/inf, a list, an empty batch or sequence, an out-of-range id, a bad config value).
An outcome is clear when the call raises ValueError/TypeError whose message names the spoiled
argument (the parameter, the dict key or the dataclass field), or, for the kinds a function may
legitimately accept (a rank change, an empty batch, an id, NaN in a position it ignores, an
integer config value at its edge), when it returns a result with no NaN and no numpy warning.
Anything else (an IndexError, numpy's reshape message, a silently cast dtype, a NaN) is reported.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pkgutil
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refimpl
from refimpl.cases import all_cases, reference_components

# Packages and modules that are tooling with their own contracts (golden files, conformance, the
# case registry, the CLI, the gradient checker) or private by their leading underscore.
TOOLING = (
    "refimpl.golden",
    "refimpl.conformance",
    "refimpl.cases",
    "refimpl.cli",
    "refimpl.gradcheck",
)


def public_modules() -> list[str]:
    """Every module of refimpl that is not a package, not tooling and not private."""
    return sorted(
        m.name
        for m in pkgutil.walk_packages(refimpl.__path__, "refimpl.")
        if not m.ispkg
        and not m.name.startswith(TOOLING)
        and not any(part.startswith("_") for part in m.name.split("."))
    )


PUBLIC_MODULES = tuple(public_modules())


def public_functions() -> dict[types.CodeType, tuple[str, Callable[..., Any]]]:
    """Every public function and public method of the public modules, by code object."""
    found: dict[types.CodeType, tuple[str, Callable[..., Any]]] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[obj.__code__] = (f"{module_name}.{name}", obj)
            elif inspect.isclass(obj) and not getattr(obj, "_is_protocol", False):
                for attr, member in vars(obj).items():
                    fn = member.__func__ if isinstance(member, classmethod | staticmethod) else member
                    if not attr.startswith("_") and inspect.isfunction(fn):
                        found[fn.__code__] = (f"{module_name}.{name}.{attr}", fn)
    return found


def _valid_calls(recorded: dict[str, tuple[Callable[..., Any], dict[str, Any]]]) -> None:
    """Valid calls of the public functions the golden cases do not reach (some reuse the
    arguments of a recorded call)."""
    from refimpl.data.batching import BatchingConfig, category_batches, check_batching_config
    from refimpl.models.comirec import comirec_backward, comirec_forward, comirec_loss
    from refimpl.models.dssm import dssm_backward, dssm_forward, dssm_loss
    from refimpl.models.ifa import rank_candidates
    from refimpl.models.mind import mind_backward, mind_forward, mind_loss
    from refimpl.models.pgin import pgin_loss_and_grads, top_k_categories
    from refimpl.models.ulim import (
        ULIMConfig,
        category_subsequence,
        encode_for_serving,
        encode_forward,
        ulim_init,
    )
    from refimpl.models.umi import draw_initial_logits, umi_backward, umi_forward, umi_loss
    from refimpl.models.youtube_dnn import (
        YouTubeDNNConfig,
        youtube_dnn_init,
        youtube_dnn_loss_and_grads,
    )
    from refimpl.nn.capsule_routing import frozen_routing_forward
    from refimpl.nn.dynamic_routing import dynamic_routing_forward, frozen_dynamic_routing_forward
    from refimpl.nn.linear_attention_fast import linear_attention_fast_backward, linear_attention_fast_forward
    from refimpl.nn.max_interest_score import merge_interest_candidates
    from refimpl.nn.multi_interest_readout import ReadoutConfig
    from refimpl.optim import AdamConfig, adam_init, adam_step
    from refimpl.progress import Bar, set_quiet
    from refimpl.retrieval.catalogue import Catalogue
    from refimpl.retrieval.hnsw import HnswConfig, HnswIndex
    from refimpl.suite import golden_root, spec_root, suite_folder
    from refimpl.threads import blas_threads

    rng = np.random.default_rng(0)
    set_quiet(False)
    Bar().status("valid 1.0")
    check_batching_config(BatchingConfig())
    params = {"w": rng.standard_normal((2, 2))}
    adam_step(params, {"w": rng.standard_normal((2, 2))}, adam_init(params), AdamConfig())
    item_category = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([[1, 2, 3], [0, 4, 5]])
    mask = np.array([[True, True, False], [True, True, True]])
    yt_cfg = YouTubeDNNConfig(num_items=6, num_categories=3, dim=4, hidden=5)
    youtube_dnn_loss_and_grads(
        youtube_dnn_init(rng, yt_cfg), items, mask, np.array([1, 2]), np.array([3, 4, 5]),
        item_category, yt_cfg,
    )
    ulim_cfg = ULIMConfig(num_items=6, num_categories=3, dim=4, num_heads=2)
    encode_for_serving(
        ulim_init(rng, ulim_cfg), items, mask, items[:, None, :], mask[:, None, :], item_category,
        ulim_cfg,
    )
    embedded = rng.standard_normal((*items.shape, 4))
    encode_forward(ulim_init(rng, ulim_cfg), embedded, mask, embedded, mask, ulim_cfg)
    category_subsequence(items, mask, item_category, np.array([0, 2]), 2)
    category_batches(
        np.array([0, 1, 2]), np.array([0, 2, 3]), np.array([0, 1, 1]), item_category,
        BatchingConfig(batch_size=2, num_negatives=2), rng,
    )
    rank_candidates(rng.standard_normal((2, 3)), np.array([[True, True, False], [True, True, True]]))
    merge_interest_candidates(np.array([[[3, 1], [1, 2]]]), rng.standard_normal((1, 2, 2)), 2)
    draw_initial_logits(rng, 2, 3, 2)
    readout = ReadoutConfig()
    for forward, backward, loss in (
        (mind_forward, mind_backward, mind_loss),
        (umi_forward, umi_backward, umi_loss),
        (comirec_forward, comirec_backward, comirec_loss),
        (dssm_forward, dssm_backward, dssm_loss),
    ):
        _, case = recorded[f"{forward.__module__}.{forward.__name__}"]
        interests, cache = forward(**copy.deepcopy(case))
        backward(cache, np.ones_like(interests))
        b = case["batch"].behaviour_ids.shape[0]
        loss(**copy.deepcopy(case), positive_ids=np.arange(b), negative_ids=np.array([b, b + 1]), readout=readout)
    _, linear_case = recorded["refimpl.nn.linear_attention.linear_attention_forward"]
    out, linear_cache = linear_attention_fast_forward(**copy.deepcopy(linear_case))
    linear_attention_fast_backward(linear_cache, np.ones_like(out))
    _, routing_case = recorded["refimpl.nn.capsule_routing.capsule_routing_forward"]
    frozen_routing_forward(
        **{k: v for k, v in copy.deepcopy(routing_case).items() if k not in ("initial_logits", "cfg")},
        coefficients=np.full_like(routing_case["initial_logits"], 1 / routing_case["initial_logits"].shape[2]),
    )
    _, dynamic_case = recorded["refimpl.nn.dynamic_routing.dynamic_routing_forward"]
    _, dynamic_cache = dynamic_routing_forward(**copy.deepcopy(dynamic_case))
    frozen_dynamic_routing_forward(
        dynamic_case["params"], dynamic_case["items"], coefficients=dynamic_cache.coefficients[-1]
    )
    _, pgin_case = recorded["refimpl.models.pgin.pgin_forward"]
    pgin_loss_and_grads(**copy.deepcopy(pgin_case))
    top_k_categories(**copy.deepcopy(pgin_case), k=2)
    catalogue = Catalogue.build(rng.standard_normal((6, 4)), item_category, num_categories=3)
    catalogue.category_size(1)
    catalogue.categories_of(np.array([0, 5]))
    index = HnswIndex(catalogue, HnswConfig(M=4, ef=8))
    index.with_query_settings(ef=10).search(rng.standard_normal((2, 4)), 2, category=1)
    index.free_depth(1)
    index.with_global_graph(global_M=8, global_ef_construction=20).free_depth(None)
    index.index_queries(rng.standard_normal((2, 4)))
    _valid_cascade_calls(catalogue, rng)
    _valid_spread_calls()
    _valid_data_calls()
    _valid_ifa_calls()
    _valid_loader_calls()
    _valid_pipeline_calls()
    _valid_umi_pipeline_calls()
    _valid_registry_calls()
    with blas_threads(1):
        suite_folder("spec")
        golden_root()
        spec_root()


def _valid_cascade_calls(catalogue: Any, rng: np.random.Generator) -> None:
    from refimpl.retrieval.cascade import CascadeConfig, cascade_recall, cascade_retrieve, split_evenly, split_weighted
    from refimpl.retrieval.exact import ExactIndex

    split_evenly(5, [1, 4, 3])
    split_weighted(5, [1, 4, 3], [0.2, 0.5, 0.3])
    exact = cascade_retrieve(
        ExactIndex(catalogue), np.array([[0, 2], [1, 1]]), rng.standard_normal((2, 2, 4)),
        rng.standard_normal((2, 4)), CascadeConfig(n=4, short_share=0.25, split="weighted"),
        long_mask=np.array([[True, True], [True, False]]), route_weights=np.array([[0.7, 0.3], [1.0, 0.0]]),
    )
    cascade_recall(exact, exact)


def _valid_spread_calls() -> None:
    from refimpl.spread import beyond_spread, format_mean_std, mean_std, ordering

    above, below = np.array([10.0, 11.0, 12.0]), np.array([7.0, 8.0, 9.0])
    mean_std(above)
    beyond_spread(above, below)
    ordering("ULIM", above, "frequency", below)
    format_mean_std(above, digits=2)


def _valid_umi_pipeline_calls() -> None:
    """Valid calls of the profile-planted generator, UMI's pipeline and demo, on a tiny log."""
    from refimpl.data.synthetic_profiles import (
        ProfileDataConfig,
        corrupt_profiles,
        generate_profile_data,
        validate_profile_config,
    )
    from refimpl.demos import umi as umi_demo
    from refimpl.pipelines import umi

    data_cfg = ProfileDataConfig(num_users=30, num_items=24, num_categories=6, num_styles=2, num_audiences=2,
                                 min_interests=1, max_interests=2, min_length=6, max_length=10)
    validate_profile_config(data_cfg)
    log = generate_profile_data(data_cfg).interactions
    corrupt_profiles(log, 0.1, np.random.default_rng(0))
    cfg = umi.UMIPipelineConfig(max_length=4, num_interests=2, num_negatives=3, batch_size=4, dim=4, profile_dim=2,
                                steps=1, eval_every=1, validation_rows=4, cutoffs=(2,))
    umi.validate_pipeline_config(cfg)
    prepared = umi.prepare(log, cfg)
    model = umi.train_model("UMI", prepared, cfg, stream=None)
    umi.evaluate(model, prepared, cfg)
    umi.behaviour_weights(model, prepared, cfg)
    umi.non_learned_scores(umi.POPULARITY, prepared, cfg)
    umi.run_models(log, cfg, ("MIND",), (), stream=None)
    umi_demo.scaled_cutoffs(800)
    try:
        umi_demo.main(["--help"])
    except SystemExit:
        pass


def _valid_registry_calls() -> None:
    """Valid calls of the one interface (refimpl.pipelines.registry) on a tiny log with profiles."""
    from refimpl.data.protocols import leave_last_out
    from refimpl.data.synthetic_profiles import ProfileDataConfig, generate_profile_data
    from refimpl.pipelines import registry
    from refimpl.pipelines.evaluation import EvalConfig
    from refimpl.pipelines.pgin import PGINTrainConfig
    from refimpl.pipelines.ulim import SequenceConfig
    from refimpl.train import TrainConfig

    log = generate_profile_data(ProfileDataConfig(
        num_users=30, num_items=24, num_categories=6, num_styles=2, num_audiences=2,
        min_interests=1, max_interests=2, min_length=6, max_length=10)).interactions
    cfg = registry.ULIMPipelineConfig(
        seq=SequenceConfig(short_length=3, long_length=6, max_subsequence=4, mind_length=4, pgin_long_length=3,
                           pgin_short_length=2, pgin_history=2, min_position=1, targets="all_events"),
        train=TrainConfig(steps=1, eval_every=1, validation_rows=3, batch_size=3, num_negatives=2, dim=4,
                          num_heads=2, num_interests=2),
        pgin=PGINTrainConfig(dim=4, max_steps=1, eval_every=1, batch_size=3, validation_rows=2),
        evaluation=EvalConfig(cutoffs=(2,), seen="excluded"), num_routes=2)
    trained = registry.train("MIND", log, leave_last_out(log), cfg, stream=None)
    registry.evaluate(trained, log, trained.split)
    trained.training_record()


# the loaders' files live as long as the recorded calls that name them
LOADER_FILES = tempfile.TemporaryDirectory(prefix="refimpl-surface-")


def _valid_loader_calls() -> None:
    """Valid calls of the loaders, on the tiny files test_loaders writes."""
    from test_loaders import TAOBAO, write_ml1m, write_ml100k, write_recbole

    from refimpl.data.loaders import (
        arrow_available,
        load_interactions,
        load_movielens_1m,
        load_movielens_100k,
        load_recbole,
        load_taobao,
        read_taobao_columns,
    )

    root = Path(LOADER_FILES.name)
    write_ml100k(root / "ml-100k")
    load_movielens_100k(root / "ml-100k", min_rating=3)
    write_ml1m(root / "ml-1m")
    load_movielens_1m(root / "ml-1m", min_rating=3)
    load_interactions(root / "ml-1m", "movielens-1m")
    load_recbole(write_recbole(root), behaviour_field="action")
    (root / "taobao.csv").write_text(TAOBAO)
    read_taobao_columns(root / "taobao.csv", backend="numpy", chunk_bytes=64)
    load_taobao(root / "taobao.csv", backend="numpy", chunk_bytes=64)
    arrow_available()


def _valid_ifa_calls() -> None:
    """Valid calls of the planted request data and IFA's demo pipeline, at a tiny size."""
    from refimpl.data.requests import RequestConfig, generate_requests
    from refimpl.demos import ifa as ifa_demo
    from refimpl.pipelines import ifa

    data = generate_requests(RequestConfig(num_items=40, num_categories=4, num_users=40, lifelong_length=12,
                                           recent_length=4, num_candidates=4, num_shown=2))
    data.recent()
    data.sequence_categories()
    data.take(np.array([0, 2]))
    cfg = ifa.RankerConfig(width=4, hidden=3, subsequence_length=3, top_k=3, batch_size=4, steps=2, eval_every=1)
    inputs = ifa.prepare_inputs(data, 3)
    split = ifa.split_requests(data.num_requests, 0.2, 0.3, 0)
    spec = ifa.RANKERS["DIN"]
    params = ifa.ranker_init(np.random.default_rng(0), spec, data, cfg)
    out, cache = ifa.ranker_forward(params, inputs.take(np.array([0, 1])), spec, cfg)
    ifa.ranker_backward(cache, np.ones((), dtype=out.loss.dtype))
    model = ifa.train_ranker("DIN", spec, data, inputs, split, cfg, 0, None)
    ifa.evaluate(model, inputs, split, cfg)
    ifa.non_learned_scores(data, inputs, split)
    tiny = ifa_demo.DemoConfig(data=RequestConfig(num_items=40, num_categories=4, num_users=40, lifelong_length=12,
                                                  recent_length=4, num_candidates=4, num_shown=2),
                               ranker=dataclasses.replace(cfg, steps=1), seeds=(0,), test_share=0.3)
    ifa_demo.run(tiny, stream=None)
    try:
        ifa_demo.main(["--help"])
    except SystemExit:
        pass


def _valid_data_calls() -> None:
    """Valid calls of the interaction data model and the split protocols."""
    from refimpl.data.interactions import build_interactions, dense_ids, from_synthetic
    from refimpl.data.protocols import (
        drop_seen,
        leave_last_out,
        seen_items,
        split_users,
        strong_generalization,
        training_events,
    )
    from refimpl.data.synthetic import SyntheticConfig, generate

    log = build_interactions(
        np.array([1, 1, 1, 2, 2, 2, 2]), np.array([10, 11, 12, 10, 13, 11, 12]), np.arange(7),
        catalogue_items=np.array([10, 11, 12, 13]), catalogue_categories=np.array([0, 0, 1, 1]),
    )
    log.lengths()
    log.sequence(1)
    log.event_users()
    log.event_categories()
    log.raw_events()
    log.dense_items(np.array([11, 13]))
    log.dense_users(np.array([2]))
    build_interactions(
        np.array([1, 2, 2]), np.array([10, 11, 12]), np.array([0.5, 1.0, 2.0]),
        behaviours=np.array([0, 1, 0]), behaviour_names=("click", "buy"),
        catalogue_items=np.array([10, 11]), catalogue_categories=np.array([0, 1]),
        profile_users=np.array([1, 2]), profile_fields={"age": np.array([20, 30])},
    )
    dense_ids("items", np.array([5, 3, 5]))
    synthetic = generate(SyntheticConfig(
        num_users=3, num_items=12, num_categories=3, latent_dim=2, min_length=4, max_length=6, min_interests=1,
        max_interests=2, mean_visit_length=2.0, transition_rank=1,
    ))
    synthetic.sequence(2)
    synthetic.lengths()
    synthetic.category_items()
    from_synthetic(synthetic)
    split = leave_last_out(log, max_length=2)
    strong_generalization(log, seed=0, max_length=2)
    split_users(10, 0)
    training_events(log, split, 1)
    split.describe("kept")
    split.test.history(log, 0)
    split.test.target_items(0)
    seen = seen_items(log, split.test)
    drop_seen(np.array([[0, 1, 2], [3, 2, 1]]), seen, 2)


def _valid_pipeline_calls() -> None:
    """Valid calls of the training rule, the pipelines, the baselines, the diagnostics and the demo,
    on a tiny synthetic log."""
    from refimpl import baselines, category_baselines, diagnostics
    from refimpl.data.interactions import from_synthetic
    from refimpl.data.protocols import leave_last_out
    from refimpl.data.synthetic import SyntheticConfig, generate
    from refimpl.demos import ulim as ulim_demo
    from refimpl.pipelines import evaluation, inputs, pgin, ulim
    from refimpl.train import TrainConfig, chance_sampled_softmax, report_line, seeded_rng, validation_subset

    data = generate(SyntheticConfig(
        num_users=6, num_items=12, num_categories=3, latent_dim=2, min_length=8, max_length=10, min_interests=1,
        max_interests=2, mean_visit_length=2.0, transition_rank=1,
    ))
    log = from_synthetic(data).interactions
    split = leave_last_out(log)
    seq = ulim.SequenceConfig(short_length=3, long_length=6, max_subsequence=4, mind_length=4, pgin_long_length=3,
                              pgin_short_length=2, pgin_history=2, min_position=1, targets="all_events")
    cfg = TrainConfig(steps=1, eval_every=1, validation_rows=3, batch_size=3, num_negatives=2, dim=4, num_heads=2,
                      num_interests=2)
    ev = evaluation.EvalConfig(cutoffs=(2,), seen="excluded")
    rng = seeded_rng(0)
    report_line("m", 1, 2, 1.0, 1.0, 1.0, 0.5)
    validation_subset(5, 2, 0)
    chance_sampled_softmax(np.array([1, 2]), np.array([2, 3]))
    train = inputs.training_samples(log, split, 1, "category_changes")
    held = inputs.request_samples(log, split.test)
    held.take(np.array([0, 1]))
    inputs.category_changes(log, held)
    inputs.category_subsequences(log, held, held.categories[:, None], 6, 4, "recent_half")
    inputs.profile_ids(log, held.users)
    inputs.profile_features(log, held.users)
    inputs.random_rows(5, 2, rng)
    inputs.uniform_negatives(12, 3, rng)
    seen = inputs.samples_seen(log, held)
    youtube = ulim.train_youtube_dnn(log, split, seq, cfg, stream=None)
    ulim.evaluate_youtube_dnn(youtube, log, held, seq, ev, seen)
    mind = ulim.train_mind(log, split, seq, cfg, stream=None)
    ulim.evaluate_mind(mind, log, held, seq, ev, seen)
    model = ulim.train_ulim(log, split, seq, cfg, long_input="recent_half", stream=None)
    routes = evaluation.Routes.equal(held.categories[:, None])
    serving = ulim.ulim_serving(model, log, held, routes.top(1), seq, ev, ulim.ulim_index(model, log, ev))
    serving.hit_rates(held.targets, ev, 1, "even", seen)
    evaluation.hit_rate(np.array([[1, 2], [3, 4]]), np.ones((2, 2), dtype=bool), np.array([1, 4]), 2)
    evaluation.merged_search(serving.index, np.ones((2, 1, 4)), 2)
    evaluation.build_index(np.ones((12, 2)), log.item_category, ev)
    pgin_cfg = pgin.PGINTrainConfig(dim=4, max_steps=1, eval_every=1, batch_size=3, validation_rows=2)
    run = pgin.train_pgin(log, split, seq, pgin_cfg, stream=None)
    pgin.pgin_routes(run, log, held, seq, 2, "recent_half")
    pgin.pgin_inputs(log, held, seq, pointer_history="sampled")
    pgin.baseline_predictions(log, train, held, seq, 3, 2)
    pgin.run_pgin_experiment(pgin.PGINExperiment(
        data=replace_config(data.config, num_users=10), seq=seq, train=pgin_cfg, recent_length=3, ks=(1,)),
        seed=0, stream=None)
    index = baselines.popularity_index(log, split)
    baselines.popularity_hit_rates(log, split, held, ev, index, seen)
    frequency = baselines.frequency_routes(log, held, 2, window=4)
    baselines.frequency_serving(log, split, frequency, index)
    category_baselines.top_k_accuracy(frequency.categories, held.categories)
    counts = category_baselines.transition_counts(np.array([0, 1]), np.array([1, 2]), 3)
    prior = category_baselines.category_prior(np.array([0, 1, 2, 2]), 3)
    category_baselines.markov_top_k(counts, np.array([0, 2]), 2, prior)
    category_baselines.frequency_markov_top_k(np.ones((2, 3)), np.zeros((2, 3), dtype=np.int64), counts,
                                              np.array([0, 2]), 2, prior)
    vectors = ulim.ulim_index(model, log, ev).catalogue.vectors
    diagnostics.item_agreement(vectors, data, seeded_rng(1), pairs=50)
    diagnostics.planted_logits(data, 0, int(data.interests[0][0]))
    diagnostics.taste_agreement(data, held.users, serving.routes.categories, serving.long_vectors, serving.present,
                                vectors)
    try:
        ulim_demo.main(["--help"])
    except SystemExit:
        pass


def replace_config(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)


def record_calls() -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    """The first valid call of every public function, with a deep copy of its arguments."""
    public = public_functions()
    recorded: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}

    def hook(frame: types.FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if event != "call" or code not in public:
            return
        name, fn = public[code]
        if name in recorded:
            return
        argnames = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        recorded[name] = (fn, copy.deepcopy({a: frame.f_locals[a] for a in argnames}))

    references = reference_components()
    first_case: dict[str, Any] = {}
    for case in all_cases():
        first_case.setdefault(case.component, case)
    sys.setprofile(hook)
    try:
        for case in first_case.values():
            tensors = case.draw()
            references[case.component](tensors.inputs, tensors.params, case.config, tensors.upstream)
        _valid_calls(recorded)
    finally:
        sys.setprofile(None)
    return recorded


RECORDED = record_calls()

# ---------------------------------------------------------------------------- bad-input kinds
# A kind is (label, may_return): may_return says whether a clean result (no NaN, no warning) is
# a clear outcome for it, or only a named ValueError/TypeError is.


def _drop_axis(x: np.ndarray) -> Any:
    """x with one axis fewer: flattened, or its first element (a scalar) when it has one axis."""
    if x.ndim > 1:
        return x.reshape(-1)
    return x.reshape(-1)[0] if x.size else np.zeros((), x.dtype)


def _float_kinds(x: np.ndarray) -> Iterator[tuple[str, bool, Any]]:
    yield "rank+1", True, x[None]
    yield "rank-1", True, _drop_axis(x)
    yield "int", False, np.ones(x.shape, np.int64)
    yield "bool", False, np.ones(x.shape, bool)
    yield "float16", False, x.astype(np.float16)
    yield "complex", False, x.astype(np.complex128)
    yield "list", False, [x.tolist()] if x.ndim == 0 else x.tolist()
    if x.size:
        for label, value in (("nan", np.nan), ("inf", np.inf)):
            spoiled = x.copy()
            spoiled.reshape(-1)[0] = value
            yield label, True, spoiled
    if x.ndim >= 1:
        yield "empty axis 0", True, x[:0]
    if x.ndim >= 2:
        yield "empty axis 1", True, x[:, :0]


def _int_kinds(x: np.ndarray) -> Iterator[tuple[str, bool, Any]]:
    yield "rank+1", True, x[None]
    yield "rank-1", True, _drop_axis(x)
    yield "float", False, x.astype(np.float64) + 0.5
    yield "bool", False, x.astype(bool)
    yield "list", False, x.tolist()
    if x.size:
        # a narrow code column (an Interactions' int8 behaviours) gets its dtype's largest value
        large = min(10**6, int(np.iinfo(x.dtype).max)) if np.issubdtype(x.dtype, np.integer) else 10**6
        for label, value in (("id 10**6", large), ("id -5", -5)):
            spoiled = x.copy()
            spoiled.reshape(-1)[0] = value
            yield label, True, spoiled
    if x.ndim >= 1:
        yield "empty axis 0", True, x[:0]


def _bool_kinds(x: np.ndarray) -> Iterator[tuple[str, bool, Any]]:
    yield "rank+1", True, x[None]
    yield "int", False, x.astype(np.int64)
    yield "float", False, x.astype(np.float64)
    yield "list", False, x.tolist()
    if x.ndim >= 1:
        yield "empty axis 0", True, x[:0]


def _config_kinds(value: Any) -> Iterator[tuple[str, bool, Any]]:
    if isinstance(value, bool):
        yield "flag 'no'", False, "no"
        yield "flag 1", False, 1
    elif isinstance(value, int):
        yield "int 0", True, 0
        yield "int -1", True, -1
        yield "int True", False, True
        yield "int 2.5", False, 2.5
        yield "int 'x'", False, "x"
    elif isinstance(value, float):
        yield "float nan", False, float("nan")
        yield "float inf", False, float("inf")
        yield "float 'x'", False, "x"
    elif isinstance(value, str):
        yield "choice 'bogus'", False, "bogus"


def array_kinds(x: np.ndarray) -> Iterator[tuple[str, bool, Any]]:
    if x.dtype == np.bool_:
        return _bool_kinds(x)
    if np.issubdtype(x.dtype, np.integer):
        return _int_kinds(x)
    if np.issubdtype(x.dtype, np.floating):
        return _float_kinds(x)
    return iter(())


def _is_config(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and type(obj).__name__.endswith("Config")


def _is_cache(name: str, obj: Any) -> bool:
    # caches come from a forward, not from the caller: spoiling them tests nothing a user does
    return name == "cache" or type(obj).__name__.endswith("Cache")


def spoilers(kwargs: dict[str, Any]) -> Iterator[tuple[str, str, bool, Callable[[], dict[str, Any]]]]:
    """(argument name as the caller names it, kind, may_return, build spoiled kwargs)."""
    for arg, value in kwargs.items():
        if arg in ("self", "cls") or _is_cache(arg, value):
            continue

        def put(arg: str = arg, replace: Callable[[Any], Any] = lambda v: v) -> Callable[[], dict[str, Any]]:
            return lambda: {**kwargs, arg: replace(kwargs[arg])}

        if isinstance(value, np.ndarray):
            for kind, may_return, bad in array_kinds(value):
                yield arg, kind, may_return, put(arg, lambda _v, bad=bad: bad)
        elif isinstance(value, bool | int | float) and arg != "name":
            # a scalar argument (n, k, category, max_length, ...) is checked like a config value
            for kind, may_return, bad in _config_kinds(value):
                yield arg, kind, may_return, put(arg, lambda _v, bad=bad: bad)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, np.ndarray):
                    for kind, may_return, bad in array_kinds(item):
                        yield str(key), kind, may_return, put(
                            arg, lambda d, key=key, bad=bad: {**d, key: bad}
                        )
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            config = _is_config(value)
            for field in dataclasses.fields(value):
                item = getattr(value, field.name)
                kinds = (
                    array_kinds(item)
                    if isinstance(item, np.ndarray)
                    else _config_kinds(item)
                    if config
                    else iter(())
                )
                for kind, may_return, bad in kinds:
                    yield field.name, kind, may_return, put(
                        arg, lambda d, f=field.name, bad=bad: _replace(d, f, bad)
                    )


def _replace(obj: Any, field: str, value: Any) -> Any:
    """dataclasses.replace, through __post_init__ (a config checked at construction raises here)."""
    return dataclasses.replace(obj, **{field: value})


def _has_nan(result: Any, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if isinstance(result, np.ndarray):
        return bool(np.issubdtype(result.dtype, np.inexact) and np.isnan(result).any())
    if isinstance(result, float):
        return bool(np.isnan(result))
    if isinstance(result, dict):
        return any(_has_nan(v, depth + 1) for v in result.values())
    if isinstance(result, tuple | list):
        return any(_has_nan(v, depth + 1) for v in result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return any(_has_nan(getattr(result, f.name), depth + 1) for f in dataclasses.fields(result))
    return False


def argument_names(kwargs: dict[str, Any]) -> set[str]:
    """Every name a caller gives an input by: parameters, dict keys, dataclass fields."""
    names = set(kwargs)
    if isinstance(kwargs.get("name"), str):
        names.add(kwargs["name"])  # a checker told the caller's name for its argument
    for value in kwargs.values():
        if isinstance(value, dict):
            names.update(str(k) for k in value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            names.update(f.name for f in dataclasses.fields(value))
    return names - {"self", "cls"}


def outcome(
    fn: Callable[..., Any], build: Callable[[], dict[str, Any]], arg: str, may_return: bool,
    names: set[str] | None = None,
) -> str:
    """'' for a clear outcome, else what went wrong.

    A bad dtype, a list or a bad config value must be refused naming `arg` (or one of `names`, the
    other arguments a shape mismatch may show at); `may_return` also accepts a result free of NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            result = fn(**build())
        except (ValueError, TypeError) as error:
            message = str(error)
            accepted = {arg} | (names or set())
            if any(f"{name}" in message for name in accepted):
                return ""
            return f"{type(error).__name__} not naming {arg!r}: {message}"
        except Exception as error:  # noqa: BLE001 - any other exception is the finding
            return f"{type(error).__name__}: {error}"
    if not may_return:
        return "accepted"
    if _has_nan(result):
        return "returned NaN"
    return ""


def findings(
    calls: dict[str, tuple[Callable[..., Any], dict[str, Any]]],
) -> tuple[list[str], dict[str, int]]:
    """Every unclear outcome, and the number of bad inputs tried per function."""
    found: list[str] = []
    tried: dict[str, int] = {}
    for name, (fn, kwargs) in sorted(calls.items()):
        tried[name] = 0
        for arg, kind, may_return, build in spoilers(kwargs):
            tried[name] += 1
            documented = kind in DOCUMENTED.get((name, arg), DOCUMENTED_FIELDS.get(arg, set()))
            may = may_return or documented
            # a checker's `name` argument is the caller's name for what it checks
            told = {kwargs["name"]} if isinstance(kwargs.get("name"), str) else None
            problem = outcome(fn, build, arg, may, argument_names(kwargs) if may else told)
            if problem:
                found.append(f"{name}({arg}: {kind}): {problem[:160]}")
    return found, tried


def _covered() -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    return dict(RECORDED)


# Fields of a data structure a docstring documents as taking the kind, wherever the structure goes:
# `Interactions.timestamps` are "int64 or float64; only their order within a user matters".
DOCUMENTED_FIELDS: dict[str, set[str]] = {"timestamps": {"float"}}

# Acceptances a docstring documents: (function, argument) -> the kinds it takes as valid input.
DOCUMENTED: dict[tuple[str, str], set[str]] = {
    # a metric takes array-likes: integer or float16 scores, lists, 0/1 or bool labels
    ("refimpl.metrics.auc", "scores"): {"int", "float16", "list"},
    ("refimpl.metrics.auc", "labels"): {"bool", "list"},
    ("refimpl.metrics.auc", "mask"): {"list"},
    # a table entry's per-seed values: a list, a tuple or a 1-D integer or float array
    **{
        (f"refimpl.spread.{fn}", arg): {"int", "float16", "list"}
        for fn, args in (("mean_std", ("values",)), ("beyond_spread", ("above", "below")),
                         ("ordering", ("a", "b")), ("format_mean_std", ("values",)))
        for arg in args
    },
    # "batch.label is ignored" when serving
    ("refimpl.models.pgin.top_k_categories", "label"): {"float", "bool", "list"},
    # "any iterable: a range, a list, an array"
    ("refimpl.progress.track", "iterable"): {"float", "bool", "list"},
}


def test_every_public_module_declares_its_surface() -> None:
    """`__all__` is the public surface (spec/conventions.md): a new module must declare one."""
    undeclared = [m for m in PUBLIC_MODULES if not hasattr(importlib.import_module(m), "__all__")]
    assert not undeclared


def test_every_public_function_has_a_recorded_call() -> None:
    missing = sorted(name for name, _ in public_functions().values() if name not in RECORDED)
    assert not missing, f"public functions no golden case or _valid_calls reaches: {missing}"


def test_every_bad_input_gets_a_clear_outcome() -> None:
    found, tried = findings(_covered())
    assert sum(tried.values()) > 1000
    assert not found, f"{len(found)} unclear outcomes:\n" + "\n".join(found)


@given(st.data())
def test_random_pairs_of_bad_inputs_get_a_clear_outcome(data: st.DataObject) -> None:
    """Two arguments spoiled at once: the check met first still names one of them (or, when both
    kinds may be accepted, the result is clean)."""
    covered = _covered()
    name = data.draw(st.sampled_from(sorted(covered)))
    fn, kwargs = covered[name]
    first = list(spoilers(kwargs))
    if not first:
        return
    arg, _kind, may_return, build = data.draw(st.sampled_from(first))
    try:
        spoiled = build()
    except (ValueError, TypeError):
        return  # a config refused at construction: the single-spoil sweep checks its message
    second = [s for s in spoilers(spoiled) if s[0] != arg]
    if not second:
        return
    arg2, _kind2, may_return2, build2 = data.draw(st.sampled_from(second))
    both_may_return = may_return and may_return2
    names = argument_names(kwargs) if may_return or may_return2 else {arg}
    problem = outcome(fn, build2, arg2, both_may_return, names)
    assert problem == "", f"{name}({arg}, {arg2}): {problem}"


def unvalidated_scale(x: np.ndarray, factor: float) -> np.ndarray:
    """The negative control: a public-looking function that validates nothing."""
    return x * factor


def test_negative_control_an_unvalidated_function_is_reported() -> None:
    found, tried = findings({"unvalidated_scale": (unvalidated_scale, {"x": np.ones((2, 3)), "factor": 2.0})})
    assert tried["unvalidated_scale"] >= 8
    assert any("(x: int): accepted" in f for f in found)
    assert any("(x: list)" in f for f in found)
    assert any("(factor: float nan): accepted" in f for f in found)


def inner_named_mean(values: np.ndarray) -> np.ndarray:
    """Negative controls: names an inner argument (`x`), and an empty batch gives NaN."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float64:
        raise TypeError("x: expected a float64 array")
    with np.errstate(invalid="ignore"):
        return np.asarray(values.sum(axis=0) / values.shape[0])


def test_negative_control_an_inner_name_and_a_nan_on_empty_input_are_reported() -> None:
    found, _ = findings({"inner_named_mean": (inner_named_mean, {"values": np.ones((2, 3))})})
    assert any("(values: int): TypeError not naming 'values'" in f for f in found)
    assert any("(values: empty axis 0): returned NaN" in f for f in found)


# ------------------------------------------------------------- the numbered cases of issue 15


def _call(name: str, **changed: Any) -> Any:
    fn, kwargs = RECORDED[name]
    return fn(**{**copy.deepcopy(kwargs), **changed})


def _args(name: str) -> dict[str, Any]:
    return copy.deepcopy(RECORDED[name][1])


ULIM = "refimpl.models.ulim."
ADAM = "refimpl.optim.adam_step"
YT = "refimpl.models.youtube_dnn.youtube_dnn_loss_and_grads"
SERVE = ULIM + "encode_for_serving"


def _adam_state(**changed: Any) -> Any:
    return dataclasses.replace(_args(ADAM)["state"], **changed)


def _spoil_first(arrays: dict[str, Any], spoil: Callable[[Any], Any]) -> dict[str, Any]:
    """`arrays` with its first rank-2 entry spoiled."""
    first = next(k for k, v in arrays.items() if np.ndim(v) == 2)
    return {**arrays, first: spoil(arrays[first])}


def _empty_rows(batch: Any) -> Any:
    return dataclasses.replace(batch, **{
        f.name: getattr(batch, f.name)[:0] for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), np.ndarray)
    })


REGRESSIONS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("1 unknown long_encoder", lambda: _call(
        ULIM + "encode_forward",
        cfg=dataclasses.replace(_args(ULIM + "encode_forward")["cfg"], long_encoder="bogus")),
     ValueError, "cfg.long_encoder"),
    ("2 shuffle 'no'", lambda: _call(
        "refimpl.data.batching.check_batching_config",
        cfg=dataclasses.replace(_args("refimpl.data.batching.check_batching_config")["cfg"], shuffle="no")),
     TypeError, "cfg.shuffle"),
    ("2 drop_last 1", lambda: _call(
        "refimpl.data.batching.check_batching_config",
        cfg=dataclasses.replace(_args("refimpl.data.batching.check_batching_config")["cfg"], drop_last=1)),
     TypeError, "cfg.drop_last"),
    ("3 esmm labels 10**6", lambda: _call(
        "refimpl.models.ifa.esmm_loss_forward",
        impression=np.full_like(_args("refimpl.models.ifa.esmm_loss_forward")["impression"], 10**6)),
     ValueError, "impression"),
    ("3 esmm int64 logits", lambda: _call(
        "refimpl.models.ifa.esmm_loss_forward",
        impression_logit=np.zeros_like(_args("refimpl.models.ifa.esmm_loss_forward")["impression"])),
     TypeError, "impression_logit"),
    ("5 ulim_loss_backward complex d_loss", lambda: _call(
        "refimpl.nn.ulim_loss.ulim_loss_backward", d_loss=np.asarray(1 + 1j)), TypeError, "d_loss"),
    ("5 esmm_loss_backward list d_loss", lambda: _call(
        "refimpl.models.ifa.esmm_loss_backward", d_loss=[1.0]), TypeError, "d_loss"),
    ("5 ifa_backward int d_loss", lambda: _call(
        "refimpl.models.ifa.ifa_backward", d_loss=np.asarray(1)), TypeError, "d_loss"),
    ("4 adam eps 0", lambda: dataclasses.replace(_args(ADAM)["cfg"], eps=0.0), ValueError, "eps"),
    ("4 adam lr inf", lambda: dataclasses.replace(_args(ADAM)["cfg"], lr=float("inf")), ValueError, "lr"),
    ("4 adam step nan", lambda: _call(ADAM, state=_adam_state(step=float("nan"))), TypeError, "state.step"),
    ("4 adam complex moment", lambda: _call(ADAM, state=_adam_state(m=_spoil_first(
        _args(ADAM)["state"].m, lambda w: w.astype(complex)))), TypeError, "state.m"),
    ("4 adam moment of rank 1 for rank 2", lambda: _call(ADAM, state=_adam_state(v=_spoil_first(
        _args(ADAM)["state"].v, lambda w: w[0]))), ValueError, "state.v"),
    ("8 adam list param", lambda: _call(
        ADAM, params=_spoil_first(_args(ADAM)["params"], lambda w: w.tolist())), TypeError, "params"),
    ("6 youtube id 10**6", lambda: _call(YT, positive_ids=np.array([10**6, 0])), ValueError, "positive_ids"),
    ("6 youtube float ids", lambda: _call(YT, positive_ids=np.array([1.0, 0.0])), TypeError, "positive_ids"),
    ("6 youtube bool ids", lambda: _call(YT, negative_ids=np.array([True, False])), TypeError, "negative_ids"),
    ("8 ulim positive_ids list", lambda: _call(
        ULIM + "ulim_loss_and_grads",
        positive_ids=_args(ULIM + "ulim_loss_and_grads")["positive_ids"].tolist()), TypeError, "positive_ids"),
    ("8 serving item_category list", lambda: _call(SERVE, item_category=[0, 0, 1, 1, 2, 2]),
     TypeError, "item_category"),
    ("10 serving long_items 10**6", lambda: _call(
        SERVE, long_items=np.full_like(_args(SERVE)["long_items"], 10**6)), ValueError, "long_items"),
    ("11 merge_category_history pad_id 2.5", lambda: _call(
        "refimpl.data.category_history.merge_category_history", pad_id=2.5), TypeError, "pad_id"),
    ("11 top_k_from_distribution NaN row", lambda: _call(
        "refimpl.models.pgin.top_k_from_distribution",
        y=np.where(np.arange(3) == 0, np.nan, _args("refimpl.models.pgin.top_k_from_distribution")["y"][:, :3])),
     ValueError, "y:"),
    ("11 auc complex scores", lambda: _call(
        "refimpl.metrics.auc", scores=np.asarray(_args("refimpl.metrics.auc")["scores"], complex)),
     TypeError, "scores"),
    ("11 category_block(2.5)", lambda: _call(
        "refimpl.retrieval.catalogue.Catalogue.category_block", category=2.5), TypeError, "category"),
    ("11 category_block(99)", lambda: _call(
        "refimpl.retrieval.catalogue.Catalogue.category_block", category=99), ValueError, "category"),
    ("10 long_user named", lambda: _call(
        "refimpl.nn.ulim_loss.ulim_loss_forward", long_user=np.zeros(3)), ValueError, "long_user:"),
    ("10 short_user named", lambda: _call(
        "refimpl.nn.ulim_loss.ulim_loss_forward", short_user=[[0.0]]), TypeError, "short_user:"),
    ("10 d_long named", lambda: _call(
        ULIM + "encode_backward", d_long=_args(ULIM + "encode_backward")["d_long"][:1]),
     ValueError, "d_long:"),
    ("10 d_short named", lambda: _call(
        ULIM + "encode_backward", d_short=_args(ULIM + "encode_backward")["d_short"].astype(np.float16)),
     TypeError, "d_short:"),
    ("10 long_Wk named", lambda: _call(
        ULIM + "encode_forward",
        params={**_args(ULIM + "encode_forward")["params"], "long_Wk": np.zeros((2, 3))}),
     ValueError, "long_Wk:"),
    ("10 long_emb named", lambda: _call(
        ULIM + "encode_forward", long_emb=_args(ULIM + "encode_forward")["long_emb"][..., :1]),
     ValueError, "long_emb:"),
]


SOFTMAX = "refimpl.nn.sampled_softmax.sampled_softmax_forward"
LINEAR_ATTENTION = "refimpl.nn.linear_attention."


def _spoiled_d_out(backward: str, spoil: Callable[[np.ndarray], Any]) -> Callable[[], object]:
    return lambda: _call(LINEAR_ATTENTION + backward, d_out=spoil(_args(LINEAR_ATTENTION + backward)["d_out"]))


def _history_with_id(ids: int) -> np.ndarray:
    history: np.ndarray = _args("refimpl.nn.pointer_generator.pointer_generator_forward")["history"].copy()
    history[0, 0] = ids
    return history


REGRESSIONS += [
    ("3 esmm labels -5", lambda: _call(
        "refimpl.models.ifa.esmm_loss_forward",
        click=np.full_like(_args("refimpl.models.ifa.esmm_loss_forward")["click"], -5)), ValueError, "click"),
    *(
        (f"5 {backward} {label} d_out", _spoiled_d_out(backward, spoil), error, "^d_out: expected")
        for backward in (
            "linear_attention_backward", "linear_attention_explicit_backward", "linear_self_attention_backward"
        )
        for label, spoil, error in (
            ("complex", lambda d: d.astype(complex), TypeError),
            ("float16", lambda d: d.astype(np.float16), TypeError),
            ("int", lambda d: d.astype(np.int64), TypeError),
            ("bool", lambda d: d.astype(bool), TypeError),
            ("wrong-shape", lambda d: d[..., :1], ValueError),
        )
    ),
    ("9 synthetic taste_sharpness nan", lambda: dataclasses.replace(
        _args("refimpl.data.synthetic.generate")["cfg"], taste_sharpness=float("nan")),
     ValueError, "SyntheticConfig.taste_sharpness"),
    ("9 synthetic seed string", lambda: dataclasses.replace(
        _args("refimpl.data.synthetic.generate")["cfg"], seed="2"), TypeError, "SyntheticConfig.seed"),
    ("11 temperature 0 (scores_loss_forward divided by it)", lambda: _call(
        SOFTMAX, cfg=dataclasses.replace(_args(SOFTMAX)["cfg"], temperature=0.0)), ValueError, "cfg.temperature"),
    ("11 positive_q of rank 2 (logq_backward broadcast it)", lambda: _call(
        SOFTMAX, positive_q=np.full((1, 2), 0.1), negative_q=np.full(2, 0.1)), ValueError, "positive_q"),
    ("11 history id 10**6 (scatter_to_categories raised IndexError)", lambda: _call(
        "refimpl.nn.pointer_generator.pointer_generator_forward", history=_history_with_id(10**6)),
     ValueError, "history"),
]

# issue 15 case 11: helpers that were public by accident and are internal now (spec/conventions.md):
# their public callers validate, as the cases above show
ACCIDENTAL_PUBLICS = {
    "refimpl.nn.linear": ("affine",),
    "refimpl.nn.capsule_routing": ("squash", "squash_backward", "map_items"),
    "refimpl.nn.sampled_softmax": ("scores_loss_forward", "logq_backward"),
    "refimpl.nn.pointer_generator": ("mix_distributions", "scatter_to_categories"),
    "refimpl.retrieval.cascade": ("route_quotas",),
    "refimpl.retrieval.exact": ("top_k_inner_product",),
}


def test_issue_15_case_11_accidental_publics_are_internal() -> None:
    public = {f"{module}.{name}" for module in PUBLIC_MODULES for name in importlib.import_module(module).__all__}
    exposed = [f"{module}.{name}" for module, names in ACCIDENTAL_PUBLICS.items() for name in names
               if f"{module}.{name}" in public or not hasattr(importlib.import_module(module), name)]
    assert exposed == []


@pytest.mark.parametrize(("label", "call", "error", "words"), REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_issue_15_numbered_cases(
    label: str, call: Callable[[], object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        call()


def _all_zero(grads: dict[str, np.ndarray]) -> bool:
    return all(not np.any(g) for g in grads.values())


def test_issue_15_case_7_an_empty_batch_has_loss_0_and_zero_gradients() -> None:
    """spec/conventions.md: B = 0 gives empty outputs, a loss of 0 and zero gradients, never NaN
    or numpy's reshape message (all under warnings-as-errors: no 0/0 either)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pg = "refimpl.nn.pointer_generator.pointer_generator_forward"
        out, _ = _call(pg, **{k: v[:0] for k, v in _args(pg).items() if isinstance(v, np.ndarray)})
        assert out.y.shape[0] == 0 and out.loss == 0
        pgin = "refimpl.models.pgin."
        out, _ = _call(pgin + "pgin_forward", batch=_empty_rows(_args(pgin + "pgin_forward")["batch"]))
        assert out.loss == 0
        loss, grads = _call(
            pgin + "pgin_loss_and_grads", batch=_empty_rows(_args(pgin + "pgin_loss_and_grads")["batch"])
        )
        assert loss == 0 and _all_zero(grads)
        ulim = _args(ULIM + "ulim_loss_and_grads")
        result = _call(
            ULIM + "ulim_loss_and_grads", batch=_empty_rows(ulim["batch"]), positive_ids=ulim["positive_ids"][:0]
        )
        assert result.loss == 0 and _all_zero(result.grads) and result.long_user.shape[0] == 0
        no_long = dataclasses.replace(
            ulim["batch"], long_items=ulim["batch"].long_items[:, :0], long_mask=ulim["batch"].long_mask[:, :0]
        )
        assert np.isfinite(_call(ULIM + "ulim_loss_and_grads", batch=no_long).loss)
        umi = "refimpl.models.umi.umi_forward"
        interests, _ = _call(umi, batch=_empty_rows(_args(umi)["batch"]))
        assert interests.shape[0] == 0
        for multi in ("refimpl.models.umi.umi_loss", "refimpl.models.mind.mind_loss"):
            args = _args(multi)
            loss, grads = _call(multi, batch=_empty_rows(args["batch"]), positive_ids=args["positive_ids"][:0])
            assert loss == 0 and _all_zero(grads)
        yt = _args(YT)
        loss, grads = _call(YT, items=yt["items"][:0], mask=yt["mask"][:0], positive_ids=yt["positive_ids"][:0])
        assert loss == 0 and _all_zero(grads)


def test_issue_15_case_7_empty_serving_batch_is_an_empty_result() -> None:
    """encode_for_serving of no user is (0, D) and (0, K, D); of users with no long behaviour
    (L = 0) every route is the zero vector."""
    args = _args(SERVE)
    v_s, v_l = _call(SERVE, **{k: args[k][:0] for k in ("short_items", "short_mask", "long_items", "long_mask")})
    assert v_s.shape == (0, 4) and v_l.shape == (0, 1, 4)
    v_s, v_l = _call(SERVE, long_items=args["long_items"][..., :0], long_mask=args["long_mask"][..., :0])
    assert np.isfinite(v_s).all() and np.all(v_l == 0)
