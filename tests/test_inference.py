"""The numpy inference path beyond ddsp parity (that is tests/test_model_parity.py):

- the two kernel backends compute the same thing, and both match float64 references of the
  Keras GRU and the LayerNorm;
- which backend ``"auto"`` picks;
- the engine's cache of decoder output: a new seed skips the decoder, a control change
  does not, and a cached render equals an uncached one;
- ``ddsp-pd render`` and the serve path never import TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ddsp_pd.inference import InferenceModel, kernels
from ddsp_pd.inference import synth as isynth

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "default"
BACKENDS = ["numpy"] + (["compiled"] if kernels.compiled_available() else [])
needs_compiled = pytest.mark.skipif(not kernels.compiled_available(), reason="numba missing")


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x gives 0, rightly
        return 1.0 / (1.0 + np.exp(-x))


def gru_reference(x_proj, kernel, bias, h0):
    """The Keras GRU (reset_after) in float64, step by step (ddsp.md section 5)."""
    u = kernel.shape[0]
    h = h0.astype(np.float64)
    out = []
    for xt in x_proj.astype(np.float64):
        hp = h @ kernel + bias
        z = _sigmoid64(xt[:u] + hp[:u])
        r = _sigmoid64(xt[u : 2 * u] + hp[u : 2 * u])
        n = np.tanh(xt[2 * u : 3 * u] + r * hp[2 * u :])
        h = z * h + (1 - z) * n
        out.append(h)
    return np.array(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("units", [5, 64])
def test_gru_recurrence_matches_a_float64_reference(backend, units):
    rng = np.random.default_rng(units)
    n_frames = 50
    # Extra columns past 3U (the fused output-stack product) must be ignored.
    x_proj = rng.normal(0, 2, (n_frames, 3 * units + 7)).astype(np.float32)
    kernel = rng.normal(0, 0.4, (units, 3 * units)).astype(np.float32)
    bias = rng.normal(0, 1, 3 * units).astype(np.float32)
    h0 = rng.uniform(-1, 1, units).astype(np.float32)
    out = np.empty((n_frames, units), np.float32)
    last = kernels.gru_recurrence(x_proj, kernel, bias, h0, out, backend)
    expected = gru_reference(x_proj[:, : 3 * units], kernel, bias, h0)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(last, out[-1])
    # Saturated gates (large pre-activations) stay finite and exact.
    big = (x_proj * 100).astype(np.float32)
    kernels.gru_recurrence(big, kernel, bias, h0, out, backend)
    np.testing.assert_allclose(out, gru_reference(big[:, : 3 * units], kernel, bias, h0), atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_leaky_matches_a_float64_reference(backend):
    rng = np.random.default_rng(1)
    y = rng.normal(3, 5, (37, 96)).astype(np.float32)
    gamma = rng.normal(1, 0.3, 96).astype(np.float32)
    beta = rng.normal(0, 0.3, 96).astype(np.float32)
    y64 = y.astype(np.float64)
    norm = (y64 - y64.mean(1, keepdims=True)) / np.sqrt(y64.var(1, keepdims=True) + 1e-3)
    expected = norm * gamma + beta
    expected = np.where(expected > 0, expected, 0.2 * expected)
    kernels.layer_norm_leaky(y, gamma, beta, 1e-3, 0.2, backend)
    np.testing.assert_allclose(y, expected, rtol=0, atol=5e-6)


@needs_compiled
def test_harmonic_bank_backends_agree_and_carry_the_phase():
    rng = np.random.default_rng(2)
    n_frames, n_harm, hop = 300, 40, 64
    f0 = rng.uniform(80, 2500, n_frames)
    amps = rng.uniform(0, 0.05, (n_frames, n_harm)).astype(np.float32)
    amps[::7, 20:] = 0.0  # frames whose upper harmonics are silent
    f0_next = np.concatenate([f0[1:], f0[-1:]])
    amps_next = np.concatenate([amps[1:], amps[-1:]])
    w_this = isynth.hann_window(2 * hop)[hop:]
    w_next = isynth.hann_window(2 * hop)[:hop]
    args = (f0, f0_next, amps, amps_next, hop, 16000.0, w_this, w_next)
    ref, ref_end = kernels.harmonic_bank(0.3, *args, "numpy")
    got, got_end = kernels.harmonic_bank(0.3, *args, "compiled")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert abs(got_end - ref_end) < 1e-9
    # In two pieces, the second starting from the first one's end phase: the same signal.
    k = 123
    first, mid = kernels.harmonic_bank(
        0.3, f0[:k], f0_next[:k], amps[:k], amps_next[:k], *args[4:], "compiled"
    )
    second, _ = kernels.harmonic_bank(
        mid, f0[k:], f0_next[k:], amps[k:], amps_next[k:], *args[4:], "compiled"
    )
    np.testing.assert_allclose(np.concatenate([first, second]), got, rtol=0, atol=1e-6)


@needs_compiled
@pytest.mark.parametrize("normalize", [True, False])
def test_scaled_controls_of_a_few_frames_match_the_numpy_functions(normalize):
    # A live step's controls go through one compiled call; offline renders through numpy.
    rng = np.random.default_rng(5)
    frames, k, bands = 3, 60, 65
    raw = {
        "amps": rng.normal(0, 3, (1, frames, 1)).astype(np.float32),
        "harmonic_distribution": rng.normal(0, 3, (1, frames, k)).astype(np.float32),
        "noise_magnitudes": rng.normal(0, 3, (1, frames, bands)).astype(np.float32),
    }
    raw["harmonic_distribution"][0, 1] = -200.0  # a frame whose distribution underflows
    f0 = np.array([[220.0, 440.0, 7990.0]], np.float32)  # the last above Nyquist from k = 2
    scale = (10.0, 2.0, 1e-7)
    kernels._compiled()  # loaded, as in a live stream
    got = kernels.scaled_controls(raw, f0, 8000.0, normalize, -5.0, *scale)
    assert got is not None
    amps, dist = isynth.harmonic_controls(raw["amps"], raw["harmonic_distribution"], f0,
                                          16000.0, normalize, *scale)  # fmt: skip
    mags = isynth.noise_magnitudes(raw["noise_magnitudes"], -5.0, *scale)
    for g, want in zip(got, (amps, dist, mags), strict=True):
        assert g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=2e-6, atol=1e-12)
    if normalize:
        assert np.all(got[1][0, 2, 1:] == 0.0)
    # Many rows are the numpy functions' work.
    many = {name: np.repeat(x, 4, axis=1) for name, x in raw.items()}
    assert kernels.scaled_controls(many, np.repeat(f0, 4, axis=1), 8000.0, normalize, -5.0,
                                   *scale) is None  # fmt: skip


def test_auto_backend_is_numpy_for_short_clips_in_a_fresh_process(monkeypatch):
    monkeypatch.setattr(kernels, "_loaded", False)
    assert kernels.auto_backend(2500) == "numpy"
    if kernels.compiled_available():
        assert kernels.auto_backend(kernels.COMPILED_MIN_FRAMES) == "compiled"
        assert kernels.auto_backend(10, long_running=True) == "compiled"
        monkeypatch.setattr(kernels, "_loaded", True)
        assert kernels.auto_backend(10) == "compiled"
    monkeypatch.setattr(kernels, "compiled_available", lambda: False)
    assert kernels.auto_backend(10**6, long_running=True) == "numpy"
    with pytest.raises(ValueError, match="backend"):
        kernels.check_backend("gpu")


def test_noise_stream_drawn_in_pieces_equals_one_draw():
    whole = isynth.white_noise(1, 10000, seed=11)
    stream = isynth.noise_stream(11)
    pieces = np.concatenate([stream.draw(1, n) for n in (1, 999, 4000, 5000)], axis=1)
    np.testing.assert_array_equal(pieces, whole)


def test_negative_and_huge_seeds_are_accepted():
    a = isynth.white_noise(1, 100, seed=-1)
    b = isynth.white_noise(1, 100, seed=2**64 - 1)
    np.testing.assert_array_equal(a, b)  # the same seed modulo 2^64
    assert not np.array_equal(a, isynth.white_noise(1, 100, seed=1))


# ---------------------------------------------------------------- the engine's cache


@pytest.fixture()
def engine_and_model():
    from ddsp_pd.transfer import Engine

    engine = Engine(kernels="numpy")
    return engine, engine.load_model(DEFAULT_CHECKPOINT)


def _features_file(tmp_path: Path, n_frames: int = 300) -> Path:
    t = np.arange(n_frames) / 250.0
    path = tmp_path / "features.npz"
    np.savez(
        path,
        f0_hz=(330.0 * 2 ** (0.1 * np.sin(2 * np.pi * t))).astype(np.float32),
        f0_confidence=np.ones(n_frames, np.float32),
        loudness_db=(-30.0 + 5.0 * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32),
    )
    return path


def _settings(seed: int = 0, loudness: float = 0.0):
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.transfer import RenderSettings

    controls = ControlSettings(adjust=False, confidence=0.0, loudness_db=loudness)
    return RenderSettings(controls=controls, normalize=False, seed=seed)


def test_new_seed_reuses_the_decoder_and_a_control_change_does_not(
    engine_and_model, tmp_path, monkeypatch
):
    engine, loaded = engine_and_model
    features = _features_file(tmp_path)
    calls = []
    original = loaded.model.decode

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "decode", counting)
    first = engine.render(loaded, _settings(seed=0), features_path=features)
    assert len(calls) == 1
    reseeded = engine.render(loaded, _settings(seed=1), features_path=features)
    assert len(calls) == 1  # only the noise changed: no decoder work
    adjusted = reseeded.adjusted
    expected = InferenceModel(loaded.checkpoint, kernels="numpy").render(
        adjusted.f0_hz, adjusted.loudness_db, seed=1
    )
    np.testing.assert_array_equal(reseeded.audio, expected)
    assert np.max(np.abs(reseeded.audio - first.audio)) > 0
    engine.render(loaded, _settings(seed=1, loudness=-6.0), features_path=features)
    assert len(calls) == 2  # the decoder's input changed


def test_a_control_change_reuses_the_auto_adjust_and_renders_the_same(
    engine_and_model, monkeypatch
):
    """A re-render after a change of the loudness shift, the octave or the confidence gate
    reuses the auto-adjusted curves (note detection, the quantile fit: 7 ms of a 70 ms
    re-render); a change of what auto-adjust reads runs it again. The audio equals a fresh
    engine's, bit for bit."""
    from ddsp_pd import transfer
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.transfer import Engine, RenderSettings

    engine, _ = engine_and_model
    clip = ROOT / "examples" / "melody.wav"
    calls = []
    original = transfer.auto_adjust_controls

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(transfer, "auto_adjust_controls", counting)

    def render(engine, **controls):
        settings = RenderSettings(controls=ControlSettings(**controls), normalize=False)
        return engine.render(engine.load_model(DEFAULT_CHECKPOINT), settings, input_path=clip)

    first = render(engine, loudness_db=-3.0)
    assert first.adjusted.report.adjust_ran
    n = len(calls)
    changed = render(engine, loudness_db=-4.5, octave=-1.0, confidence=0.3)
    assert len(calls) == n  # reused
    render(engine, loudness_db=-4.5, quiet=12.0)
    assert len(calls) == n + 1  # quiet is auto-adjust's: run again
    fresh = render(Engine(kernels="numpy"), loudness_db=-4.5, octave=-1.0, confidence=0.3)
    np.testing.assert_array_equal(changed.adjusted.f0_hz, fresh.adjusted.f0_hz)
    np.testing.assert_array_equal(changed.adjusted.loudness_db, fresh.adjusted.loudness_db)
    assert changed.adjusted.report == fresh.adjusted.report
    np.testing.assert_array_equal(changed.audio, fresh.audio)
    assert not np.array_equal(changed.adjusted.loudness_db, first.adjusted.loudness_db)


def test_an_evicted_model_leaves_the_auto_adjust_cache(tmp_path) -> None:
    import shutil

    from ddsp_pd.transfer import Engine, RenderSettings

    ckpt = tmp_path / "model"
    shutil.copytree(DEFAULT_CHECKPOINT, ckpt)
    engine = Engine(kernels="numpy", max_models=1)
    engine.render(
        engine.load_model(ckpt), RenderSettings(), input_path=ROOT / "examples" / "melody.wav"
    )
    assert len(engine._auto) == 1
    engine.load_model(DEFAULT_CHECKPOINT)  # evicts the first model
    assert len(engine._auto) == 0


def test_progress_moves_inside_the_model_stage_of_a_short_render(engine_and_model, tmp_path):
    """Short clips render in one go; the model stage still reports the decoder and the
    synthesis done, in order, so a progress bar moves inside it."""
    engine, loaded = engine_and_model
    seen: list[tuple[str, float]] = []
    engine.render(
        loaded,
        _settings(),
        features_path=_features_file(tmp_path),
        progress=lambda stage, fraction: seen.append((stage, fraction)),
    )
    model = [f for stage, f in seen if stage == "model"]
    assert model[0] == 0.0 and model[-1] == 1.0
    assert any(0.0 < f < 1.0 for f in model), seen
    assert model == sorted(model)
    assert [stage for stage, _ in seen][:2] == ["features", "controls"]


def test_cache_keeps_within_its_byte_budget(tmp_path):
    from ddsp_pd.transfer import Engine

    engine = Engine(kernels="numpy", max_prepared_bytes=300_000)
    loaded = engine.load_model(DEFAULT_CHECKPOINT)
    features = _features_file(tmp_path, 500)  # ~0.26 MB of cached controls per render
    for shift in (0.0, -1.0, -2.0):
        engine.render(loaded, _settings(loudness=shift), features_path=features)
    assert len(engine._prepared) == 1
    assert sum(p.nbytes for p in engine._prepared.values()) <= 300_000


# ---------------------------------------------------------------- no TensorFlow


def test_render_and_serve_paths_do_not_import_tensorflow(tmp_path):
    """A fresh process renders (CLI, both kernel backends) and builds the server's engine
    without importing TensorFlow, nor scipy (whose ``scipy.fft`` alone cost a fresh
    ``ddsp-pd render`` 0.3 s of its 1.0 s budget)."""
    features = _features_file(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from ddsp_pd.cli import main
        try:
            main(["render", "--features", {str(features)!r}, "-o", {str(tmp_path / "a.wav")!r},
                  "-c", {str(DEFAULT_CHECKPOINT)!r}])
        except SystemExit as exc:
            assert not exc.code, exc.code
        from ddsp_pd.transfer import Engine
        import ddsp_pd.commands.serve, ddsp_pd.server.app, ddsp_pd.commands.info
        for kernels in {BACKENDS!r}:
            engine = Engine(warm_up=True, kernels=kernels)
            engine.load_model({str(DEFAULT_CHECKPOINT)!r})
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print("IMPORTED:", bad)
        # numba imports scipy itself (and scipy.linalg); the heavy parts are ours to avoid.
        heavy = ("scipy.fft", "scipy.special", "scipy.signal")
        print("SCIPY:", sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IMPORTED: []" in done.stdout, done.stdout
    assert "SCIPY: []" in done.stdout, done.stdout
    assert (tmp_path / "a.wav").is_file()


# ---------------------------------------------------------------- long clips in blocks


def _long_features(n_frames: int = 2100) -> tuple[np.ndarray, np.ndarray]:
    """Glides, vibrato, unvoiced gaps and loudness swells (stresses every carried state)."""
    t = np.arange(n_frames) / 250.0
    f0 = 220.0 * 2 ** (1.5 * np.sin(2 * np.pi * 0.2 * t) + 0.05 * np.sin(2 * np.pi * 5 * t))
    f0[(t % 2.0) > 1.8] = 0.0
    ld = -35.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)
    return f0.astype(np.float32), ld.astype(np.float32)


@pytest.fixture(scope="module")
def default_checkpoint():
    from ddsp_pd.checkpoint import load_checkpoint

    return load_checkpoint(DEFAULT_CHECKPOINT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_in_pieces_with_carried_state_equals_whole(default_checkpoint, backend):
    model = InferenceModel(default_checkpoint, kernels=backend)
    f0s, lds = model.preprocess(*_long_features())
    whole, last = model.decode_with_state(f0s, lds)
    state, pieces = None, []
    for start in range(0, f0s.shape[0], 333):
        piece, state = model.decode_with_state(
            f0s[start : start + 333], lds[start : start + 333], state
        )
        pieces.append(piece)
    for name, value in whole.items():
        joined = np.concatenate([p[name] for p in pieces], axis=1)
        np.testing.assert_allclose(joined, value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(state, last, rtol=0, atol=1e-5)


@pytest.mark.parametrize("phase_mode", ["accurate", "ddsp"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_frames", [1, 250, 1000])
def test_rendering_in_blocks_equals_whole_clip_at_the_seams(
    default_checkpoint, backend, phase_mode, block_frames
):
    model = InferenceModel(default_checkpoint, kernels=backend, phase_mode=phase_mode)
    f0, ld = _long_features()
    hop = model.config.hop
    whole = model.render(f0, ld, seed=9)
    pieces = list(model.render_blocks(f0, ld, seed=9, block_frames=block_frames))
    joined = np.concatenate(pieces)
    assert joined.shape == whole.shape
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-4)
    # The seams themselves: a few samples either side of every block boundary.
    seams = np.arange(block_frames, len(f0), block_frames) * hop
    near = (seams[:, None] + np.arange(-3 * hop, 3 * hop)).ravel()
    near = near[(near >= 0) & (near < len(whole))]
    np.testing.assert_allclose(joined[near], whole[near], rtol=0, atol=1e-4)


def test_rendering_in_blocks_uses_a_given_noise_in_order(default_checkpoint):
    model = InferenceModel(default_checkpoint, kernels="numpy")
    f0, ld = _long_features(900)
    noise = np.random.default_rng(5).uniform(-1, 1, len(f0) * model.config.hop)
    whole = model.render(f0, ld, noise=noise)
    joined = np.concatenate(list(model.render_blocks(f0, ld, noise=noise, block_frames=200)))
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-4)


def test_engine_renders_long_clips_in_blocks_with_the_same_result(tmp_path, monkeypatch):
    import ddsp_pd.transfer as transfer

    engine = transfer.Engine(kernels="numpy")
    loaded = engine.load_model(DEFAULT_CHECKPOINT)
    features = _features_file(tmp_path, 1200)
    short = engine.render(loaded, _settings(seed=2), features_path=features)
    monkeypatch.setattr(transfer, "LONG_RENDER_FRAMES", 100)
    calls = []
    original = loaded.model.render_blocks
    monkeypatch.setattr(
        loaded.model, "render_blocks", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    long = engine.render(loaded, _settings(seed=2), features_path=features)
    assert calls, "the long path was not taken"
    np.testing.assert_allclose(long.audio, short.audio, rtol=0, atol=1e-4)


def test_a_reloaded_checkpoint_does_not_reuse_the_old_models_cache(tmp_path):
    """The cache keys on the model object: new weights at the same path are rendered anew."""
    import shutil

    from ddsp_pd.transfer import Engine

    ckpt = tmp_path / "model"
    shutil.copytree(DEFAULT_CHECKPOINT, ckpt)
    engine = Engine(kernels="numpy", max_models=1)
    features = _features_file(tmp_path)
    first = engine.render(engine.load_model(ckpt), _settings(), features_path=features)
    engine.load_model(DEFAULT_CHECKPOINT)  # evicts the first model (max_models=1)
    reloaded = engine.load_model(ckpt)
    reloaded.model.weights.dense_bias[:] += 1.0  # as if the folder now held other weights
    second = engine.render(reloaded, _settings(), features_path=features)
    assert np.max(np.abs(second.audio - first.audio)) > 1e-3
