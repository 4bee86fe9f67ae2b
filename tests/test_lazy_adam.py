"""Lazy Adam (refimpl.optim.lazy_adam_step, spec/optim.md#lazy-adam): dense Adam when every row is
present, absent rows left alone otherwise (with a negative control: dense Adam fails that check),
bad inputs, its in-place contract, `fit` with it, and ULIM's row-sparse item-table gradient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ulim import ITEM_CATEGORY, tiny_instance

import refimpl.models.ulim as ulim
from refimpl.cases._base import Tensors
from refimpl.cases.optim import run_lazy_adam_steps
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.nn.row_sparse import RowSparseGrad
from refimpl.optim import AdamConfig, AdamState, adam_init, adam_step, lazy_adam_step
from refimpl.train import TrainConfig, fit

Array = np.ndarray[Any, Any]
Grads = dict[str, Any]
Step = Callable[[dict[str, Array], Grads, AdamState, AdamConfig], tuple[dict[str, Array], AdamState]]
CFG = AdamConfig(lr=0.01, beta1=0.8, beta2=0.95)


def _copy(params: dict[str, Array]) -> dict[str, Array]:
    return {k: v.copy() for k, v in params.items()}


def _copy_state(state: AdamState) -> AdamState:
    return AdamState(state.step, _copy(state.m), _copy(state.v))


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), steps=st.integers(1, 4),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_every_row_present_is_dense_adam_bit_for_bit(seed: int, rows: int, steps: int, dtype: Any) -> None:
    rng = np.random.default_rng(seed)
    params = {"table": rng.standard_normal((rows, 3)).astype(dtype), "b": rng.standard_normal(2).astype(dtype)}
    lazy_params, dense_params = _copy(params), _copy(params)
    lazy_state, dense_state = adam_init(params), adam_init(params)
    for _ in range(steps):
        g = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        dense_params, dense_state = adam_step(dense_params, g, dense_state, CFG)
        sparse = {"table": RowSparseGrad(np.arange(rows), g["table"]), "b": g["b"]}
        lazy_params, lazy_state = lazy_adam_step(lazy_params, sparse, lazy_state, CFG)
    for name in params:
        for got, want in ((lazy_params, dense_params), (lazy_state.m, dense_state.m), (lazy_state.v, dense_state.v)):
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])
    assert lazy_state.step == dense_state.step == steps


def _densified(step: Step) -> Step:
    """`step` fed dense gradients (zeros outside a RowSparseGrad's rows): dense Adam when `step` is
    adam_step, for the negative control."""

    def run(params: dict[str, Array], grads: Grads, state: AdamState, cfg: AdamConfig) -> tuple[
            dict[str, Array], AdamState]:
        dense = {k: g.to_dense(params[k].shape[0]) if isinstance(g, RowSparseGrad) else g for k, g in grads.items()}
        return step(params, dense, state, cfg)

    return run


def _lazy_problems(step: Step) -> list[str]:
    """Two steps on a (5, 2) table: every row at step 1, rows {1, 3} at step 2. Lazy Adam leaves
    rows 0, 2, 4 (value and both moments) as step 1 left them, and moves rows 1 and 3 by dense
    Adam's formula on those rows."""
    rng = np.random.default_rng(3)
    params = {"table": rng.standard_normal((5, 2))}
    first = RowSparseGrad(np.arange(5), rng.standard_normal((5, 2)))
    after1, state1 = step(_copy(params), {"table": first}, adam_init(params), CFG)
    kept = (after1["table"].copy(), state1.m["table"].copy(), state1.v["table"].copy())
    rows = np.array([1, 3])
    second = RowSparseGrad(rows, rng.standard_normal((2, 2)))
    after2, state2 = step(_copy(after1), {"table": second}, _copy_state(state1), CFG)
    problems = []
    absent = np.array([0, 2, 4])
    for label, before, now in zip(("value", "m", "v"), kept, (after2["table"], state2.m["table"], state2.v["table"]),
                                  strict=True):
        if not np.array_equal(before[absent], now[absent]):
            problems.append(f"absent rows' {label} changed")
    on_rows, _ = adam_step({"table": kept[0][rows]}, {"table": second.values},
                           AdamState(1, {"table": kept[1][rows]}, {"table": kept[2][rows]}), CFG)
    if not np.array_equal(after2["table"][rows], on_rows["table"]):
        problems.append("present rows did not move by dense Adam's formula")
    return problems


def test_absent_rows_keep_value_and_moments_present_rows_move_as_dense_adam() -> None:
    assert _lazy_problems(lazy_adam_step) == []


def test_negative_control_dense_adam_moves_absent_rows() -> None:
    assert _lazy_problems(_densified(adam_step)) == ["absent rows' value changed", "absent rows' m changed",
                                                      "absent rows' v changed"]


def test_row_sparse_params_are_updated_in_place_and_dense_ones_are_not() -> None:
    params = {"table": np.ones((4, 2)), "b": np.ones(2)}
    state = adam_init(params)
    table, b = params["table"], params["b"]
    new, new_state = lazy_adam_step(params, {"table": RowSparseGrad(np.array([2]), np.ones((1, 2))),
                                             "b": np.ones(2)}, state, AdamConfig())
    assert new["table"] is table and new_state.m["table"] is state.m["table"]
    assert table[2, 0] < 1.0 and (table[[0, 1, 3]] == 1.0).all()
    assert new["b"] is not b and (b == 1.0).all()


def test_to_dense_puts_values_at_their_rows() -> None:
    grad = RowSparseGrad(np.array([0, 3]), np.array([[1.0], [2.0]]))
    np.testing.assert_array_equal(grad.to_dense(5), [[1.0], [0.0], [0.0], [2.0], [0.0]])


@pytest.mark.parametrize("rows, values, error, match", [
    (np.array([1, 1]), np.ones((2, 2)), ValueError, r"grads\['table'\].rows: expected distinct rows"),
    (np.array([2, 1]), np.ones((2, 2)), ValueError, "ascending"),
    (np.array([0, 4]), np.ones((2, 2)), ValueError, r"grads\['table'\].rows: id 4 is outside \[0, 4\)"),
    (np.array([0, 1]), np.ones((2, 3)), ValueError, r"grads\['table'\].values: expected shape"),
    (np.array([0, 1]), np.ones((2, 2), np.float32), TypeError, r"grads\['table'\].values: dtype float32"),
    (np.array([0, 1]), np.array([[np.nan, 0.0], [0.0, 0.0]]), ValueError, r"grads\['table'\].values: expected finite"),
    (np.array([0.0, 1.0]), np.ones((2, 2)), TypeError, r"grads\['table'\].rows"),
])
def test_bad_row_sparse_gradients_are_refused_by_name(rows: Array, values: Array, error: type[Exception],
                                                      match: str) -> None:
    params = {"table": np.ones((4, 2))}
    with pytest.raises(error, match=match):
        lazy_adam_step(params, {"table": RowSparseGrad(rows, values)}, adam_init(params), AdamConfig())


def test_the_rows_it_reads_are_checked_and_the_others_are_not_scanned() -> None:
    params = {"table": np.ones((4, 2))}
    state = adam_init(params)
    params["table"][3, 0] = np.nan
    lazy_adam_step(params, {"table": RowSparseGrad(np.array([0, 1]), np.ones((2, 2)))}, state, AdamConfig())
    with pytest.raises(ValueError, match=r"params\['table'\] \(rows of grads\['table'\].rows\): expected finite"):
        lazy_adam_step(params, {"table": RowSparseGrad(np.array([3]), np.ones((1, 2)))}, state, AdamConfig())
    state.v["table"][0, 0] = -1.0
    with pytest.raises(ValueError, match=r"state.v\['table'\]: a second moment"):
        lazy_adam_step(params, {"table": RowSparseGrad(np.array([0]), np.ones((1, 2)))}, state, AdamConfig())
    with pytest.raises(ValueError, match=r"state.m\['table'\]: expected shape \(4, 2\)"):
        lazy_adam_step(params, {"table": RowSparseGrad(np.array([0]), np.ones((1, 2)))},
                       AdamState(0, {"table": np.zeros((3, 2))}, {"table": np.zeros((4, 2))}), AdamConfig())


# --- fit ----------------------------------------------------------------------------------------


def _quadratic_fit(optimizer: str, row_sparse: bool) -> tuple[dict[str, Array], dict[str, Array], Any]:
    """fit on sum over the drawn rows of |table[r] - target[r]|^2: (the caller's params after fit,
    the params fit returned, the curve)."""
    target = np.arange(12.0).reshape(6, 2)
    params = {"table": np.zeros((6, 2))}
    caller = params["table"].copy()

    def step(p: dict[str, Array], rng: np.random.Generator) -> tuple[float, dict[str, Any]]:
        rows = np.unique(rng.integers(0, 6, 2))
        d = 2 * (p["table"][rows] - target[rows])
        grad = RowSparseGrad(rows, d)
        return float((d**2).sum() / 4), {"table": grad if row_sparse else grad.to_dense(6)}

    def valid(p: dict[str, Array]) -> float:
        return float(((p["table"] - target) ** 2).sum())

    cfg = TrainConfig(steps=40, eval_every=10, patience=2, lr=0.5, optimizer=optimizer)
    best, curve = fit("toy", params, step, valid, 200.0, cfg, 40, np.random.default_rng(0), stream=None)
    np.testing.assert_array_equal(params["table"], caller)
    return params, best, curve


def test_fit_with_lazy_adam_learns_keeps_the_callers_arrays_and_copies_the_best() -> None:
    _, best, curve = _quadratic_fit("lazy_adam", row_sparse=True)
    assert curve.best_valid < curve.valid[0] / 2
    assert float(((best["table"] - np.arange(12.0).reshape(6, 2)) ** 2).sum()) == curve.best_valid


def test_fit_with_lazy_adam_and_dense_gradients_is_fit_with_adam() -> None:
    _, lazy, lazy_curve = _quadratic_fit("lazy_adam", row_sparse=False)
    _, dense, dense_curve = _quadratic_fit("adam", row_sparse=False)
    np.testing.assert_array_equal(lazy["table"], dense["table"])
    assert lazy_curve.valid == dense_curve.valid


def test_fit_with_adam_refuses_a_row_sparse_gradient_by_name() -> None:
    with pytest.raises(TypeError, match=r"step_fn: the gradients of \['table'\] are row-sparse"):
        _quadratic_fit("adam", row_sparse=True)


def test_fit_with_adam_refuses_a_row_sparse_gradient_of_a_held_param_at_the_first_step() -> None:
    # the held param's gradient was only read at its release (never, with hold_steps >= steps)
    def step(p: dict[str, Array], rng: np.random.Generator) -> tuple[float, dict[str, Any]]:
        return 0.0, {"free": np.ones(1), "table": RowSparseGrad(np.array([0]), np.ones((1, 2)))}

    with pytest.raises(TypeError, match=r"step_fn: the gradients of \['table'\] are row-sparse"):
        fit("toy", {"free": np.zeros(1), "table": np.zeros((3, 2))}, step, lambda p: 0.0, 1.0,
            TrainConfig(steps=2), 2, np.random.default_rng(0), stream=None, held=("table",), hold_steps=5)


def test_optimizer_is_checked() -> None:
    with pytest.raises(ValueError, match="cfg.optimizer"):
        TrainConfig(optimizer="sgd")


# --- ULIM's row-sparse item-table gradient -------------------------------------------------------


def _ulim_outputs(item_table_grad: str, params_edit: Callable[[dict[str, Array]], None] | None = None) -> Any:
    cfg, params, batch, positives, negatives = tiny_instance("target")
    if params_edit is not None:
        params_edit(params)
    return ulim.ulim_loss_and_grads(params, batch, positives, negatives, 1, ITEM_CATEGORY, cfg,
                                    item_table_grad=item_table_grad), cfg


def test_ulim_row_sparse_item_gradient_is_the_dense_one_on_its_rows() -> None:
    (dense, cfg), (rows, _) = _ulim_outputs("dense"), _ulim_outputs("rows")
    assert rows.loss == dense.loss and "item_table" not in rows.grads and dense.item_table_rows is None
    np.testing.assert_array_equal(rows.item_table_rows.to_dense(cfg.num_items), dense.grads["item_table"])
    outside = np.setdiff1d(np.arange(cfg.num_items), rows.item_table_rows.rows)
    assert outside.size and (dense.grads["item_table"][outside] == 0).all()
    for name, grad in rows.grads.items():
        np.testing.assert_array_equal(grad, dense.grads[name])


def test_negative_control_rows_shifted_by_one_are_not_the_dense_gradient() -> None:
    (dense, cfg), (rows, _) = _ulim_outputs("dense"), _ulim_outputs("rows")
    shifted = replace(rows.item_table_rows, rows=(rows.item_table_rows.rows + 1) % cfg.num_items)
    order = np.argsort(shifted.rows)
    shifted = RowSparseGrad(shifted.rows[order], shifted.values[order])
    assert not np.array_equal(shifted.to_dense(cfg.num_items), dense.grads["item_table"])


def test_ulim_checks_the_item_rows_it_reads() -> None:
    (clean, cfg) = _ulim_outputs("rows")
    unread = int(np.setdiff1d(np.arange(cfg.num_items), clean.item_table_rows.rows)[0])
    read = int(clean.item_table_rows.rows[0])

    def spoil(row: int) -> Callable[[dict[str, Array]], None]:
        def edit(params: dict[str, Array]) -> None:
            params["item_table"][row, 0] = np.nan
        return edit

    out, _ = _ulim_outputs("rows", spoil(unread))
    assert out.loss == clean.loss
    with pytest.raises(ValueError, match=rf"item_table: expected finite values, got \[nan, .*\] in row {read} "):
        _ulim_outputs("rows", spoil(read))
    with pytest.raises(ValueError, match="item_table_grad"):
        _ulim_outputs("sparse")


# --- goldens --------------------------------------------------------------------------------------


def test_lazy_adam_goldens_pass_for_the_reference_in_both_dtypes() -> None:
    for dtype in ("float64", "float32"):
        report = run_conformance(reference_adapter(), components=["lazy_adam"], dtype=dtype)
        assert report.ok and len(report.results) == 1, [r.text for r in report.results]


def test_negative_control_the_lazy_adam_golden_catches_dense_adam_at_step_2() -> None:
    adapter = dict(reference_adapter())

    def dense(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        return run_lazy_adam_steps(inputs, params, config, _densified(adam_step)).flat()

    adapter["lazy_adam"] = dense
    (result,) = run_conformance(adapter, components=["lazy_adam"]).results
    assert result.status == "fail" and result.first_divergent_intermediate == "w_after_step2"


def test_a_refused_step_writes_nothing() -> None:
    # every row-sparse param is checked before the first row is written: a bad second table must not
    # leave the first updated in place (the negative control: the first table moves when both are good)
    def run(bad: bool) -> tuple[bool, bool]:
        params = {"a": np.ones((3, 2)), "z": np.ones((3, 2))}
        state = adam_init(params)
        params["z"][2, 0] = np.nan if bad else 1.0
        grads: Grads = {"a": RowSparseGrad(np.array([1]), np.ones((1, 2))),
                        "z": RowSparseGrad(np.array([2]), np.ones((1, 2)))}
        try:
            lazy_adam_step(params, grads, state, AdamConfig())
        except ValueError as error:
            assert "params['z']" in str(error) and "row 2" in str(error)
        return bool((params["a"] != 1.0).any()), bool(state.m["a"].any())

    assert run(bad=True) == (False, False)
    assert run(bad=False) == (True, True)


@pytest.mark.parametrize("call, error, match", [
    (lambda p, g, s: lazy_adam_step(p, g, s, {"lr": 0.1}), TypeError, "cfg: expected an AdamConfig"),  # type: ignore[arg-type]
    (lambda p, g, s: lazy_adam_step(p, g, None, AdamConfig()), TypeError, "state: expected an AdamState"),  # type: ignore[arg-type]
    (lambda p, g, s: adam_step(p, {"t": np.ones((3, 2))}, s, {"lr": 0.1}), TypeError, "cfg: expected"),  # type: ignore[arg-type]
    (lambda p, g, s: lazy_adam_step(None, g, s, AdamConfig()), TypeError, "params: expected a dict"),  # type: ignore[arg-type]
    (lambda p, g, s: adam_step(p, None, s, AdamConfig()), TypeError, "grads: expected a dict"),  # type: ignore[arg-type]
    (lambda p, g, s: lazy_adam_step(p, g, AdamState(0, None, None), AdamConfig()), TypeError,  # type: ignore[arg-type]
     "state.m: expected a dict"),
    (lambda p, g, s: adam_init([np.ones(2)]), TypeError, "params: expected a dict"),  # type: ignore[arg-type]
    (lambda p, g, s: lazy_adam_step({"t": np.ones(3)}, {"t": RowSparseGrad(np.array([0]), np.ones(1))},
                                    adam_init({"t": np.ones(3)}), AdamConfig()), None, None),
    (lambda p, g, s: lazy_adam_step({"t": np.array(1.0)}, {"t": RowSparseGrad(np.array([0]), np.ones(1))},
                                    adam_init({"t": np.array(1.0)}), AdamConfig()), ValueError,
     r"params\['t'\]: a row-sparse gradient needs a table with rows"),
])
def test_bad_configs_states_and_tables_are_refused_by_name(call: Any, error: Any, match: Any) -> None:
    params = {"t": np.ones((3, 2))}
    grads: Grads = {"t": RowSparseGrad(np.array([0]), np.ones((1, 2)))}
    if error is None:  # the control: a 1-d table's rows are scalars, a fine row-sparse update
        call(params, grads, adam_init(params))
        return
    with pytest.raises(error, match=match):
        call(params, grads, adam_init(params))


def test_a_read_only_table_is_refused_before_any_write() -> None:
    params = {"t": np.ones((3, 2)), "u": np.ones((3, 2))}
    state = adam_init(params)
    params["u"].setflags(write=False)
    grads: Grads = {name: RowSparseGrad(np.array([0]), np.ones((1, 2))) for name in ("t", "u")}
    with pytest.raises(ValueError, match=r"params\['u'\]: lazy Adam writes its rows in place; got a read-only array"):
        lazy_adam_step(params, grads, state, AdamConfig())
    assert (params["t"] == 1.0).all()
