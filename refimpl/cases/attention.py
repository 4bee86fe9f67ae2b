"""Golden cases and reference adapters of the attention family: `attention`, `mhsa`,
`target_attention` (spec/attention.md).

Coverage: heads 1/2/4 for each of cross attention, self attention (MHSA) and target attention; two
tiny hand-checkable MHSA cases (their numbers are in the spec); the realistic B=8, L=50, D=32, H=4;
fully masked rows, a single valid key, masked queries, and large logits.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    attention_backward,
    attention_forward,
    mhsa_backward,
    mhsa_forward,
    target_attention_backward,
    target_attention_forward,
)

SPEC = "spec/attention.md"
# Scores in the hundreds: gradients whose value is 0 are sums of terms in the thousands, so a correct
# float64 port ordering the softmax backward otherwise (flash attention's d_context . context) lands
# up to 6e-10 away (spec/golden.md, "Float64 tolerances"); 1e-8 keeps such ports at 6% of the allowed error.
LARGE_LOGITS_ATOL = 1e-8


def param_grads(grads: AttentionParams) -> Tensors:
    """d_Wq, ..., d_bo by the golden names of the attention params."""
    return {f"d_{name}": getattr(grads, name) for name in PARAM_NAMES}


def _config(config: Config) -> AttentionConfig:
    return AttentionConfig(num_heads=config["num_heads"])


def _intermediates(cache: AttentionCache) -> Tensors:
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


@dataclass(frozen=True)
class AttentionShape:
    """The sizes a random case of one kernel form is drawn with (and described by).

    form: "mhsa" (x (B, L, D) attends to itself), "cross" (Q queries over L keys) or "target"
    (one query per row). `mask_rows` names special first rows of the (key) mask, as in
    `_special_rows`; `all_queries` makes every query of a cross case valid; `scale` scales the
    weights."""

    form: str
    batch: int
    length: int
    width: int
    queries: int = 1
    mask_rows: tuple[str, ...] = ()
    all_queries: bool = False
    scale: float = 1.0

    def describe(self, heads: int) -> str:
        queries = f", Q={self.queries}" if self.form == "cross" else ""
        return f"B={self.batch}{queries}, L={self.length}, D={self.width}, H={heads}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, length, d = self.batch, self.length, self.width
        if self.form == "mhsa":
            x = rng.standard_normal((b, length, d))
            mask = _special_rows(random_mask(rng, b, length), self.mask_rows)
            return CaseTensors(
                inputs={"x": x, "mask": mask},
                params=random_params(rng, d, self.scale),
                upstream=upstream_like(rng, {"out": (b, length, d)}),
            )
        if self.form == "cross":
            key_mask = _special_rows(random_mask(rng, b, length), self.mask_rows)
            query_mask = random_mask(rng, b, self.queries)
            if self.all_queries:
                query_mask[:] = True
            return CaseTensors(
                inputs={
                    "q_in": rng.standard_normal((b, self.queries, d)),
                    "kv_in": rng.standard_normal((b, length, d)),
                    "key_mask": key_mask,
                    "query_mask": query_mask,
                },
                params=random_params(rng, d, self.scale),
                upstream=upstream_like(rng, {"out": (b, self.queries, d)}),
            )
        mask = _special_rows(random_mask(rng, b, length), self.mask_rows)
        return CaseTensors(
            inputs={
                "query": rng.standard_normal((b, d)),
                "seq": rng.standard_normal((b, length, d)),
                "mask": mask,
            },
            params=random_params(rng, d, self.scale),
            upstream=upstream_like(rng, {"out": (b, d)}),
        )


COMPONENT_OF_FORM = {"mhsa": "mhsa", "cross": "attention", "target": "target_attention"}


def _random_case(
    name: str,
    why: str,
    section: str,
    heads: int,
    shape: AttentionShape,
    store_intermediates: bool = True,
    atol: float = 1e-9,
) -> CaseSpec:
    """A random case whose description is `why` followed by its declared shape and heads."""
    return CaseSpec(
        COMPONENT_OF_FORM[shape.form],
        name,
        f"{why}; {shape.describe(heads)}.",
        section,
        {"num_heads": heads},
        shape.build,
        store_intermediates=store_intermediates,
        atol=atol,
    )


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
        "The spec's worked example (x = I, Wq = Wk = Wo = I), both positions valid.",
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
    _random_case("four_heads", "Head width 2, random masks", _SELF, 4,
                 AttentionShape("mhsa", batch=2, length=6, width=8)),
    _random_case(
        "masked_rows",
        "Row 0 fully masked (zeros, zero gradient), row 1 a single valid position, row 2 fully valid",
        _EDGE,
        2,
        AttentionShape("mhsa", batch=3, length=4, width=4, mask_rows=("empty", "single", "full")),
    ),
    _random_case(
        "realistic",
        "Row 0 fully masked, row 1 a single valid key. Intermediates are not stored (attn_weights alone "
        "would be 640 kB); the small cases carry them",
        _SELF,
        4,
        AttentionShape("mhsa", batch=8, length=50, width=32, mask_rows=("empty", "single")),
        store_intermediates=False,
    ),
    _random_case("large_logits", "Weights scaled by 30 so scores reach the hundreds", _EDGE, 2,
                 AttentionShape("mhsa", batch=2, length=6, width=8, mask_rows=("full",), scale=30.0),
                 atol=LARGE_LOGITS_ATOL),
    _random_case("cross_one_head", "Queries and keys differ, every query valid", _CROSS, 1,
                 AttentionShape("cross", batch=2, queries=3, length=5, width=4, all_queries=True)),
    _random_case("cross_masked_queries", "Row 0 has no valid key, random masked queries", _CROSS, 2,
                 AttentionShape("cross", batch=3, queries=4, length=6, width=8, mask_rows=("empty",))),
    _random_case("cross_four_heads", "More queries than keys; row 0 has a single valid key", _CROSS, 4,
                 AttentionShape("cross", batch=2, queries=5, length=3, width=8, mask_rows=("single",))),
    _random_case("one_head", "One query per row", _TARGET, 1, AttentionShape("target", batch=3, length=6, width=4)),
    _random_case("small", "One query per row, row 0 fully masked", _TARGET, 2,
                 AttentionShape("target", batch=4, length=7, width=8, mask_rows=("empty",))),
    _random_case(
        "four_heads_single_key",
        "Row 0 a single valid key (its weight is exactly 1), row 1 all valid",
        _TARGET,
        4,
        AttentionShape("target", batch=3, length=5, width=8, mask_rows=("single", "full")),
    ),
    _random_case(
        "large_logits",
        "Weights scaled by 30 (scores in the hundreds, softmax nearly one-hot), row 0 fully masked",
        _EDGE,
        2,
        AttentionShape("target", batch=3, length=6, width=8, mask_rows=("empty",), scale=30.0),
        atol=LARGE_LOGITS_ATOL,
    ),
)
