"""DdspModel against the outputs of the real ddsp 3.7 library (fixtures/reference).

Every case and every control setting in ``index.json`` is rendered from the setting's
stored conditioning (``S/f0_hz``, ``S/loudness_db``) and white noise (``S/white_noise``)
with ``phase_mode="ddsp"``, and each stage is compared with the stored array.

Tolerances (observed errors are ~1e-6 relative, float32 rounding):
- f0_scaled, ld_scaled: 1e-6 absolute.
- raw decoder outputs, harmonic controls, noise magnitudes: max |error| <= 1e-4 x max |ref|.
- harmonic, filtered noise, dry and reverb audio: 1e-3 absolute.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import REAL, REFERENCE, REFERENCE_CHECKPOINT

from ddsp_pd.checkpoint import inspect_checkpoint, load_checkpoint
from ddsp_pd.config import ModelConfig
from ddsp_pd.decoder import Decoder, decoder_variable_shapes
from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.model import INTERMEDIATE_NAMES, DdspModel

INDEX = json.loads((REFERENCE / "index.json").read_text())
CASES = sorted(INDEX["arrays"])
SETTINGS = [s["name"] for s in INDEX["control_settings"]]

SCALED_ATOL = 1e-6
REL_TOL = 1e-4
AUDIO_ATOL = 1e-3
RAW = ("raw_amps", "raw_harmonic_distribution", "raw_noise_magnitudes")
CONTROLS = ("harmonic_amplitudes", "harmonic_distribution", "noise_magnitudes")
SIGNALS = ("harmonic_signal", "filtered_noise_signal", "dry_signal", "reverb_signal")


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(REFERENCE_CHECKPOINT)


@pytest.fixture(scope="module")
def model(checkpoint):
    return DdspModel(checkpoint, phase_mode="ddsp")


@pytest.fixture(scope="module")
def accurate_model(checkpoint):
    return DdspModel(checkpoint)


_CACHE: dict[str, dict[str, np.ndarray]] = {}


def case_arrays(case: str) -> dict[str, np.ndarray]:
    if case not in _CACHE:
        with np.load(REFERENCE / "cases" / f"{case}.npz") as data:
            _CACHE[case] = {k: data[k] for k in data.files}
    return _CACHE[case]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def decoder_error(model: DdspModel, arrays: dict[str, np.ndarray], setting: str) -> float:
    """Worst relative error of the raw decoder outputs for one setting."""
    p = f"{setting}/"
    raw = model.decode(arrays[p + "f0_scaled"], arrays[p + "ld_scaled"])
    return max(relative_error(raw[k[4:]].numpy()[0], arrays[p + k]) for k in RAW)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("case", CASES)
def test_every_stage_matches_ddsp(model, case, setting):
    arrays = case_arrays(case)
    p = f"{setting}/"
    audio, stages = model.render(
        arrays[p + "f0_hz"],
        arrays[p + "loudness_db"],
        noise=arrays[p + "white_noise"],
        return_intermediates=True,
    )
    assert set(INTERMEDIATE_NAMES) <= set(stages)
    n_frames = arrays[p + "f0_hz"].shape[0]
    assert audio.shape == (n_frames * model.config.hop,)
    for name in ("f0_scaled", "ld_scaled"):
        np.testing.assert_allclose(stages[name], arrays[p + name], rtol=0, atol=SCALED_ATOL)
    for name in RAW + CONTROLS:
        assert relative_error(stages[name], arrays[p + name]) <= REL_TOL, name
    for name in SIGNALS:
        np.testing.assert_allclose(stages[name], arrays[p + name], rtol=0, atol=AUDIO_ATOL)
    np.testing.assert_array_equal(audio, stages["reverb_signal"])


@pytest.mark.parametrize(
    ("name", "index", "delta"),
    [
        # About a fifth of a typical output weight, on a harmonic-distribution output.
        ("decoder/dense_out/kernel", (10, 30), 0.01),
        # One first-layer weight of the f0 input stack (stack 1: input_keys[1]).
        ("decoder/input_stacks/1/layer_with_weights-0/layer_with_weights-0/kernel", (0, 5), 0.1),
    ],
)
def test_perturbed_weight_breaks_the_decoder_comparison(checkpoint, model, name, index, delta):
    arrays = case_arrays("synthetic_vibrato")
    assert decoder_error(model, arrays, "plain") <= REL_TOL
    variables = dict(checkpoint.variables)
    bumped = variables[name].copy()
    bumped[index] += delta
    variables[name] = bumped
    broken = DdspModel(checkpoint.config, variables, phase_mode="ddsp")
    assert decoder_error(broken, arrays, "plain") > 10 * REL_TOL


def test_trainable_path_matches_ddsp_too(model):
    """``__call__`` (tf.scan GRU, the training path) gives the library's numbers."""
    arrays = case_arrays("synthetic_vibrato")
    p = "plain/"
    out = tf.function(model.__call__)(
        tf.constant(arrays[p + "f0_hz"][None]),
        tf.constant(arrays[p + "loudness_db"][None]),
        tf.constant(arrays[p + "white_noise"][None]),
    )
    for name in RAW + CONTROLS:
        assert relative_error(out[name].numpy()[0], arrays[p + name]) <= REL_TOL, name
    np.testing.assert_allclose(
        out["audio"].numpy()[0], arrays[p + "reverb_signal"], atol=AUDIO_ATOL
    )


def test_accurate_phase_mode_agrees_before_ddsp_drifts(accurate_model):
    """Away from the harmonics, the accurate mode is the same model: identical decoder
    and noise, and harmonic audio equal while ddsp's float32 phase has not drifted yet
    (its first 40 ms)."""
    arrays = case_arrays("flute_melody")
    p = "plain/"
    _, stages = accurate_model.render(
        arrays[p + "f0_hz"],
        arrays[p + "loudness_db"],
        noise=arrays[p + "white_noise"],
        return_intermediates=True,
    )
    for name in RAW + CONTROLS:
        assert relative_error(stages[name], arrays[p + name]) <= REL_TOL, name
    np.testing.assert_allclose(
        stages["filtered_noise_signal"], arrays[p + "filtered_noise_signal"], atol=AUDIO_ATOL
    )
    head = 10 * accurate_model.config.hop
    np.testing.assert_allclose(
        stages["harmonic_signal"][:head], arrays[p + "harmonic_signal"][:head], atol=AUDIO_ATOL
    )


def test_render_is_deterministic_per_seed(accurate_model):
    arrays = case_arrays("synthetic_vibrato")
    f0, ld = arrays["plain/f0_hz"][:200], arrays["plain/loudness_db"][:200]
    a = accurate_model.render(f0, ld, seed=3)
    b = accurate_model.render(f0, ld, seed=3)
    c = accurate_model.render(f0, ld, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 0


def test_any_number_of_frames(accurate_model):
    arrays = case_arrays("flute_melody")
    for n_frames in (1, 7, 2345):
        f0 = np.resize(arrays["plain/f0_hz"], n_frames)
        ld = np.resize(arrays["plain/loudness_db"], n_frames)
        audio = accurate_model.render(f0, ld)
        assert audio.shape == (n_frames * accurate_model.config.hop,)
        assert np.all(np.isfinite(audio))


def test_chunked_harmonic_synthesis_equals_one_piece(accurate_model, monkeypatch):
    """Renders longer than a chunk are cut into pieces: the seams must not show."""
    import ddsp_pd.model as model_module

    arrays = case_arrays("sung_female")
    f0, ld = arrays["plain/f0_hz"], arrays["plain/loudness_db"]
    _, whole = accurate_model.render(f0, ld, return_intermediates=True)
    monkeypatch.setattr(model_module, "_CHUNK_FRAMES", 97)
    _, pieces = accurate_model.render(f0, ld, return_intermediates=True)
    np.testing.assert_allclose(pieces["harmonic_signal"], whole["harmonic_signal"], atol=1e-6)


def test_decoding_in_blocks_equals_one_block(model, monkeypatch):
    """Long clips are decoded in blocks with the GRU state carried across them."""
    import ddsp_pd.decoder as decoder_module

    arrays = case_arrays("flute_melody")
    whole = model.decode(arrays["plain/f0_scaled"], arrays["plain/ld_scaled"])
    monkeypatch.setattr(decoder_module, "DECODE_BLOCK_FRAMES", 300)
    blocks = model.decode(arrays["plain/f0_scaled"], arrays["plain/ld_scaled"])
    for name, value in whole.items():
        np.testing.assert_allclose(blocks[name].numpy(), value.numpy(), rtol=0, atol=1e-5)
        ref = arrays[f"plain/raw_{name}"]
        assert relative_error(blocks[name].numpy()[0], ref) <= REL_TOL


def test_batched_render_equals_single_renders(accurate_model):
    arrays = case_arrays("synthetic_vibrato")
    f0 = np.stack([arrays["plain/f0_hz"][:300], arrays["manual_up_oct/f0_hz"][:300]])
    ld = np.stack([arrays["plain/loudness_db"][:300], arrays["manual_up_oct/loudness_db"][:300]])
    noise = np.stack(
        [arrays["plain/white_noise"][: 300 * 64], arrays["manual_up_oct/white_noise"][: 300 * 64]]
    )
    batch = accurate_model.render(f0, ld, noise=noise)
    for i in range(2):
        single = accurate_model.render(f0[i], ld[i], noise=noise[i])
        np.testing.assert_allclose(batch[i], single, atol=1e-5)


def test_bad_inputs_raise_input_errors(accurate_model):
    with pytest.raises(InputError, match="differ in shape"):
        accurate_model.render(np.ones(10), np.ones(11))
    with pytest.raises(InputError, match="no frames"):
        accurate_model.render(np.ones(0), np.ones(0))
    with pytest.raises(InputError, match="finite"):
        accurate_model.render(np.array([np.nan, 1.0]), np.ones(2))
    with pytest.raises(InputError, match="noise"):
        accurate_model.render(np.ones(10), np.ones(10), noise=np.zeros(10))


def test_preprocess_follows_the_era():
    """1.x models scale loudness by 120 dB, 2.x by 80 dB (reference notes, section 4)."""
    small = {"ch": 8, "rnn_channels": 8, "reverb_length": 16}  # weights play no part here
    viola = inspect_checkpoint(REAL / "ddsp162_viola").config.with_sizes(**small)
    ld = np.array([-120.0, -60.0, 0.0], np.float32)
    f0 = np.array([0.0, 440.0, 880.0], np.float32)
    f0_scaled, ld_scaled = DdspModel(viola, seed=0).preprocess(f0, ld)
    np.testing.assert_allclose(ld_scaled.numpy(), ld / 120.0 + 1.0, atol=1e-7)
    np.testing.assert_allclose(f0_scaled.numpy(), [0.0, 69.0 / 127.0, 81.0 / 127.0], atol=1e-6)
    new = DdspModel(ModelConfig.solo_instrument(**small), seed=0)
    np.testing.assert_allclose(new.preprocess(f0, ld)[1].numpy(), ld / 80.0 + 1.0, atol=1e-7)


def test_0x_model_builds_from_legacy_names():
    """A 0.x model (f_stack/l_stack, rnn/cell, processors/3/ir) runs under our engine."""
    info = inspect_checkpoint(REAL / "google_2020_original_config")
    rng = np.random.default_rng(0)
    variables = {n: rng.normal(0, 0.05, s).astype(np.float32) for n, s in info.shapes.items()}
    model = DdspModel(info.config, variables)
    assert set(model.ddsp_variables()) == set(info.shapes)
    audio = model.render(np.full(20, 220.0, np.float32), np.full(20, -30.0, np.float32))
    assert audio.shape == (20 * info.config.hop,) and np.all(np.isfinite(audio))


def test_missing_variable_is_a_checkpoint_error(checkpoint):
    variables = dict(checkpoint.variables)
    del variables["decoder/dense_out/bias"]
    with pytest.raises(CheckpointError, match="dense_out/bias"):
        DdspModel(checkpoint.config, variables)


# ---------------------------------------------------------------- training side


def test_fresh_decoder_has_checkpoint_names_and_keras_initialisation(checkpoint):
    config = checkpoint.config
    fresh = Decoder(config, seed=1)
    names = fresh.ddsp_variables()
    decoder_names = {n for n in checkpoint.variables if n.startswith("decoder/")}
    assert set(names) == decoder_names
    for name, var in names.items():
        assert tuple(var.shape) == checkpoint.variables[name].shape
        value = var.numpy()
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "recurrent_kernel":  # orthogonal: rows orthonormal for [U, 3U]
            np.testing.assert_allclose(value @ value.T, np.eye(value.shape[0]), atol=1e-4)
        elif leaf == "kernel":  # glorot uniform
            limit = np.sqrt(6.0 / (value.shape[0] + value.shape[1]))
            assert np.max(np.abs(value)) <= limit and np.std(value) > limit / 3
        elif leaf == "gamma":
            np.testing.assert_array_equal(value, 1.0)
        else:
            np.testing.assert_array_equal(value, 0.0)
    again = Decoder(config, seed=1).ddsp_variables()
    np.testing.assert_array_equal(again[name].numpy(), names[name].numpy())


def test_decoder_is_differentiable_for_every_variable():
    config = ModelConfig.solo_instrument().with_sizes(ch=16, rnn_channels=8, reverb_length=100)
    model = DdspModel(config, seed=0)
    assert set(decoder_variable_shapes(config)) <= set(model.ddsp_variables())
    f0 = tf.constant(np.full((2, 12), 330.0, np.float32))
    ld = tf.constant(np.linspace(-60, -10, 24, dtype=np.float32).reshape(2, 12))
    noise = tf.constant(
        np.random.default_rng(0).uniform(-1, 1, (2, 12 * config.hop)).astype(np.float32)
    )
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(model(f0, ld, noise)["audio"]))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == len(model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads, strict=True):
        assert grad is not None and np.all(np.isfinite(grad.numpy())), var.name
    assert np.any(grads[-1].numpy() != 0)  # the reverb IR learns
