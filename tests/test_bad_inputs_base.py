"""Bad inputs to every public function of the base components (linear, mlp, attention, pooling,
embedding) raise ValueError (shapes, values) or TypeError (dtypes) naming the argument: never an
IndexError, a bare numpy broadcasting error, or a NaN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from refimpl.nn.attention import (
    PARAM_NAMES,
    AttentionConfig,
    AttentionParams,
    attention_backward,
    attention_forward,
    masked_softmax,
    mhsa_backward,
    mhsa_forward,
    softmax_backward,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.embedding import embedding_backward, embedding_forward
from refimpl.nn.linear import LinearParams, linear_backward, linear_forward
from refimpl.nn.mlp import MLPConfig, MLPParams, mlp_backward, mlp_forward
from refimpl.nn.pooling import masked_mean_pool_backward, masked_mean_pool_forward

RNG = np.random.default_rng(0)
D = 4
X = RNG.standard_normal((2, 3, D))
MASK = np.ones((2, 3), dtype=bool)
LIN = LinearParams(W=RNG.standard_normal((D, 5)), b=np.zeros(5))
ATT = AttentionParams(**{n: RNG.standard_normal((D, D) if n[0] == "W" else (D,)) for n in PARAM_NAMES})
H2 = AttentionConfig(num_heads=2)
MLP = MLPParams((LIN, LinearParams(W=RNG.standard_normal((5, 2)), b=np.zeros(2))))
MLP_CFG = MLPConfig(("relu", "sigmoid"))


def _att_params(**changed: Any) -> AttentionParams:
    return AttentionParams(**{**vars(ATT), **changed})


def _linear_cache() -> Any:
    return linear_forward(LIN, X)[1]


def _mlp_cache() -> Any:
    return mlp_forward(MLP, X, MLP_CFG)[1]


def _att_cache() -> Any:
    return attention_forward(ATT, X, X, MASK, H2)[1]


def _target_cache() -> Any:
    return target_attention_forward(ATT, X[:, 0], X, MASK, H2)[1]


def _pool_cache() -> Any:
    return masked_mean_pool_forward(X, MASK)[1]


def _embedding_cache() -> Any:
    return embedding_forward(np.ones((5, D)), np.array([[0, 4]]))[1]


# (label, call, exception type, text the message must contain: the argument's name)
BAD_CALLS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    # linear
    ("linear x wrong width", lambda: linear_forward(LIN, X[..., :3]), ValueError, "x:"),
    ("linear x 0-d", lambda: linear_forward(LIN, np.array(1.0)), ValueError, "x:"),
    ("linear x not an array", lambda: linear_forward(LIN, [[1.0] * D]), TypeError, "x:"),  # type: ignore[arg-type]
    ("linear x int", lambda: linear_forward(LIN, np.ones((2, D), int)), TypeError, "x:"),
    ("linear x float32 vs W float64", lambda: linear_forward(LIN, X.astype(np.float32)), TypeError, "x:"),
    ("linear b wrong size", lambda: linear_forward(LinearParams(LIN.W, np.zeros(4)), X), ValueError, "b:"),
    ("linear W rank 1", lambda: linear_forward(LinearParams(np.zeros(D), LIN.b), X), ValueError, "W:"),
    ("linear d_y wrong shape", lambda: linear_backward(_linear_cache(), np.ones((2, 3, 4))), ValueError, "d_y:"),
    ("linear d_y float32", lambda: linear_backward(_linear_cache(), np.ones((2, 3, 5), np.float32)), TypeError, "d_y:"),
    # mlp
    ("mlp x wrong width", lambda: mlp_forward(MLP, X[..., :2], MLP_CFG), ValueError, "x:"),
    ("mlp chained widths", lambda: mlp_forward(MLPParams((LIN, LIN)), X, MLP_CFG), ValueError, "W_1:"),
    (
        "mlp bias of layer 1",
        lambda: mlp_forward(MLPParams((LIN, LinearParams(MLP.layers[1].W, np.zeros(3)))), X, MLP_CFG),
        ValueError,
        "b_1:",
    ),
    ("mlp activation count", lambda: mlp_forward(MLP, X, MLPConfig(("relu",))), ValueError, "cfg.activations"),
    (
        "mlp unknown activation",
        lambda: mlp_forward(MLP, X, MLPConfig(("relu", "tanh"))),
        ValueError,
        "cfg.activations[1]",
    ),
    ("mlp no layers", lambda: mlp_forward(MLPParams(()), X, MLPConfig(())), ValueError, "params.layers"),
    ("mlp x int", lambda: mlp_forward(MLP, np.ones((2, D), int), MLP_CFG), TypeError, "x:"),
    ("mlp d_out wrong shape", lambda: mlp_backward(_mlp_cache(), np.ones((2, 3, 5))), ValueError, "d_out:"),
    # attention kernel
    ("attention q_in rank 2", lambda: attention_forward(ATT, X[0], X, MASK, H2), ValueError, "q_in:"),
    ("attention kv_in width", lambda: attention_forward(ATT, X, X[..., :2], MASK, H2), ValueError, "kv_in:"),
    ("attention kv_in batch", lambda: attention_forward(ATT, X, X[:1], MASK, H2), ValueError, "kv_in:"),
    ("attention key_mask shape", lambda: attention_forward(ATT, X, X, MASK[:, :2], H2), ValueError, "key_mask:"),
    ("attention key_mask int", lambda: attention_forward(ATT, X, X, MASK.astype(int), H2), TypeError, "key_mask:"),
    ("attention query_mask shape", lambda: attention_forward(ATT, X, X, MASK, H2, MASK[:1]), ValueError, "query_mask:"),
    ("attention q_in int", lambda: attention_forward(ATT, X.astype(int), X, MASK, H2), TypeError, "q_in:"),
    ("attention mixed dtypes", lambda: attention_forward(ATT, X, X.astype(np.float32), MASK, H2), TypeError, "kv_in:"),
    (
        "attention Wk shape",
        lambda: attention_forward(_att_params(Wk=np.zeros((D, 3))), X, X, MASK, H2),
        ValueError,
        "Wk:",
    ),
    (
        "attention bo float32",
        lambda: attention_forward(_att_params(bo=np.zeros(D, np.float32)), X, X, MASK, H2),
        TypeError,
        "bo:",
    ),
    (
        "attention heads not dividing D",
        lambda: attention_forward(ATT, X, X, MASK, AttentionConfig(3)),
        ValueError,
        "cfg.num_heads",
    ),
    (
        "attention zero heads",
        lambda: attention_forward(ATT, X, X, MASK, AttentionConfig(0)),
        ValueError,
        "cfg.num_heads",
    ),
    (
        "attention heads is a bool",
        lambda: attention_forward(ATT, X, X, MASK, AttentionConfig(True)),
        TypeError,
        "cfg.num_heads",
    ),
    ("attention params not AttentionParams", lambda: attention_forward(vars(ATT), X, X, MASK, H2), TypeError, "params"),  # type: ignore[arg-type]
    ("attention d_out wrong shape", lambda: attention_backward(_att_cache(), X[:, :2]), ValueError, "d_out:"),
    ("attention d_out float32", lambda: attention_backward(_att_cache(), X.astype(np.float32)), TypeError, "d_out:"),
    ("mhsa x rank 2", lambda: mhsa_forward(ATT, X[0], MASK, H2), ValueError, "x:"),
    ("mhsa mask shape", lambda: mhsa_forward(ATT, X, MASK.T, H2), ValueError, "mask:"),
    ("mhsa mask float", lambda: mhsa_forward(ATT, X, MASK.astype(float), H2), TypeError, "mask:"),
    ("mhsa x float32 vs params", lambda: mhsa_forward(ATT, X.astype(np.float32), MASK, H2), TypeError, "Wq:"),
    ("mhsa heads not dividing D", lambda: mhsa_forward(ATT, X, MASK, AttentionConfig(3)), ValueError, "cfg.num_heads"),
    ("mhsa d_out wrong shape", lambda: mhsa_backward(_att_cache(), X[0]), ValueError, "d_out:"),
    ("target query rank 3", lambda: target_attention_forward(ATT, X, X, MASK, H2), ValueError, "query:"),
    ("target seq width", lambda: target_attention_forward(ATT, X[:, 0], X[..., :2], MASK, H2), ValueError, "seq:"),
    ("target mask shape", lambda: target_attention_forward(ATT, X[:, 0], X, MASK[:, :1], H2), ValueError, "mask:"),
    ("target d_out wrong shape", lambda: target_attention_backward(_target_cache(), X), ValueError, "d_out:"),
    ("masked_softmax mask int", lambda: masked_softmax(X, MASK.astype(int)), TypeError, "mask:"),
    ("masked_softmax mask shape", lambda: masked_softmax(X, np.ones((2, 2), bool)), ValueError, "mask:"),
    ("masked_softmax scores int", lambda: masked_softmax(np.ones(3, int), np.ones(3, bool)), TypeError, "scores:"),
    ("softmax_backward shapes", lambda: softmax_backward(X, X[:, :2]), ValueError, "d_weights:"),
    # pooling
    ("pool x rank 2", lambda: masked_mean_pool_forward(X[0], MASK), ValueError, "x:"),
    ("pool mask shape", lambda: masked_mean_pool_forward(X, MASK[:, :2]), ValueError, "mask:"),
    ("pool mask int", lambda: masked_mean_pool_forward(X, MASK.astype(int)), TypeError, "mask:"),
    ("pool x int", lambda: masked_mean_pool_forward(X.astype(int), MASK), TypeError, "x:"),
    ("pool d_out wrong shape", lambda: masked_mean_pool_backward(_pool_cache(), X), ValueError, "d_out:"),
    # embedding
    ("embedding id too large", lambda: embedding_forward(np.ones((5, D)), np.array([[0, 5]])), ValueError, "ids:"),
    ("embedding negative id", lambda: embedding_forward(np.ones((5, D)), np.array([-1])), ValueError, "ids:"),
    ("embedding float ids", lambda: embedding_forward(np.ones((5, D)), np.array([0.0])), TypeError, "ids:"),
    ("embedding bool ids", lambda: embedding_forward(np.ones((5, D)), np.array([True])), TypeError, "ids:"),
    ("embedding table rank 1", lambda: embedding_forward(np.ones(5), np.array([0])), ValueError, "table:"),
    ("embedding table int", lambda: embedding_forward(np.ones((5, D), int), np.array([0])), TypeError, "table:"),
    (
        "embedding d_out wrong shape",
        lambda: embedding_backward(_embedding_cache(), np.ones((1, 3, D))),
        ValueError,
        "d_out:",
    ),
    (
        "embedding d_out float32",
        lambda: embedding_backward(_embedding_cache(), np.ones((1, 2, D), np.float32)),
        TypeError,
        "d_out:",
    ),
]


def rejection_problem(call: Callable[[], object], kind: type[Exception], name: str) -> str | None:
    """None when `call` raises `kind` with `name` in its message; otherwise what went wrong."""
    try:
        result = call()
    except kind as error:
        return None if name in str(error) else f"message does not name {name!r}: {error}"
    except Exception as error:  # noqa: BLE001 - reporting the wrong exception is the point
        return f"raised {type(error).__name__} instead of {kind.__name__}: {error}"
    return f"accepted the bad input and returned {type(result).__name__}"


@pytest.mark.parametrize(("call", "kind", "name"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_rejected_naming_the_argument(
    call: Callable[[], object], kind: type[Exception], name: str
) -> None:
    assert rejection_problem(call, kind, name) is None


def test_the_good_inputs_behind_the_bad_ones_are_accepted() -> None:
    linear_backward(_linear_cache(), np.ones((2, 3, 5)))
    mlp_backward(_mlp_cache(), np.ones((2, 3, 2)))
    attention_backward(_att_cache(), X)
    target_attention_backward(_target_cache(), X[:, 0])
    masked_mean_pool_backward(_pool_cache(), X[:, 0])
    embedding_backward(_embedding_cache(), np.ones((1, 2, D)))
    mhsa_forward(ATT, X, MASK, AttentionConfig(4))


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: X @ LIN.W[:3], "does not name"),  # numpy's own message names no argument
        (lambda: np.ones((5, D))[np.array([5])], "raised IndexError"),
        (lambda: np.ones((5, D))[np.array([-1])], "accepted"),  # negative ids silently wrap around
    ],
)
def test_negative_control_unvalidated_code_is_caught(call: Callable[[], object], expected: str) -> None:
    problem = rejection_problem(call, ValueError, "x:")
    assert problem is not None
    assert expected in problem
