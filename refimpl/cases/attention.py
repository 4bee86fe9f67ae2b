"""Golden cases and reference adapters of the attention family: `attention`, `mhsa`,
`target_attention` (spec/attention.md).

Coverage: heads 1/2/4 for each of cross attention, self attention (MHSA) and target attention; two
tiny hand-checkable MHSA cases (their numbers are in the spec); the realistic B=8, L=50, D=32, H=4;
fully masked rows, a single valid key, masked queries, and large logits.
"""

from __future__ import annotations

import numpy as np

from refimpl._check import BoolArray
from refimpl.cases._base import (
    Builder,
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.nn.attention import (
    PARAM_NAMES,
    AttentionCache,
    AttentionConfig,
    AttentionParams,
    TargetAttentionCache,
    attention_backward,
    attention_forward,
    mhsa_backward,
    mhsa_forward,
    target_attention_backward,
    target_attention_forward,
)

SPEC = "spec/attention.md"


def param_grads(grads: AttentionParams) -> Tensors:
    """d_Wq, ..., d_bo by the golden names of the attention params."""
    return {f"d_{name}": getattr(grads, name) for name in PARAM_NAMES}


def _config(config: Config) -> AttentionConfig:
    return AttentionConfig(num_heads=config["num_heads"])


def _intermediates(cache: AttentionCache | TargetAttentionCache) -> Tensors:
    """attn_weights (B, H, Q, L) after the masked softmax, then context (B, Q, D): the heads'
    weighted values merged back to width D, before the output projection Wo."""
    return {"attn_weights": cache.weights, "context": cache.context}


def attention_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = attention_forward(
        AttentionParams(**params),
        inputs["q_in"],
        inputs["kv_in"],
        inputs["key_mask"],
        _config(config),
        query_mask=inputs["query_mask"],
    )
    grads, d_q_in, d_kv_in = attention_backward(cache, upstream["d_out"])
    return Result(
        outputs={"out": out},
        grads={"d_q_in": d_q_in, "d_kv_in": d_kv_in, **param_grads(grads)},
        intermediates=_intermediates(cache),
    )


def mhsa_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = mhsa_forward(AttentionParams(**params), inputs["x"], inputs["mask"], _config(config))
    grads, d_x = mhsa_backward(cache, upstream["d_out"])
    return Result(
        outputs={"out": out},
        grads={"d_x": d_x, **param_grads(grads)},
        intermediates=_intermediates(cache),
    )


def target_attention_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = target_attention_forward(
        AttentionParams(**params), inputs["query"], inputs["seq"], inputs["mask"], _config(config)
    )
    grads, d_query, d_seq = target_attention_backward(cache, upstream["d_out"])
    # One query per row: the query axis is dropped, attn_weights (B, H, L) and context (B, D).
    return Result(
        outputs={"out": out},
        grads={"d_query": d_query, "d_seq": d_seq, **param_grads(grads)},
        intermediates={k: v.squeeze(-2) for k, v in _intermediates(cache).items()},
    )


COMPONENTS = {
    "attention": attention_reference,
    "mhsa": mhsa_reference,
    "target_attention": target_attention_reference,
}


def random_params(rng: np.random.Generator, d: int, scale: float = 1.0) -> Tensors:
    """Weights ~ N(0, scale^2 / D) (unit-variance projections), biases ~ N(0, 0.1^2)."""
    return {
        name: rng.standard_normal((d, d)) * scale / np.sqrt(d) if name.startswith("W") else 0.1 * rng.standard_normal(d)
        for name in PARAM_NAMES
    }


def random_mask(rng: np.random.Generator, b: int, n: int) -> BoolArray:
    """A mask with a random number (at least one) of valid positions per row."""
    mask = rng.random((b, n)) < 0.7
    mask[np.arange(b), rng.integers(0, n, size=b)] = True
    return mask


def _special_rows(mask: BoolArray, kinds: tuple[str, ...]) -> BoolArray:
    """Overwrite the first rows: 'empty' (all masked), 'single' (one valid key, mid-row), 'full'."""
    mask = mask.copy()
    length = mask.shape[1]
    for row, kind in enumerate(kinds):
        mask[row] = kind == "full"
        if kind == "single":
            mask[row, length // 2] = True
    return mask


def _mhsa(b: int, length: int, d: int, mask_rows: tuple[str, ...] = (), scale: float = 1.0) -> Builder:
    """A builder for an MHSA case; mask_rows names special rows (see `_special_rows`)."""

    def build(rng: np.random.Generator) -> CaseTensors:
        x = rng.standard_normal((b, length, d))
        mask = _special_rows(random_mask(rng, b, length), mask_rows)
        return CaseTensors(
            inputs={"x": x, "mask": mask},
            params=random_params(rng, d, scale),
            upstream=upstream_like(rng, {"out": (b, length, d)}),
        )

    return build


def _cross(b: int, q: int, length: int, d: int, key_rows: tuple[str, ...] = (), all_queries: bool = False) -> Builder:
    """Cross attention, Q queries over L keys; key_rows as in `_special_rows`."""

    def build(rng: np.random.Generator) -> CaseTensors:
        key_mask = _special_rows(random_mask(rng, b, length), key_rows)
        query_mask = random_mask(rng, b, q)
        if all_queries:
            query_mask[:] = True
        return CaseTensors(
            inputs={
                "q_in": rng.standard_normal((b, q, d)),
                "kv_in": rng.standard_normal((b, length, d)),
                "key_mask": key_mask,
                "query_mask": query_mask,
            },
            params=random_params(rng, d),
            upstream=upstream_like(rng, {"out": (b, q, d)}),
        )

    return build


def _target(b: int, length: int, d: int, mask_rows: tuple[str, ...] = (), scale: float = 1.0) -> Builder:
    """Target attention, one query per row; mask_rows as in `_special_rows`."""

    def build(rng: np.random.Generator) -> CaseTensors:
        mask = _special_rows(random_mask(rng, b, length), mask_rows)
        return CaseTensors(
            inputs={
                "query": rng.standard_normal((b, d)),
                "seq": rng.standard_normal((b, length, d)),
                "mask": mask,
            },
            params=random_params(rng, d, scale),
            upstream=upstream_like(rng, {"out": (b, d)}),
        )

    return build


def _tiny_hand(valid: tuple[bool, bool]) -> Builder:
    """B=1, L=2, D=2, H=1 with numbers simple enough to follow by hand (spec/attention.md):
    x = [[1, 0], [0, 1]], Wq = Wk = Wo = I, Wv = [[1, 2], [0, 1]], bo = [0.5, 0], other biases 0."""

    def build(rng: np.random.Generator) -> CaseTensors:
        eye = np.eye(2)
        zero = np.zeros(2)
        params = {
            "Wq": eye,
            "bq": zero,
            "Wk": eye.copy(),
            "bk": zero.copy(),
            "Wv": np.array([[1.0, 2.0], [0.0, 1.0]]),
            "bv": zero.copy(),
            "Wo": eye.copy(),
            "bo": np.array([0.5, 0.0]),
        }
        return CaseTensors(
            inputs={"x": np.array([[[1.0, 0.0], [0.0, 1.0]]]), "mask": np.array([valid])},
            params=params,
            upstream={"d_out": np.array([[[1.0, -1.0], [0.5, 2.0]]])},
        )

    return build


_SELF = f"{SPEC}#multi-head-self-attention"
_CROSS = f"{SPEC}#the-kernel"
_TARGET = f"{SPEC}#target-attention"
_EDGE = f"{SPEC}#edge-cases"
_HAND = f"{SPEC}#worked-example"

CASES = (
    CaseSpec(
        "mhsa",
        "tiny_hand",
        "B=1, L=2, D=2, H=1, both positions valid; numbers in the spec.",
        _HAND,
        {"num_heads": 1},
        _tiny_hand((True, True)),
    ),
    CaseSpec(
        "mhsa",
        "tiny_hand_masked",
        "The tiny hand case with position 1 masked: query 0 sees only key 0, row 1 is zero.",
        _HAND,
        {"num_heads": 1},
        _tiny_hand((True, False)),
    ),
    CaseSpec(
        "mhsa",
        "four_heads",
        "B=2, L=6, D=8, H=4 (head width 2), random masks.",
        _SELF,
        {"num_heads": 4},
        _mhsa(2, 6, 8),
    ),
    CaseSpec(
        "mhsa",
        "masked_rows",
        "B=3, L=4, D=4, H=2: row 0 fully masked (zeros, zero gradient), row 1 a single valid "
        "position, row 2 fully valid.",
        _EDGE,
        {"num_heads": 2},
        _mhsa(3, 4, 4, ("empty", "single", "full")),
    ),
    CaseSpec(
        "mhsa",
        "realistic",
        "B=8, L=50, D=32, H=4; row 0 fully masked, row 1 a single valid key. Intermediates "
        "are not stored (attn_weights alone would be 640 kB); the small cases carry them.",
        _SELF,
        {"num_heads": 4},
        _mhsa(8, 50, 32, ("empty", "single")),
        store_intermediates=False,
    ),
    CaseSpec(
        "mhsa",
        "large_logits",
        "Weights scaled by 30 so scores reach the hundreds; B=2, L=6, D=8, H=2.",
        _EDGE,
        {"num_heads": 2},
        _mhsa(2, 6, 8, ("full",), scale=30.0),
    ),
    CaseSpec(
        "attention",
        "cross_one_head",
        "Queries and keys differ: B=2, Q=3, L=5, D=4, H=1, every query valid.",
        _CROSS,
        {"num_heads": 1},
        _cross(2, 3, 5, 4, all_queries=True),
    ),
    CaseSpec(
        "attention",
        "cross_masked_queries",
        "B=3, Q=4, L=6, D=8, H=2; row 0 has no valid key, random masked queries.",
        _CROSS,
        {"num_heads": 2},
        _cross(3, 4, 6, 8, ("empty",)),
    ),
    CaseSpec(
        "attention",
        "cross_four_heads",
        "B=2, Q=5, L=3, D=8, H=4 (more queries than keys); row 0 has a single valid key.",
        _CROSS,
        {"num_heads": 4},
        _cross(2, 5, 3, 8, ("single",)),
    ),
    CaseSpec(
        "target_attention",
        "one_head",
        "One query per row: B=3, L=6, D=4, H=1.",
        _TARGET,
        {"num_heads": 1},
        _target(3, 6, 4),
    ),
    CaseSpec(
        "target_attention",
        "small",
        "One query per row: B=4, L=7, D=8, H=2; row 0 fully masked.",
        _TARGET,
        {"num_heads": 2},
        _target(4, 7, 8, ("empty",)),
    ),
    CaseSpec(
        "target_attention",
        "four_heads_single_key",
        "B=3, L=5, D=8, H=4; row 0 a single valid key (its weight is exactly 1), row 1 all valid.",
        _TARGET,
        {"num_heads": 4},
        _target(3, 5, 8, ("single", "full")),
    ),
    CaseSpec(
        "target_attention",
        "large_logits",
        "Weights scaled by 30 (scores in the hundreds, softmax nearly one-hot); B=3, L=6, "
        "D=8, H=2; row 0 fully masked.",
        _EDGE,
        {"num_heads": 2},
        _target(3, 6, 8, ("empty",), scale=30.0),
    ),
)
