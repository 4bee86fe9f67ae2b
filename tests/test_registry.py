"""The one interface (refimpl.pipelines.registry, spec/pipelines.md): every model of MODELS trains and
evaluates through `train` / `evaluate` on a tiny log with profile fields, in every pipeline that
implements it, under each protocol; it gives the numbers of the per-model functions behind it; the
error cases name what is wrong."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from refimpl.data.interactions import Interactions
from refimpl.data.protocols import LEAVE_LAST_OUT, STRONG_GENERALIZATION, leave_last_out, strong_generalization
from refimpl.data.synthetic_profiles import ProfileDataConfig, generate_profile_data
from refimpl.pipelines import registry, ulim, umi
from refimpl.pipelines.evaluation import EvalConfig
from refimpl.pipelines.inputs import request_samples
from refimpl.pipelines.pgin import PGINTrainConfig
from refimpl.pipelines.registry import MODELS, ULIMPipelineConfig, evaluate, train
from refimpl.pipelines.ulim import SequenceConfig
from refimpl.pipelines.umi import UMIPipelineConfig
from refimpl.train import TrainConfig

LOG = generate_profile_data(ProfileDataConfig(
    num_users=40, num_items=24, num_categories=6, num_styles=2, num_audiences=2,
    min_interests=1, max_interests=2, min_length=6, max_length=10,
)).interactions
ULIM_CONFIG = ULIMPipelineConfig(
    seq=SequenceConfig(short_length=3, long_length=6, max_subsequence=4, mind_length=4, pgin_long_length=3,
                       pgin_short_length=2, pgin_history=2, min_position=1, targets="all_events"),
    train=TrainConfig(steps=2, eval_every=1, validation_rows=4, batch_size=4, num_negatives=3, dim=4, num_heads=2,
                      num_interests=2),
    pgin=PGINTrainConfig(dim=4, max_steps=2, eval_every=1, batch_size=4, validation_rows=4),
    evaluation=EvalConfig(cutoffs=(2, 5)),
    num_routes=2,
)
UMI_CONFIG = UMIPipelineConfig(max_length=4, num_interests=2, num_negatives=3, batch_size=4, dim=4, profile_dim=2,
                               steps=2, eval_every=1, validation_rows=4, cutoffs=(2, 5))
CONFIGS = {"ulim": ULIM_CONFIG, "umi": UMI_CONFIG}
PROTOCOLS = {LEAVE_LAST_OUT: leave_last_out(LOG), STRONG_GENERALIZATION: strong_generalization(LOG, seed=0)}
EXPECTED_KEYS = {
    "items ulim": {"HR@2", "HR@5"},
    "items umi": {"HitRate@2", "HitRate@5", "Precision@2", "Precision@5"},
    "categories ulim": {"Accuracy@1", "Accuracy@2"},
}


def _every_model_pipeline_protocol() -> list[tuple[str, str, str]]:
    return [(name, pipeline, protocol) for name, info in MODELS.items() for pipeline in info.pipelines
            for protocol in PROTOCOLS]


def test_the_registry_holds_every_model_of_the_issue() -> None:
    assert set(MODELS) == {
        "YouTube DNN", "MIND", "MIND+HN", "ComiRec-DR", "ComiRec-DR+HN", "DSSM", "UMI", "UMI w/o DAR", "UMI w/o IR",
        "UMI w/o HN", "PGIN", "ULIM", "ULIM-half-sequence", "ULIM-self-attention", "ULIM-catalogue-negatives",
    }
    assert set(umi.MODEL_NAMES) <= set(MODELS)


@pytest.mark.parametrize(("name", "pipeline", "protocol"), _every_model_pipeline_protocol())
def test_every_model_trains_and_evaluates_through_the_interface(name: str, pipeline: str, protocol: str) -> None:
    trained = train(name, LOG, PROTOCOLS[protocol], CONFIGS[pipeline], stream=None)
    assert trained.pipeline == pipeline and trained.split.protocol == protocol
    metrics = evaluate(trained)
    assert metrics.model == name and metrics.protocol.startswith(protocol)
    assert set(metrics.values) == EXPECTED_KEYS[f"{MODELS[name].predicts} {pipeline}"]
    assert all(0.0 <= v <= 100.0 for v in metrics.values.values())
    record = trained.training_record()
    assert record["steps"] >= 1 and np.isfinite(record["valid_loss_best"])


def test_without_split_and_config_the_models_paper_protocol_and_pipeline_are_used() -> None:
    cheap = dataclasses.replace(UMI_CONFIG, seed=3)
    trained = train("UMI", LOG, config=cheap, stream=None)
    assert trained.split.protocol == STRONG_GENERALIZATION
    np.testing.assert_array_equal(trained.split.train_end, strong_generalization(LOG, 3, 4).train_end)
    assert train("YouTube DNN", LOG, config=ULIM_CONFIG, stream=None).split.protocol == LEAVE_LAST_OUT


def test_the_interface_gives_the_numbers_of_the_umi_pipeline_behind_it() -> None:
    prepared = umi.prepare(LOG, UMI_CONFIG)
    for name in ("MIND", "UMI w/o DAR"):
        direct = umi.evaluate(umi.train_model(name, prepared, UMI_CONFIG, stream=None), prepared, UMI_CONFIG)
        values = evaluate(train(name, LOG, config=UMI_CONFIG, stream=None)).values
        assert {n: values[f"HitRate@{n}"] for n in UMI_CONFIG.cutoffs} == direct.hit_rate
        assert {n: values[f"Precision@{n}"] for n in UMI_CONFIG.cutoffs} == direct.precision


def test_the_interface_gives_the_numbers_of_the_ulim_pipeline_behind_it() -> None:
    split, cfg = PROTOCOLS[LEAVE_LAST_OUT], ULIM_CONFIG
    held = request_samples(LOG, split.test)
    direct = ulim.evaluate_mind(ulim.train_mind(LOG, split, cfg.seq, cfg.train, None), LOG, held, cfg.seq,
                                cfg.evaluation)
    assert evaluate(train("MIND", LOG, split, cfg, stream=None)).values == {
        f"HR@{n}": 100.0 * v for n, v in direct.items()}


def test_mind_hn_trains_with_the_harder_negatives_and_mind_without() -> None:
    """The switch reaches the loss: the same seed and batches give other training losses (the
    negative control: MIND trained twice gives the same ones)."""
    for config in (ULIM_CONFIG, UMI_CONFIG):
        first, again, hn = (train(name, LOG, config=config, stream=None).curve.train  # type: ignore[arg-type]
                            for name in ("MIND", "MIND", "MIND+HN"))
        assert first == again
        assert first != hn


def test_ulim_reuses_a_given_router_and_trains_one_otherwise() -> None:
    router = train("PGIN", LOG, config=ULIM_CONFIG, stream=None)
    given = train("ULIM", LOG, config=ULIM_CONFIG, router=router, stream=None)
    assert given.router is router
    own = train("ULIM", LOG, config=ULIM_CONFIG, stream=None)
    assert own.router is not None and own.router.name == "PGIN"
    assert evaluate(own).values == evaluate(given).values  # the same seed trains the same PGIN
    with pytest.raises(TypeError, match="router: expected a TrainedModel of PGIN"):
        train("ULIM", LOG, config=ULIM_CONFIG, router=given, stream=None)
    with pytest.raises(ValueError, match="router: only ULIM and its ablations route by PGIN, got one for MIND"):
        train("MIND", LOG, config=ULIM_CONFIG, router=router, stream=None)


def test_profile_fields_reach_the_models_that_read_them() -> None:
    fields = len(LOG.profile)
    values = sum(len(v) for v in LOG.profile_values.values())
    assert train("MIND", LOG, config=ULIM_CONFIG, stream=None).model.config.num_fields == fields
    assert train("PGIN", LOG, config=ULIM_CONFIG, stream=None).model.config.user_feature_dim == values
    for name in ("UMI", "DSSM", "MIND+HN"):
        tables = [v for k, v in train(name, LOG, config=UMI_CONFIG, stream=None).model.params.items()
                  if "profile" in k]
        assert tables and tables[0].shape[0] == values


def _with_profile(log: Interactions, names: tuple[str, ...]) -> Interactions:
    """The log with only the profile fields `names`."""
    return dataclasses.replace(log, profile={n: log.profile[n] for n in names},
                               profile_values={n: log.profile_values[n] for n in names})


@pytest.mark.parametrize("config", [ULIM_CONFIG, UMI_CONFIG], ids=["ulim", "umi"])
def test_a_profile_width_that_does_not_match_names_profile_ids_and_num_fields(config: object) -> None:
    trained = train("MIND", LOG, config=config, stream=None)  # type: ignore[arg-type]
    same = _with_profile(LOG, tuple(LOG.profile))
    evaluate(trained, same, trained.split)  # the negative control: the same width evaluates
    narrow = _with_profile(LOG, tuple(LOG.profile)[:2])
    with pytest.raises(ValueError, match=r"profile_ids.*num_fields|num_fields.*profile_ids"):
        evaluate(trained, narrow, trained.split)


def test_evaluate_on_the_validation_requests_or_another_split() -> None:
    trained = train("YouTube DNN", LOG, config=ULIM_CONFIG, stream=None)
    assert evaluate(trained, requests="validation").values != {}
    other = evaluate(trained, LOG, PROTOCOLS[STRONG_GENERALIZATION])
    assert other.protocol.startswith(STRONG_GENERALIZATION)
    assert evaluate(trained, LOG).protocol.startswith(LEAVE_LAST_OUT)
    with pytest.raises(ValueError, match="requests"):
        evaluate(trained, requests="train")
    with pytest.raises(ValueError, match="split: a split of another log needs that log"):
        evaluate(trained, split=PROTOCOLS[LEAVE_LAST_OUT])


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"name: expected one of \('YouTube DNN', 'MIND'.*'UMI w/o DAR'"):
        train("MIND++", LOG, stream=None)
    with pytest.raises(TypeError, match=r"name: expected one of \('YouTube DNN'"):
        train(3, LOG, stream=None)  # type: ignore[arg-type]


def test_a_config_of_a_pipeline_that_does_not_implement_the_model_is_refused() -> None:
    with pytest.raises(TypeError, match="config: ULIM is trained by a ULIMPipelineConfig, got a UMIPipelineConfig"):
        train("ULIM", LOG, config=UMI_CONFIG, stream=None)
    with pytest.raises(TypeError, match="config: UMI is trained by a UMIPipelineConfig, got a ULIMPipelineConfig"):
        train("UMI", LOG, config=ULIM_CONFIG, stream=None)
    with pytest.raises(TypeError, match="config: expected a ULIMPipelineConfig or a UMIPipelineConfig"):
        train("MIND", LOG, config=TrainConfig(), stream=None)  # type: ignore[arg-type]


def test_a_split_of_another_log_is_refused() -> None:
    smaller = generate_profile_data(ProfileDataConfig(
        num_users=20, num_items=24, num_categories=6, num_styles=2, num_audiences=2,
        min_interests=1, max_interests=2, min_length=6, max_length=10,
    )).interactions
    for config in (ULIM_CONFIG, UMI_CONFIG):
        with pytest.raises(ValueError, match=r"train_end: expected shape \(40,\)"):
            train("MIND", LOG, leave_last_out(smaller), config, stream=None)


def test_ulim_pipeline_config_is_checked() -> None:
    with pytest.raises(ValueError, match="config.num_routes"):
        ULIMPipelineConfig(num_routes=0)
    with pytest.raises(TypeError, match="config.seq: expected a SequenceConfig"):
        ULIMPipelineConfig(seq=TrainConfig())  # type: ignore[arg-type]


def test_the_pipelines_listed_are_the_config_types() -> None:
    assert registry.PIPELINES == ("ulim", "umi")
    for info in MODELS.values():
        assert set(info.pipelines) <= set(registry.PIPELINES) and info.predicts in ("items", "categories")


def _readme_example() -> str:
    """The Python block of the README's section "Train and evaluate any model on your log"."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Train and evaluate any model on your log"):]
    body = section[section.index("```python\n") + len("```python\n"):]
    return body[:body.index("```")]


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_readme_example(), "README.md", "exec"), {})  # noqa: S102 - the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" {")[0] for line in lines] == ["YouTube DNN", "MIND+HN", "UMI"]
    assert all("'HitRate@50'" in line for line in lines)
