"""DSSM, the profile-only baseline: its loss is the sampled softmax of one user vector, its
gradients match finite differences, and it ignores the behaviours."""

from __future__ import annotations

import numpy as np
import pytest

from refimpl.gradcheck import assert_gradients_match, check_gradients
from refimpl.models.dssm import DSSMConfig, dssm_forward, dssm_init, dssm_loss
from refimpl.models.umi import Params, UserBatch
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.nn.sampled_softmax import SampledSoftmaxConfig, sampled_softmax_forward

CFG = DSSMConfig(num_items=8, num_profile_values=6, num_fields=2, dim=3, profile_dim=2, hidden=4)
POSITIVES, NEGATIVES = np.array([1, 2, 3]), np.array([4, 5, 1, 7])


def batch(seed: int, length: int = 4) -> UserBatch:
    rng = np.random.default_rng(seed)
    return UserBatch(
        behaviour_ids=rng.integers(0, CFG.num_items, (3, length)),
        mask=np.ones((3, length), dtype=bool),
        profile_ids=rng.integers(0, CFG.num_profile_values, (3, CFG.num_fields)),
        initial_logits=rng.standard_normal((3, length, 2)),
    )


def params(seed: int = 0) -> Params:
    p = dssm_init(np.random.default_rng(seed), CFG)
    p["mlp_b1"] = p["mlp_b1"] + 0.1  # nonzero biases so a dropped bias shows
    return p


def sampled_softmax_of_user(p: Params, users: np.ndarray, cfg: SampledSoftmaxConfig) -> float:
    loss, _ = sampled_softmax_forward(
        users, p["item_table"][POSITIVES], p["item_table"][NEGATIVES], POSITIVES, NEGATIVES, cfg
    )
    return float(loss)


@pytest.mark.parametrize("mode", ["standard", "harder_negatives"])
def test_loss_is_the_sampled_softmax_of_the_user_vector(mode: str) -> None:
    p, b = params(), batch(0)
    users, _ = dssm_forward(p, b, CFG)
    readout = ReadoutConfig(mode, SampledSoftmaxConfig(temperature=0.5))
    loss, _ = dssm_loss(p, b, POSITIVES, NEGATIVES, CFG, readout)
    assert float(loss) == pytest.approx(sampled_softmax_of_user(p, users[:, 0], readout.loss), rel=1e-12)
    # negative control: the same check on another user's vector fails
    others = np.roll(users[:, 0], 1, axis=0)
    assert float(loss) != pytest.approx(sampled_softmax_of_user(p, others, readout.loss), rel=1e-6)


def test_gradients_match_finite_differences() -> None:
    p, b = params(1), batch(1)
    _, grads = dssm_loss(p, b, POSITIVES, NEGATIVES, CFG, ReadoutConfig())
    f = lambda at: float(dssm_loss(at, b, POSITIVES, NEGATIVES, CFG, ReadoutConfig())[0])  # noqa: E731
    assert_gradients_match(check_gradients(f, p, grads))
    broken = dict(grads, mlp_b1=np.zeros_like(grads["mlp_b1"]))  # negative control
    assert check_gradients(f, p, broken)


def test_behaviours_are_not_read_and_one_profile_gives_one_vector() -> None:
    p = params(2)
    users, _ = dssm_forward(p, batch(2), CFG)
    other = batch(3)
    shuffled = UserBatch(other.behaviour_ids, other.mask, batch(2).profile_ids, other.initial_logits[:, :, :1])
    np.testing.assert_array_equal(dssm_forward(p, shuffled, CFG)[0], users)
    same = UserBatch(other.behaviour_ids, other.mask, np.repeat(other.profile_ids[:1], 3, axis=0), other.initial_logits)
    vectors = dssm_forward(p, same, CFG)[0]
    np.testing.assert_array_equal(vectors, np.broadcast_to(vectors[:1], vectors.shape))
    assert users.shape == (3, 1, CFG.dim)


def test_bad_inputs_raise_errors_naming_the_argument() -> None:
    p, b = params(), batch(0)
    with pytest.raises(ValueError, match="profile_ids"):
        dssm_forward(p, UserBatch(b.behaviour_ids, b.mask, b.profile_ids[:, :1], b.initial_logits), CFG)
    with pytest.raises(ValueError, match="mlp_W1"):
        dssm_forward(dict(p, mlp_W1=p["mlp_W1"][:-1]), b, CFG)
    with pytest.raises(ValueError, match="cfg.hidden"):
        dssm_init(np.random.default_rng(0), DSSMConfig(8, 6, 2, 3, 2, hidden=0))
    with pytest.raises(TypeError, match="batch"):
        dssm_forward(p, b.profile_ids, CFG)  # type: ignore[arg-type]
