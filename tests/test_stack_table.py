"""The tabulated input stacks of ``precision="fast"`` (ddsp_pd.inference.stack_table)."""

from __future__ import annotations

import numpy as np
import pytest

from ddsp_pd.inference import InferenceModel, kernels
from ddsp_pd.inference import stack_table as st
from ddsp_pd.inference.decoder import decode
from tests.conftest import ROOT

DEFAULT = ROOT / "checkpoints" / "default"


class _Counting:
    """A smooth vector function of a scalar that counts the points it is asked for."""

    def __init__(self, width: int = 6) -> None:
        self.freq = np.linspace(0.5, 3.0, width, dtype=np.float32)
        self.points = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32
        self.points += x.size
        return np.sin(x[:, None] * self.freq).astype(np.float32)


def test_the_table_interpolates_within_the_bound_of_its_step() -> None:
    fn = _Counting()
    table = st.ScalarTable(fn, 6)
    x = np.random.default_rng(0).uniform(-0.9, 1.9, 5000).astype(np.float32)
    got = table.interpolate(x)
    exact = np.sin(x.astype(np.float64)[:, None] * fn.freq)
    # linear interpolation of sin(a x): at most (a h)^2 / 8, plus float32 rounding
    bound = (3.0 * st.STEP) ** 2 / 8 + 1e-6
    assert np.max(np.abs(got - exact)) <= bound
    # on a grid point the table is the function itself
    grid = (st.LOW + st.STEP * np.arange(100, 110)).astype(np.float32)
    np.testing.assert_array_equal(table.interpolate(grid), fn(grid))


def test_chunks_are_filled_once_and_only_where_values_fall() -> None:
    fn = _Counting()
    table = st.ScalarTable(fn, 6)
    assert table.chunks_filled == 0 and table.nbytes == 0
    x = np.linspace(0.40, 0.45, 300, dtype=np.float32)  # 51 steps: one or two chunks
    table.interpolate(x)
    first = fn.points
    assert table.chunks_filled in (1, 2) and first == table.chunks_filled * st.CHUNK
    table.interpolate(x[::-1].copy())
    assert fn.points == first  # nothing computed twice
    table.fill_range(0.0, 1.0)
    assert table.chunks_filled == pytest.approx(1.0 / st.STEP / st.CHUNK, abs=2)
    assert table.nbytes == table.chunks_filled * st.CHUNK * 6 * 4


def test_values_outside_the_grid_are_computed_exactly() -> None:
    fn = _Counting()
    table = st.ScalarTable(fn, 6)
    x = np.array([0.5, -3.0, 7.5, st.HIGH, np.nan, 0.25], np.float32)
    got = table.interpolate(x)
    outside = np.array([False, True, True, True, True, False])
    np.testing.assert_array_equal(got[outside][:3], fn(x[outside][:3]))
    assert np.all(np.isnan(got[4]))  # not finite in, not finite out, as the stack gives
    assert np.all(np.isfinite(got[~outside]))


def test_an_entry_does_not_depend_on_who_asked_first() -> None:
    """The same input gives the same bits in a fresh table and in a well-used one."""
    fn = _Counting()
    x = np.random.default_rng(1).uniform(0.0, 1.0, 700).astype(np.float32)
    fresh = st.ScalarTable(fn, 6).interpolate(x)
    used = st.ScalarTable(fn, 6)
    used.interpolate(np.random.default_rng(2).uniform(0.3, 0.6, 50).astype(np.float32))
    used.fill_range(0.7, 0.9)
    np.testing.assert_array_equal(used.interpolate(x), fresh)


def _inputs(model: InferenceModel, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    f0 = 220.0 * 2 ** (np.round(4 * np.sin(t / 40.0)) / 12) * (rng.random(frames) > 0.05)
    ld = -60.0 + 45.0 * np.abs(np.sin(t / 25.0))
    f0_scaled, ld_scaled = model.preprocess(f0, ld)
    level_key = next(k for k in model.config.input_keys if not k.startswith("f0"))
    return {"f0_scaled": f0_scaled[None], level_key: ld_scaled[None]}


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_a_fast_decode_follows_the_exact_one_and_repeats_to_the_bit(backend, monkeypatch) -> None:
    if backend == "compiled" and not kernels.compiled_available():
        pytest.skip("numba is not installed")
    monkeypatch.setenv(kernels.FAST_RECURRENT_ENV, "float32")  # only the tables differ
    model = InferenceModel(DEFAULT, kernels=backend)
    inputs = _inputs(model, 600)
    exact, h_exact = decode(model.weights, inputs, backend=backend)
    fast, h_fast = decode(model.weights, inputs, backend=backend, precision="fast")
    assert all(t.chunks_filled > 0 for t in model.weights.stack_tables)
    for name in exact:
        scale = np.sqrt(np.mean(exact[name] ** 2))
        err = np.max(np.abs(fast[name] - exact[name]))
        assert err <= 2e-3 * scale + 1e-6, (name, err, scale)
        assert not np.array_equal(fast[name], exact[name])
    np.testing.assert_allclose(h_fast, h_exact, atol=2e-3)
    # a second model (fresh tables) and a second call (used tables) give the same bits
    again, _ = decode(model.weights, inputs, backend=backend, precision="fast")
    other = InferenceModel(DEFAULT, kernels=backend)
    other.weights.stack_tables[0].fill_range(0.1, 0.2)
    fresh, _ = decode(other.weights, inputs, backend=backend, precision="fast")
    for name in fast:
        np.testing.assert_array_equal(again[name], fast[name])
        np.testing.assert_array_equal(fresh[name], fast[name])


def test_fast_steps_equal_a_whole_fast_decode() -> None:
    """A stream's steps read the same table rows as a whole clip does."""
    model = InferenceModel(DEFAULT, kernels="numpy")
    inputs = _inputs(model, 90, seed=3)
    whole, h_whole = decode(model.weights, inputs, backend="numpy", precision="fast")
    parts, h = [], None
    for s in range(0, 90, 3):
        piece = {k: v[:, s : s + 3] for k, v in inputs.items()}
        out, h = decode(model.weights, piece, state=h, backend="numpy", precision="fast")
        parts.append(out)
    for name in whole:
        joined = np.concatenate([p[name] for p in parts], axis=1)
        np.testing.assert_allclose(joined, whole[name], rtol=0, atol=1e-5)
    np.testing.assert_allclose(h, h_whole, rtol=0, atol=1e-5)


def test_prepare_stream_fills_the_tables_in_fast_precision_only() -> None:
    exact = InferenceModel(DEFAULT, kernels="numpy")
    exact.prepare_stream()
    assert "stack_tables" not in exact.weights.__dict__
    fast = InferenceModel(DEFAULT, kernels="numpy", precision="fast")
    fast.prepare_stream()
    tables = dict(zip(fast.config.input_keys, fast.weights.stack_tables, strict=True))
    f0_table = tables.pop("f0_scaled")
    (level_table,) = tables.values()
    # f0 over [0, 1], the level from its floor (-80 dB: 0) to +12 dB (1.15)
    assert f0_table.chunks_filled == pytest.approx(1.0 / st.STEP / st.CHUNK, abs=2)
    assert level_table.chunks_filled == pytest.approx(1.15 / st.STEP / st.CHUNK, abs=2)


def test_the_recurrent_form_follows_the_cpu_and_the_variable(monkeypatch) -> None:
    monkeypatch.delenv(kernels.FAST_RECURRENT_ENV, raising=False)
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: frozenset({"avx2", "avx512bw"}))
    assert kernels.quantized_recurrent_pays()
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not kernels.quantized_recurrent_pays()
    monkeypatch.setenv(kernels.FAST_RECURRENT_ENV, "int8")
    assert kernels.quantized_recurrent_pays()
    monkeypatch.setenv(kernels.FAST_RECURRENT_ENV, "float32")
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: frozenset({"avx512bw"}))
    assert not kernels.quantized_recurrent_pays()
