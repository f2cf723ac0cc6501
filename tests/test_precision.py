"""The decoder's speed levers: the GRU on two threads, the stack cache, ``precision="fast"``.

Two threads and the cache must not change a single bit; the 8-bit recurrent kernel may
change the audio only within :data:`ddsp_pd.inference.compare.FAST_BOUND_DB`.
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


def _check_fast(checkpoint: Path, wav: Path) -> None:
    fast, exact = _fast_and_exact(checkpoint, wav)
    assert fast.shape == exact.shape
    mean_db, _ = spectral_distance_db(fast, exact)
    rel = np.sqrt(np.mean((fast - exact) ** 2) / np.mean(exact**2))
    assert mean_db <= FAST_BOUND_DB, mean_db
    assert rel <= 0.01, rel  # and the waveform itself within 1 % RMS
    assert not np.array_equal(fast, exact)  # the 8-bit kernel was used


def test_fast_precision_stays_within_its_bound_on_the_shipped_model(tmp_path: Path) -> None:
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
def test_fast_precision_stays_within_its_bound_on_reference_models(which: str, clip: str) -> None:
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
