"""The decoder's speed levers: the GRU on two threads, the stack cache, ``precision="fast"``.

Two threads and the cache must not change a single bit; ``fast`` (tabulated input stacks,
the 8-bit recurrent kernel where it pays, 16-bit kernels in short steps) may change the
audio only within :data:`ddsp_pd.inference.compare.FAST_BOUND_DB`. The fast checks run
with the recurrent kernel in 8 bits and in float32 whatever this machine would choose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ddsp_pd.cli import main
from ddsp_pd.controls import ControlSettings
from ddsp_pd.inference import InferenceModel, kernels
from ddsp_pd.inference.compare import FAST_BOUND_DB, spectral_distance_db
from ddsp_pd.inference.decoder import StackCache, decode
from ddsp_pd.transfer import Engine, RenderSettings
from tests.conftest import AUDIO, REFERENCE_CHECKPOINT, ROOT, VST_REFERENCE, needs_fixtures

DEFAULT = ROOT / "checkpoints" / "default"
needs_numba = pytest.mark.skipif(not kernels.compiled_available(), reason="numba is not installed")


def _gru_case(units: int, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rk = rng.normal(0, 1.5 / np.sqrt(units), (units, 3 * units)).astype(np.float32)
    bias = rng.normal(0, 0.1, 3 * units).astype(np.float32)
    x = rng.normal(0, 1, (frames, 3 * units + 5)).astype(np.float32)  # extra columns ignored
    h0 = rng.uniform(-1, 1, units).astype(np.float32)
    return x, rk, bias, h0


def _run_gru(x, rk, bias, h0, backend, **kw):
    out = np.full((x.shape[0], rk.shape[0]), np.nan, np.float32)
    h = kernels.gru_recurrence(x, rk, bias, h0, out, backend, np.ascontiguousarray(rk.T), **kw)
    return out, h


@needs_numba
@pytest.mark.parametrize("units", [4, 20, 64, 300, 512])
def test_two_threads_give_the_one_thread_gru_to_the_bit(units: int) -> None:
    x, rk, bias, h0 = _gru_case(units, 400)
    one, h_one = _run_gru(x, rk, bias, h0, "compiled", threads=1)
    two, h_two = _run_gru(x, rk, bias, h0, "compiled", threads=2)
    assert np.all(np.isfinite(one))
    np.testing.assert_array_equal(two, one)
    np.testing.assert_array_equal(h_two, h_one)
    np.testing.assert_array_equal(h_one, one[-1])
    # ... and both are the GRU the numpy backend computes.
    ref, _ = _run_gru(x, rk, bias, h0, "numpy")
    np.testing.assert_allclose(one, ref, atol=2e-5)


@needs_numba
def test_two_threads_with_the_8_bit_kernel_equal_one_thread() -> None:
    x, rk, bias, h0 = _gru_case(96, 300, seed=1)
    q = kernels.QuantizedKernel.of(np.ascontiguousarray(rk.T))
    one, h_one = _run_gru(x, rk, bias, h0, "compiled", threads=1, quantized=q)
    two, h_two = _run_gru(x, rk, bias, h0, "compiled", threads=2, quantized=q)
    np.testing.assert_array_equal(two, one)
    np.testing.assert_array_equal(h_two, h_one)
    # The numpy backend runs the float matrix the 8 bits stand for: the same GRU.
    ref, _ = _run_gru(x, rk, bias, h0, "numpy", quantized=q)
    np.testing.assert_allclose(one, ref, atol=2e-5)
    exact, _ = _run_gru(x, rk, bias, h0, "compiled", threads=1)
    assert 0 < np.max(np.abs(one - exact)) < 0.05  # the 8 bits are in effect, and small


def test_the_8_bit_kernel_is_within_half_a_step_of_each_weight() -> None:
    rng = np.random.default_rng(2)
    m = rng.normal(0, 0.1, (12, 33)).astype(np.float32)
    m[3] = 0.0  # a row of zeros keeps a usable scale
    m[5, 7] = 4.0  # one large weight sets its row's step
    q = kernels.QuantizedKernel.of(m)
    assert q.q_t.dtype == np.int8 and q.q_t.shape == m.shape
    assert np.all(np.abs(q.q_t.astype(int)) <= 127)
    err = np.abs(q.dequantized_t() - m)
    assert np.all(err <= q.scale[:, None] * 0.5 * (1 + 1e-5))
    np.testing.assert_array_equal(q.dequantized_t()[3], 0.0)
    assert q.dequantized_t()[5, 7] == pytest.approx(4.0, rel=1e-6)


def test_worker_threads_follow_length_cores_and_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("DDSP_PD_THREADS", raising=False)
    assert kernels.worker_threads(kernels.GRU_SPLIT_MIN_FRAMES - 1) == 1
    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: {0, 1})
    assert kernels.worker_threads(kernels.GRU_SPLIT_MIN_FRAMES) == 2
    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: {0})
    assert kernels.worker_threads(10**6) == 1
    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setenv("DDSP_PD_THREADS", "1")
    assert kernels.worker_threads(10**6) == 1


# ------------------------------------------------------------------ the stack cache


def _scaled_inputs(model: InferenceModel, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / model.frame_rate
    f0 = 220.0 * 2 ** np.sin(2 * np.pi * 0.3 * t)
    level = -40 + 15 * np.sin(2 * np.pi * 0.5 * t) + rng.normal(0, 1, frames)
    f0s, lds = model.preprocess(f0[None], level[None])
    return dict(zip(model.config.input_keys, (f0s, lds), strict=True))


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_a_cached_re_render_equals_a_fresh_decode_to_the_bit(backend: str) -> None:
    if backend == "compiled" and not kernels.compiled_available():
        pytest.skip("numba is not installed")
    model = InferenceModel(DEFAULT)
    inputs = _scaled_inputs(model, 600)
    level_key = model.config.input_keys[1]
    cache = StackCache()
    first, _ = decode(model.weights, inputs, backend=backend, cache=cache)
    assert cache.misses == 2 and cache.hits == 0 and cache.nbytes > 0
    changed = dict(inputs)
    changed[level_key] = inputs[level_key] - np.float32(0.02)  # a loudness shift
    again, _ = decode(model.weights, changed, backend=backend, cache=cache)
    assert cache.hits == 1  # f0's stack came from the cache
    fresh, _ = decode(model.weights, changed, backend=backend)
    for name in fresh:
        np.testing.assert_array_equal(again[name], fresh[name])
        assert not np.array_equal(again[name], first[name])
    # The cached products are read-only: a decode cannot corrupt them.
    decode(model.weights, changed, backend=backend, cache=cache)
    assert cache.hits == 3
    for value in cache._entries.values():
        assert not value.flags.writeable


def test_the_stack_cache_stays_in_its_budget_and_skips_short_blocks() -> None:
    model = InferenceModel(DEFAULT)
    inputs = _scaled_inputs(model, 400)
    one_entry = 400 * model.weights.fused_kernel.shape[1] * 4
    cache = StackCache(max_bytes=3 * one_entry)
    for shift in range(4):
        changed = {k: v + np.float32(0.01 * shift) for k, v in inputs.items()}
        decode(model.weights, changed, cache=cache)
        assert cache.nbytes <= 3 * one_entry
    assert len(cache._entries) == 3
    short = StackCache()
    small = {k: v[:, : StackCache.MIN_FRAMES - 1] for k, v in inputs.items()}
    decode(model.weights, small, cache=short)
    assert short.nbytes == 0 and short.misses == 0


def test_the_model_caches_whole_clips_but_not_blocks_of_a_long_render() -> None:
    model = InferenceModel(DEFAULT)
    inputs = _scaled_inputs(model, 500)
    f0s, lds = inputs.values()
    model.decode(f0s, lds)
    assert model.stack_cache.nbytes > 0
    model.stack_cache.clear()
    model.decode(f0s, lds, np.zeros((1, model.config.rnn_channels), np.float32))
    assert model.stack_cache.nbytes == 0  # a decode from a carried state
    f0 = np.full(700, 220.0, np.float32)
    level = np.full(700, -30.0, np.float32)
    pieces = list(model.render_blocks(f0, level, block_frames=300))
    assert len(pieces) >= 3 and model.stack_cache.nbytes == 0


# ------------------------------------------------------------------ precision="fast"


def test_spectral_distance_measures_level_in_db() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.1, 16000)
    assert spectral_distance_db(x, x) == (0.0, 0.0)
    mean, peak = spectral_distance_db(2 * x, x)
    assert mean == pytest.approx(20 * np.log10(2), abs=0.01)
    assert peak == pytest.approx(20 * np.log10(2), abs=0.01)
    with pytest.raises(ValueError, match="shorter than one window"):
        spectral_distance_db(x[:100], x[:100])


def _fast_and_exact(checkpoint: Path, wav: Path) -> tuple[np.ndarray, np.ndarray]:
    renders = []
    for precision in ("exact", "fast"):
        engine = Engine(precision=precision)
        loaded = engine.load_model(checkpoint)
        assert loaded.model.precision == precision
        settings = RenderSettings(controls=ControlSettings(), normalize=False)
        renders.append(engine.render(loaded, settings, input_path=wav).audio)
    return renders[1], renders[0]


@pytest.fixture(params=["int8", "float32"])
def recurrent(request, monkeypatch) -> str:
    """The recurrent kernel's form under ``fast`` (see kernels.quantized_recurrent_pays)."""
    monkeypatch.setenv(kernels.FAST_RECURRENT_ENV, request.param)
    return request.param


def _check_fast(checkpoint: Path, wav: Path) -> None:
    fast, exact = _fast_and_exact(checkpoint, wav)
    assert fast.shape == exact.shape
    mean_db, _ = spectral_distance_db(fast, exact)
    rel = np.sqrt(np.mean((fast - exact) ** 2) / np.mean(exact**2))
    assert mean_db <= FAST_BOUND_DB, mean_db
    assert rel <= 0.01, rel  # and the waveform itself within 1 % RMS
    assert not np.array_equal(fast, exact)  # the fast path was taken


def test_fast_precision_stays_within_its_bound_on_the_shipped_model(
    tmp_path: Path, recurrent: str
) -> None:
    sr = 16000
    t = np.arange(3 * sr) / sr
    f0 = 196.0 * 2 ** (np.floor(t * 2) / 12)  # a scale, one note each half second
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.6 + 0.4 * np.sin(2 * np.pi * t))
    wav = tmp_path / "scale.wav"
    sf.write(str(wav), tone.astype(np.float32), sr)
    _check_fast(DEFAULT, wav)


@needs_fixtures
@pytest.mark.parametrize("which", ["solo", "vst"])
@pytest.mark.parametrize("clip", ["sung_world_female", "midi_trumpet"])
def test_fast_precision_stays_within_its_bound_on_reference_models(
    which: str, clip: str, recurrent: str
) -> None:
    checkpoint = REFERENCE_CHECKPOINT if which == "solo" else VST_REFERENCE / "checkpoint"
    _check_fast(Path(checkpoint), AUDIO / f"{clip}.wav")


def test_precision_is_checked_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        Engine(precision="half")
    with pytest.raises(ValueError, match="precision"):
        InferenceModel(DEFAULT, precision="half")
    result = CliRunner().invoke(main, ["render", "in.wav", "--precision", "half"])
    assert result.exit_code != 0 and "half" in result.output


def test_render_command_takes_fast_precision(tmp_path: Path) -> None:
    sr = 16000
    t = np.arange(sr) / sr
    wav = tmp_path / "a.wav"
    sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    outs = {}
    for precision in ("exact", "fast"):
        out = tmp_path / f"{precision}.wav"
        args = ["render", str(wav), "-c", str(DEFAULT), "-o", str(out), "--precision", precision]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outs[precision], _ = sf.read(str(out), dtype="float32")
    mean_db, _ = spectral_distance_db(outs["fast"], outs["exact"])
    assert mean_db <= FAST_BOUND_DB
    assert not np.array_equal(outs["fast"], outs["exact"])


def test_a_forked_child_decodes_on_its_own_threads() -> None:
    import os

    model = InferenceModel(DEFAULT, kernels="compiled" if kernels.compiled_available() else "numpy")
    inputs = _scaled_inputs(model, 600)
    parent, _ = decode(model.weights, inputs, backend=model.kernels)  # the pool thread exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a decode must not wait on the parent's pool thread
        try:
            child, _ = decode(model.weights, inputs, backend=model.kernels)
            ok = all(np.array_equal(child[k], parent[k]) for k in parent)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    import select

    ready, _, _ = select.select([read], [], [], 60)
    if not ready:
        import signal

        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's decode hung")
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read)


def test_serve_hands_its_precision_to_the_engine() -> None:
    import ddsp_pd.commands.serve as serve_command

    assert serve_command._make_engine(None, None, "fast").precision == "fast"
    assert serve_command._make_engine(None, None).precision == "exact"
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert "--precision" in result.output and "fast" in result.output


def test_the_commands_offer_the_decoders_precisions() -> None:
    from ddsp_pd.commands.options import PRECISION_CHOICES
    from ddsp_pd.inference.decoder import PRECISIONS

    assert PRECISION_CHOICES == PRECISIONS


# ------------------------------------------------------------------ few-row products


@needs_numba
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9])
def test_few_rows_product_is_the_matrix_product(rows: int) -> None:
    rng = np.random.default_rng(rows)
    w = rng.normal(0, 0.2, (37, 53)).astype(np.float32)
    x = rng.normal(0, 1, (rows, 37)).astype(np.float32)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    got = kernels.few_rows_product(x, kernels.RowsKernel.of(w))
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    out = np.full((rows + 2, 53), np.nan, np.float32)  # into rows of a larger array
    kernels.few_rows_product(x, kernels.RowsKernel.of(w), out[1 : rows + 1])
    np.testing.assert_array_equal(out[1 : rows + 1], got)
    assert np.all(np.isnan(out[0])) and np.all(np.isnan(out[-1]))
    # In 16 bits each weight is within half a step of its column, so each output within
    # half a step times the row's sum of magnitudes (plus float32 rounding).
    form = kernels.RowsKernel.of(w, 16)
    assert form.m_t.dtype == np.int16 and form.m_t.shape == (53, 37)
    got16 = kernels.few_rows_product(x, form)
    bound = 0.5 * np.abs(x).sum(axis=1)[:, None] * form.scale[None, :] + 2e-5
    assert np.all(np.abs(got16 - ref) <= bound)
    assert not np.array_equal(got16, got)


def test_the_16_bit_form_keeps_each_weight_within_half_a_step() -> None:
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.1, (20, 9)).astype(np.float32)
    w[:, 2] = 0.0  # a column of zeros keeps a usable scale
    w[4, 6] = 3.0  # one large weight sets its column's step
    form = kernels.RowsKernel.of(w, 16)
    back = form.m_t.astype(np.float32) * form.scale[:, None]
    assert np.all(np.abs(back - w.T) <= form.scale[:, None] * 0.5 * (1 + 1e-5))
    np.testing.assert_array_equal(back[2], 0.0)
    assert back[6, 4] == pytest.approx(3.0, rel=1e-6)
    assert form.scale[6] == pytest.approx(3.0 / 32767, rel=1e-6)
    with pytest.raises(ValueError, match="bits"):
        kernels.RowsKernel.of(w, 8)


@needs_numba
def test_steps_of_a_few_frames_equal_a_whole_clip_decode() -> None:
    model = InferenceModel(DEFAULT, kernels="compiled")
    inputs = _scaled_inputs(model, 91)
    whole, h_whole = decode(model.weights, inputs, backend="numpy")
    assert "few_rows_exact" not in model.weights.__dict__
    for step in (1, 3, 8):
        parts, h = [], None
        for s in range(0, 91, step):
            piece = {k: v[:, s : s + step] for k, v in inputs.items()}
            out, h = decode(model.weights, piece, state=h, backend="compiled")
            parts.append(out)
        for name in whole:
            joined = np.concatenate([p[name] for p in parts], axis=1)
            np.testing.assert_allclose(joined, whole[name], rtol=0, atol=1e-5)
        np.testing.assert_allclose(h, h_whole, rtol=0, atol=1e-5)
    # the steps went through the packed one-call kernel (made on first use)
    assert model.weights.__dict__.get("few_rows_pack") is not None
    assert "few_rows_exact" not in model.weights.__dict__
    assert "few_rows_fast" not in model.weights.__dict__


@needs_numba
@pytest.mark.parametrize("which", ["default", "solo"])
def test_the_one_call_step_equals_the_separate_kernels(which: str) -> None:
    """A few-frame step in one compiled call (``FewRowsPack``) runs the loops of the
    separate kernels in the same order. The compiler may vectorise the sums differently
    once they are inlined into one function, so the results agree to float32 rounding
    (not always to the bit): every step size up to FEW_ROWS_MAX, a batch of two, a
    carried state."""
    if which == "solo":
        if not Path(REFERENCE_CHECKPOINT).exists():
            pytest.skip("needs ../shared/fixtures")
        model = InferenceModel(REFERENCE_CHECKPOINT, kernels="compiled")
    else:
        model = InferenceModel(DEFAULT, kernels="compiled")
    weights = model.weights
    units = weights.config.rnn_channels
    rng = np.random.default_rng(3)
    for rows in range(1, kernels.FEW_ROWS_MAX + 1):
        batch = 2 if 2 * rows <= kernels.FEW_ROWS_MAX else 1  # few rows in all
        keys = weights.config.input_keys
        inputs = {k: rng.random((batch, rows)).astype(np.float32) for k in keys}
        h = rng.normal(0, 0.5, (batch, units)).astype(np.float32)
        weights.__dict__.pop("few_rows_pack", None)
        packed, h_packed = decode(weights, inputs, state=h, backend="compiled")
        assert weights.__dict__["few_rows_pack"] is not None
        weights.__dict__["few_rows_pack"] = None  # as for a decoder the pack cannot hold
        separate, h_separate = decode(weights, inputs, state=h, backend="compiled")
        for name in packed:
            assert packed[name].shape == separate[name].shape
            assert packed[name].shape[:2] == (batch, rows)
            np.testing.assert_allclose(packed[name], separate[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(h_packed, h_separate, rtol=0, atol=1e-5)
        assert np.abs(h_packed - h).max() > 1e-3  # the state moved
    assert "few_rows_exact" in weights.__dict__  # the separate kernels did run


def _stream(checkpoint: Path, precision: str, audio: np.ndarray) -> tuple[np.ndarray, object]:
    from ddsp_pd.stream.engine import EngineSettings, StreamEngine
    from ddsp_pd.stream.models import open_live_model
    from ddsp_pd.stream.runner import run_file

    model = open_live_model(checkpoint, precision=precision)
    # the same step for both (the auto step of a large model depends on the precision)
    engine = StreamEngine(model, 16000, EngineSettings(frames_per_step=3))
    return run_file(engine, audio, 256).audio, model


@needs_numba
@pytest.mark.parametrize("which", ["default", "solo"])
def test_a_fast_stream_stays_within_the_bound_of_the_exact_one(which: str, recurrent: str) -> None:
    from ddsp_pd.audio_io import load_audio

    if which == "solo":
        if not (AUDIO / "midi_trumpet.wav").exists():
            pytest.skip("needs ../shared/fixtures")
        checkpoint, audio = (
            Path(REFERENCE_CHECKPOINT),
            load_audio(AUDIO / "midi_trumpet.wav", 16000),
        )
    else:
        checkpoint, audio = DEFAULT, load_audio(ROOT / "examples" / "melody.wav", 16000)
    exact, _ = _stream(checkpoint, "exact", audio)
    fast, model = _stream(checkpoint, "fast", audio)
    assert fast.shape == exact.shape and np.sqrt(np.mean(exact**2)) > 1e-3
    mean_db, _ = spectral_distance_db(fast, exact)
    rel = np.sqrt(np.mean((fast - exact) ** 2) / np.mean(exact**2))
    assert mean_db <= FAST_BOUND_DB, mean_db
    assert rel <= 0.01, rel
    assert not np.array_equal(fast, exact)
    assert "few_rows_fast" in model.model.weights.__dict__  # the 16-bit kernels were used
    # the input tables were filled before the stream (open_live_model), not in it
    assert all(t.chunks_filled > 0 for t in model.model.weights.stack_tables)


def test_the_auto_step_of_a_large_model_is_shorter() -> None:
    from types import SimpleNamespace

    from ddsp_pd.stream.engine import LARGE_MODEL_PARAMETERS, auto_frames_per_step

    def live(parameters: int, precision: str, frame_rate: float = 250.0) -> SimpleNamespace:
        inner = SimpleNamespace(parameter_count=parameters, precision=precision)
        return SimpleNamespace(model=inner, frame_rate=frame_rate)

    big = LARGE_MODEL_PARAMETERS + 1
    assert auto_frames_per_step(live(big, "exact")) == 2
    assert auto_frames_per_step(live(big, "fast")) == 2
    assert auto_frames_per_step(live(100_000, "fast")) == 3
    assert auto_frames_per_step(live(100_000, "exact")) == 3
    assert auto_frames_per_step(live(big, "fast", 50.0)) == 1


def test_live_offers_the_precisions() -> None:
    result = CliRunner().invoke(main, ["live", "--help"])
    assert result.exit_code == 0 and "--precision" in result.output and "fast" in result.output
    result = CliRunner().invoke(main, ["live", "--file", "a.wav", "--precision", "half"])
    assert result.exit_code != 0 and "half" in result.output
