"""The rendering model against the outputs of the real ddsp 3.7 library (fixtures/reference).

Every case and every control setting in ``index.json`` is rendered from the setting's
stored conditioning (``S/f0_hz``, ``S/loudness_db``) and white noise (``S/white_noise``)
with ``phase_mode="ddsp"``, and each stage is compared with the stored array. The model
under test is the numpy inference path (:class:`ddsp_pd.inference.InferenceModel`, what
``ddsp-pd render`` and the server use) with each kernel backend; the TensorFlow model kept
for training (:class:`ddsp_pd.model.DdspModel`) is checked against the same references at
the end of this file.

Tolerances (observed errors are ~1e-6 relative, float32 rounding):
- f0_scaled, ld_scaled: 1e-6 absolute.
- raw decoder outputs, harmonic controls, noise magnitudes: max |error| <= 1e-4 x max |ref|.
- harmonic, filtered noise, dry and reverb audio: 1e-3 absolute.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REAL, REFERENCE, REFERENCE_CHECKPOINT, require_fixtures

from ddsp_pd.checkpoint import inspect_checkpoint, load_checkpoint
from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.inference import INTERMEDIATE_NAMES, InferenceModel, kernels
from ddsp_pd.inference import decoder as inference_decoder

require_fixtures()
INDEX = json.loads((REFERENCE / "index.json").read_text())
CASES = sorted(INDEX["arrays"])
SETTINGS = [s["name"] for s in INDEX["control_settings"]]
BACKENDS = ["numpy"] + (["compiled"] if kernels.compiled_available() else [])

SCALED_ATOL = 1e-6
REL_TOL = 1e-4
AUDIO_ATOL = 1e-3
RAW = ("raw_amps", "raw_harmonic_distribution", "raw_noise_magnitudes")
CONTROLS = ("harmonic_amplitudes", "harmonic_distribution", "noise_magnitudes")
SIGNALS = ("harmonic_signal", "filtered_noise_signal", "dry_signal", "reverb_signal")


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(REFERENCE_CHECKPOINT)


@pytest.fixture(scope="module", params=BACKENDS)
def model(checkpoint, request):
    return InferenceModel(checkpoint, phase_mode="ddsp", kernels=request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def accurate_model(checkpoint, request):
    return InferenceModel(checkpoint, kernels=request.param)


_CACHE: dict[str, dict[str, np.ndarray]] = {}


def case_arrays(case: str) -> dict[str, np.ndarray]:
    if case not in _CACHE:
        with np.load(REFERENCE / "cases" / f"{case}.npz") as data:
            _CACHE[case] = {k: data[k] for k in data.files}
    return _CACHE[case]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got)
    assert got.shape == ref.shape
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def decoder_error(model: InferenceModel, arrays: dict[str, np.ndarray], setting: str) -> float:
    """Worst relative error of the raw decoder outputs for one setting."""
    p = f"{setting}/"
    raw = model.decode(arrays[p + "f0_scaled"], arrays[p + "ld_scaled"])
    return max(relative_error(raw[k[4:]][0], arrays[p + k]) for k in RAW)


def check_stages(stages: dict, arrays: dict[str, np.ndarray], setting: str) -> None:
    p = f"{setting}/"
    for name in ("f0_scaled", "ld_scaled"):
        np.testing.assert_allclose(stages[name], arrays[p + name], rtol=0, atol=SCALED_ATOL)
    for name in RAW + CONTROLS:
        assert relative_error(stages[name], arrays[p + name]) <= REL_TOL, name
    for name in SIGNALS:
        np.testing.assert_allclose(stages[name], arrays[p + name], rtol=0, atol=AUDIO_ATOL)


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
    assert audio.dtype == np.float32
    check_stages(stages, arrays, setting)
    np.testing.assert_array_equal(audio, stages["reverb_signal"])


@pytest.mark.parametrize(
    ("name", "index", "delta"),
    [
        # About a fifth of a typical output weight, on a harmonic-distribution output.
        ("decoder/dense_out/kernel", (10, 30), 0.01),
        # One first-layer weight of the f0 input stack (stack 1: input_keys[1]).
        ("decoder/input_stacks/1/layer_with_weights-0/layer_with_weights-0/kernel", (0, 5), 0.1),
        # The recurrent weights into the update gate of GRU unit 20 (this briefly trained
        # model leans little on any single recurrent weight).
        ("decoder/rnn/rnn/cell/recurrent_kernel", (slice(None), 20), 0.3),
    ],
)
def test_perturbed_weight_breaks_the_decoder_comparison(checkpoint, model, name, index, delta):
    arrays = case_arrays("synthetic_vibrato")
    assert decoder_error(model, arrays, "plain") <= REL_TOL
    variables = dict(checkpoint.variables)
    bumped = variables[name].copy()
    bumped[index] += delta
    variables[name] = bumped
    broken = InferenceModel(checkpoint.config, variables, phase_mode="ddsp", kernels=model.kernels)
    assert decoder_error(broken, arrays, "plain") > 10 * REL_TOL


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


def test_chunked_harmonic_synthesis_equals_one_piece(checkpoint, monkeypatch):
    """The numpy oscillator bank works in chunks of frames: the seams must not show."""
    model = InferenceModel(checkpoint, kernels="numpy")
    arrays = case_arrays("sung_female")
    f0, ld = arrays["plain/f0_hz"], arrays["plain/loudness_db"]
    _, whole = model.render(f0, ld, return_intermediates=True)
    monkeypatch.setattr(kernels, "_HARMONIC_CHUNK", 97)
    _, pieces = model.render(f0, ld, return_intermediates=True)
    np.testing.assert_allclose(pieces["harmonic_signal"], whole["harmonic_signal"], atol=1e-6)


def test_decoding_in_blocks_equals_one_block(model, monkeypatch):
    """Long clips are decoded in blocks with the GRU state carried across them."""
    arrays = case_arrays("flute_melody")
    whole = model.decode(arrays["plain/f0_scaled"], arrays["plain/ld_scaled"])
    monkeypatch.setattr(inference_decoder, "DECODE_BLOCK_FRAMES", 300)
    blocks = model.decode(arrays["plain/f0_scaled"], arrays["plain/ld_scaled"])
    for name, value in whole.items():
        np.testing.assert_allclose(blocks[name], value, rtol=0, atol=1e-5)
        ref = arrays[f"plain/raw_{name}"]
        assert relative_error(blocks[name][0], ref) <= REL_TOL


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


def _random_variables(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, 0.05, s).astype(np.float32) for n, s in shapes.items()}


def test_preprocess_follows_the_era():
    """1.x models scale loudness by 120 dB, 2.x by 80 dB (reference notes, section 4)."""
    small = {"ch": 8, "rnn_channels": 8, "reverb_length": 16}  # weights play no part here
    viola = inspect_checkpoint(REAL / "ddsp162_viola").config.with_sizes(**small)
    ld = np.array([-120.0, -60.0, 0.0], np.float32)
    f0 = np.array([0.0, 440.0, 880.0], np.float32)
    shapes = {**inference_decoder.decoder_variable_shapes(viola)}
    shapes[viola.reverb_ir_name] = (16,)
    f0_scaled, ld_scaled = InferenceModel(viola, _random_variables(shapes)).preprocess(f0, ld)
    np.testing.assert_allclose(ld_scaled, ld / 120.0 + 1.0, atol=1e-7)
    np.testing.assert_allclose(f0_scaled, [0.0, 69.0 / 127.0, 81.0 / 127.0], atol=1e-6)
    new = ModelConfig.solo_instrument(**small)
    shapes = {**inference_decoder.decoder_variable_shapes(new), new.reverb_ir_name: (16,)}
    ld_new = InferenceModel(new, _random_variables(shapes)).preprocess(f0, ld)[1]
    np.testing.assert_allclose(ld_new, ld / 80.0 + 1.0, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_0x_model_builds_from_legacy_names(backend):
    """A 0.x model (f_stack/l_stack, rnn/cell, processors/3/ir) renders."""
    info = inspect_checkpoint(REAL / "google_2020_original_config")
    model = InferenceModel(info.config, _random_variables(info.shapes), kernels=backend)
    assert model.parameter_count == sum(int(np.prod(s)) for s in info.shapes.values())
    audio = model.render(np.full(20, 220.0, np.float32), np.full(20, -30.0, np.float32))
    assert audio.shape == (20 * info.config.hop,) and np.all(np.isfinite(audio))


def test_missing_or_misshapen_variable_is_a_checkpoint_error(checkpoint):
    variables = dict(checkpoint.variables)
    del variables["decoder/dense_out/bias"]
    with pytest.raises(CheckpointError, match="dense_out/bias"):
        InferenceModel(checkpoint.config, variables)
    variables = dict(checkpoint.variables)
    variables["processor_group/reverb/ir"] = np.zeros(10, np.float32)
    with pytest.raises(CheckpointError, match="reverb ir"):
        InferenceModel(checkpoint.config, variables)


# ---------------------------------------------------------------- the TensorFlow model


@pytest.fixture(scope="module")
def tf_model(checkpoint):
    pytest.importorskip("tensorflow")
    from ddsp_pd.model import DdspModel

    return DdspModel(checkpoint, phase_mode="ddsp")


@pytest.mark.parametrize("case", CASES)
def test_tensorflow_model_matches_ddsp(tf_model, case):
    """The training model renders the library's numbers too (one setting per case)."""
    arrays = case_arrays(case)
    setting = "adjust_thr05_shift" if case == "sung_female" else "plain"
    p = f"{setting}/"
    _, stages = tf_model.render(
        arrays[p + "f0_hz"],
        arrays[p + "loudness_db"],
        noise=arrays[p + "white_noise"],
        return_intermediates=True,
    )
    check_stages(stages, arrays, setting)


def test_trainable_path_matches_ddsp_too(tf_model):
    """``__call__`` (tf.scan GRU, the training path) gives the library's numbers."""
    import tensorflow as tf

    arrays = case_arrays("synthetic_vibrato")
    p = "plain/"
    out = tf.function(tf_model.__call__)(
        tf.constant(arrays[p + "f0_hz"][None]),
        tf.constant(arrays[p + "loudness_db"][None]),
        tf.constant(arrays[p + "white_noise"][None]),
    )
    for name in RAW + CONTROLS:
        assert relative_error(out[name].numpy()[0], arrays[p + name]) <= REL_TOL, name
    np.testing.assert_allclose(
        out["audio"].numpy()[0], arrays[p + "reverb_signal"], atol=AUDIO_ATOL
    )


def test_tensorflow_and_numpy_models_render_the_same_audio_per_seed(checkpoint, tf_model):
    """Seeded noise is the same in both, so their renders agree without a noise array."""
    from ddsp_pd.model import DdspModel

    arrays = case_arrays("flute_melody")
    f0, ld = arrays["plain/f0_hz"][:400], arrays["plain/loudness_db"][:400]
    expected = DdspModel(checkpoint).render(f0, ld, seed=5)
    got = InferenceModel(checkpoint).render(f0, ld, seed=5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_fresh_decoder_has_checkpoint_names_and_keras_initialisation(checkpoint):
    pytest.importorskip("tensorflow")
    from ddsp_pd.decoder import Decoder

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
    tf = pytest.importorskip("tensorflow")
    from ddsp_pd.model import DdspModel

    config = ModelConfig.solo_instrument().with_sizes(ch=16, rnn_channels=8, reverb_length=100)
    model = DdspModel(config, seed=0)
    assert set(inference_decoder.decoder_variable_shapes(config)) <= set(model.ddsp_variables())
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
