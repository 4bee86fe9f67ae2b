"""Golden cases and the reference adapter of the `dssm` model (spec/dssm.md)."""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import CaseSpec, CaseTensors, Config, Result, Tensors, upstream_like
from refimpl.cases.umi import FIELD_DIM, FIELDS, PROFILE_VALUES
from refimpl.models.dssm import DSSMConfig, dssm_backward, dssm_forward, dssm_init
from refimpl.models.umi import UserBatch

SPEC = "spec/dssm.md"
BATCH, VOCAB, DIM, HIDDEN = 4, 7, 4, 5


def dssm_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    profile_ids = inputs["profile_ids"]
    b = profile_ids.shape[0]
    cfg = DSSMConfig(
        num_items=params["item_table"].shape[0],
        num_profile_values=params["profile_table"].shape[0],
        num_fields=profile_ids.shape[1],
        dim=params["item_table"].shape[1],
        profile_dim=params["profile_table"].shape[1],
        hidden=params["mlp_W1"].shape[1],
    )
    # DSSM reads the profile only: the batch carries no behaviours (L = 0)
    batch = UserBatch(
        behaviour_ids=np.zeros((b, 0), dtype=np.int64),
        mask=np.zeros((b, 0), dtype=bool),
        profile_ids=profile_ids,
        initial_logits=np.zeros((b, 0, 1), dtype=params["item_table"].dtype),
    )
    users, cache = dssm_forward(params, batch, cfg)
    grads = dssm_backward(cache, upstream["d_users"])
    return Result(
        outputs={"users": users},
        grads={f"d_{name}": g for name, g in grads.items()},
        intermediates={"hidden": cache.tower.activated[0]},
    )


COMPONENTS = {"dssm": dssm_reference}


def _build(rng: np.random.Generator) -> CaseTensors:
    cfg = DSSMConfig(
        num_items=VOCAB, num_profile_values=PROFILE_VALUES, num_fields=FIELDS, dim=DIM, profile_dim=FIELD_DIM,
        hidden=HIDDEN,
    )
    params = dssm_init(rng, cfg)
    for name in ("mlp_b1", "mlp_b2"):  # nonzero biases so a transposed or dropped bias shows
        params[name] = 0.1 * rng.standard_normal(params[name].shape)
    profile_ids = rng.integers(0, PROFILE_VALUES, (BATCH, FIELDS)).astype(np.int64)
    profile_ids[1] = profile_ids[0]  # two users with one profile: the same vector
    return CaseTensors(
        inputs={"profile_ids": profile_ids},
        params=params,
        upstream=upstream_like(rng, {"users": (BATCH, 1, DIM)}),
    )


CASES = (
    CaseSpec(
        "dssm",
        "small",
        f"Profile tower, rows 0 and 1 share a profile: B={BATCH}, C={FIELDS} fields of F={FIELD_DIM}, "
        f"V_p={PROFILE_VALUES}, hidden {HIDDEN}, D={DIM}, V={VOCAB} (the item table gets a zero gradient).",
        f"{SPEC}#model",
        {},
        _build,
    ),
)
