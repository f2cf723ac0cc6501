"""DDSP-VST-config ddsp checkpoints (``models/vst/vst.gin``) against the real ddsp 3.7.

Every case in ``vst_ddsp37/cases/`` is rendered from its stored f0, power and noise (the
signal's white noise and the reverb IR's noise) with ``phase_mode="ddsp"``, and each stage is
compared with the stored array:

- preprocessor: ``pw_db`` from the audio within 1e-6 relative (ddsp computes it in float32,
  ddsp-pd in float64: see ddsp_pd/power.py), ``pw_scaled`` and ``f0_scaled`` 1e-6 absolute;
- raw decoder outputs: max |error| <= 1e-4 x max |ref|;
- harmonic, filtered noise, dry and reverb signals: 1e-3 absolute; the reverb IR from its
  stored noise: max |error| <= 1e-4 x max |ref|; the final cropped audio 1e-3 absolute.

A perturbed decoder weight or reverb magnitude must fail them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import VST_REFERENCE, fixture_params, needs_fixtures

from ddsp_pd.checkpoint import inspect_checkpoint, load_checkpoint
from ddsp_pd.config import ModelConfig, config_from_gin
from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.gin_config import parse_gin, read_gin
from ddsp_pd.inference import VST_INTERMEDIATE_NAMES, InferenceModel, kernels
from ddsp_pd.kinds.controls import ControlModel, SynthControls
from ddsp_pd.power import compute_power

CHECKPOINT = VST_REFERENCE / "checkpoint"
CASES_DIR = VST_REFERENCE / "cases"
BACKENDS = ["numpy"] + (["compiled"] if kernels.compiled_available() else [])

PW_DB_RTOL = 1e-6
SCALED_ATOL = 1e-6
REL_TOL = 1e-4
AUDIO_ATOL = 1e-3
IR_REL_TOL = 1e-4
RAW = ("amps", "harmonic_distribution", "noise_magnitudes")


def _case_names() -> list[str]:
    index = CASES_DIR / "index.json"
    return sorted(json.loads(index.read_text())["cases"]) if index.is_file() else []


CASES = fixture_params(_case_names())
_ARRAYS: dict[str, dict[str, np.ndarray]] = {}


def case(name: str) -> dict[str, np.ndarray]:
    if name not in _ARRAYS:
        with np.load(CASES_DIR / f"{name}.npz") as data:
            _ARRAYS[name] = {k: data[k] for k in data.files}
    return _ARRAYS[name]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


@pytest.fixture(scope="module")
def checkpoint():
    if not (CHECKPOINT / "ckpt-400.index").is_file():
        pytest.skip(f"VST reference checkpoint not found at {CHECKPOINT}")
    return load_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module", params=BACKENDS)
def model(checkpoint, request):
    return InferenceModel(checkpoint, phase_mode="ddsp", kernels=request.param)


def staged(model: InferenceModel, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    return model.render(
        arrays["pre/f0_hz"],
        arrays["pre/pw_db"],
        noise=arrays["filtered_noise/white_noise"],
        reverb_noise=arrays["reverb/ir_white_noise"],
        return_intermediates=True,
    )


# ---------------------------------------------------------------- the config


@needs_fixtures
def test_config_from_the_gin_and_the_variables(checkpoint) -> None:
    c = checkpoint.config
    assert c.era == "vst" and c.level == "power" and c.level_scaled_key == "pw_scaled"
    assert (c.sample_rate, c.frame_rate, c.hop, c.power_frame_size) == (16000, 50.0, 320, 1024)
    assert c.input_keys == ("pw_scaled", "f0_scaled")
    assert (c.ch, c.rnn_channels, c.layers_per_stack) == (256, 512, 1)
    assert (c.n_harmonics, c.n_noise_bands, c.amp_resample_method) == (60, 65, "linear")
    assert (c.reverb, c.reverb_type, c.reverb_length) == (True, "filtered_noise", 24000)
    assert (c.reverb_n_frames, c.reverb_n_filter_banks, c.reverb_window_size) == (500, 32, 257)
    assert c.reverb_initial_bias == -3.0 and c.reverb_magnitudes_name.endswith("magnitudes")
    assert (c.crop_size, c.crop_location) == (320, "back")
    assert checkpoint.parameter_count == 1_889_278  # the fixture README's count
    assert ModelConfig.vst() == c  # vst.gin's defaults are this model's sizes
    assert inspect_checkpoint(CHECKPOINT).refusal is None


@needs_fixtures
def test_sizes_in_the_gin_must_agree_with_the_variables(checkpoint) -> None:
    text = (CHECKPOINT / "operative_config-0.gin").read_text()
    shapes = {k: v.shape for k, v in checkpoint.variables.items()}
    wrong = text.replace("RnnFcDecoder.rnn_channels = 512", "RnnFcDecoder.rnn_channels = 256")
    with pytest.raises(CheckpointError, match="rnn_channels = 256 but the checkpoint"):
        config_from_gin(parse_gin(wrong), shapes)
    banks = text.replace("n_filter_banks = 32", "n_filter_banks = 16")
    with pytest.raises(CheckpointError, match="n_filter_banks = 16"):
        config_from_gin(parse_gin(banks), shapes)


def _without(text: str, *selectors: str) -> str:
    return "\n".join(
        line for line in text.splitlines() if not any(line.startswith(s) for s in selectors)
    )


@needs_fixtures
def test_a_vst_gin_with_missing_bindings_names_them(tmp_path: Path) -> None:
    text = (CHECKPOINT / "operative_config-0.gin").read_text()
    bad = _without(
        text, "OnlineF0PowerPreprocessor.frame_size", "FilteredNoiseReverb.reverb_length"
    )
    with pytest.raises(CheckpointError) as excinfo:
        config_from_gin(parse_gin(bad))
    message = str(excinfo.value)
    assert "\n" not in message
    assert "OnlineF0PowerPreprocessor.frame_size" in message
    assert "FilteredNoiseReverb.reverb_length" in message
    bad = _without(text, "Crop.crop_location")
    with pytest.raises(CheckpointError, match=r"lacks Crop\.crop_location"):
        config_from_gin(parse_gin(bad))


def test_unsupported_vst_graphs_are_refused() -> None:
    base = """
frame_rate = 50
Autoencoder.preprocessor = @preprocessing.OnlineF0PowerPreprocessor()
OnlineF0PowerPreprocessor.frame_rate = %frame_rate
OnlineF0PowerPreprocessor.frame_size = 1024
Harmonic.sample_rate = 16000
RnnFcDecoder.input_keys = ('pw_scaled', 'f0_scaled')
RnnFcDecoder.output_splits = (('amps', 1), ('harmonic_distribution', 60), ('noise_magnitudes', 65))
RnnFcDecoder.ch = 256
RnnFcDecoder.rnn_channels = 512
RnnFcDecoder.layers_per_stack = 1
"""
    dag = (
        "ProcessorGroup.dag = [(@synths.Harmonic(), []), (@synths.FilteredNoise(), []), "
        "(@processors.Add(), []){rest}]\n"
    )
    ok = config_from_gin(parse_gin(base + dag.format(rest="")))
    assert ok.era == "vst" and not ok.reverb and ok.crop_size == 0
    reverb = ", (@effects.FilteredNoiseReverb(), [])"
    with pytest.raises(CheckpointError, match="non-trainable FilteredNoiseReverb"):
        config_from_gin(parse_gin(base + dag.format(rest=reverb)))
    with pytest.raises(CheckpointError, match="after Add"):
        config_from_gin(parse_gin(base + dag.format(rest=", (@processors.Crop(), [])" + reverb)))
    with pytest.raises(CheckpointError, match="only 'center'"):
        config_from_gin(
            parse_gin(base + "OnlineF0PowerPreprocessor.padding = 'same'\n" + dag.format(rest=""))
        )
    with pytest.raises(CheckpointError, match="need pw_scaled and f0_scaled"):
        config_from_gin(
            parse_gin(
                base.replace("('pw_scaled', 'f0_scaled')", "('ld_scaled', 'f0_scaled')")
                + dag.format(rest="")
            )
        )


# ---------------------------------------------------------------- every stage


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_preprocessor_matches_ddsp(model, name) -> None:
    a = case(name)
    pw_db = compute_power(a["audio"], 16000, 50.0, model.config.power_frame_size)
    np.testing.assert_allclose(pw_db, a["pre/pw_db"], rtol=PW_DB_RTOL, atol=0)
    f0_scaled, pw_scaled = model.preprocess(a["f0_hz_in"], a["pre/pw_db"])
    np.testing.assert_allclose(f0_scaled, a["pre/f0_scaled"], rtol=0, atol=SCALED_ATOL)
    np.testing.assert_allclose(pw_scaled, a["pre/pw_scaled"], rtol=0, atol=SCALED_ATOL)


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_every_stage_matches_ddsp(model, name) -> None:
    a = case(name)
    audio, stages = staged(model, a)
    assert set(VST_INTERMEDIATE_NAMES) <= set(stages)
    np.testing.assert_allclose(stages["pw_scaled"], a["pre/pw_scaled"], rtol=0, atol=SCALED_ATOL)
    np.testing.assert_allclose(stages["f0_scaled"], a["pre/f0_scaled"], rtol=0, atol=SCALED_ATOL)
    for key in RAW:
        assert relative_error(stages[f"raw_{key}"], a[f"dec/{key}"]) <= REL_TOL, key
    for got, ref in (
        ("harmonic_amplitudes", "harmonic/amplitudes"),
        ("harmonic_distribution", "harmonic/harmonic_distribution"),
        ("noise_magnitudes", "filtered_noise/magnitudes"),
    ):
        assert relative_error(stages[got], a[ref]) <= REL_TOL, got
    assert relative_error(stages["reverb_ir"], a["reverb/ir"]) <= IR_REL_TOL
    for got, ref in (
        ("harmonic_signal", "harmonic/signal"),
        ("filtered_noise_signal", "filtered_noise/signal"),
        ("dry_signal", "add/signal"),
        ("reverb_signal", "reverb/signal"),
        ("crop_signal", "crop/signal"),
    ):
        np.testing.assert_allclose(stages[got], a[ref], rtol=0, atol=AUDIO_ATOL, err_msg=got)
    assert audio.shape == a["audio"].shape == ((len(a["pre/f0_hz"]) - 1) * 320,)
    np.testing.assert_allclose(audio, a["model_call/audio_synth"], rtol=0, atol=AUDIO_ATOL)


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_stages_from_the_stored_inputs(model, name) -> None:
    """Each stage alone from ddsp's own input to it: the decoder from the stored scaled
    inputs, the reverb IR from the stored magnitudes' noise."""
    a = case(name)
    raw = model.decode(a["pre/f0_scaled"], a["pre/pw_scaled"])
    for key in RAW:
        assert relative_error(raw[key][0], a[f"dec/{key}"]) <= REL_TOL, key
    np.testing.assert_allclose(
        model.synth.reverb.magnitudes, a["reverb/magnitudes_scaled"], rtol=1e-6, atol=1e-9
    )
    from ddsp_pd.inference import synthesis

    ir = synthesis.impulse_response(model.synth.reverb, noise=a["reverb/ir_white_noise"])
    assert relative_error(ir, a["reverb/ir"]) <= IR_REL_TOL


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "index", "delta"),
    [
        ("decoder/dense_out/kernel", (10, 30), 0.05),
        ("decoder/input_stacks/0/layer_with_weights-0/layer_with_weights-0/kernel", (0, 5), 0.1),
        ("decoder/rnn/rnn/cell/recurrent_kernel", (slice(None), 20), 0.3),
    ],
)
def test_a_perturbed_weight_fails_the_decoder_comparison(checkpoint, name, index, delta) -> None:
    a = case(_case_names()[0])
    variables = dict(checkpoint.variables)
    bumped = variables[name].copy()
    bumped[index] += delta
    variables[name] = bumped
    broken = InferenceModel(checkpoint.config, variables, phase_mode="ddsp")
    raw = broken.decode(a["pre/f0_scaled"], a["pre/pw_scaled"])
    assert max(relative_error(raw[k][0], a[f"dec/{k}"]) for k in RAW) > 10 * REL_TOL


@needs_fixtures
def test_a_perturbed_reverb_magnitude_fails_the_ir_and_audio_comparison(checkpoint) -> None:
    a = case(_case_names()[0])
    variables = dict(checkpoint.variables)
    name = "processor_group/reverb/magnitudes"
    bumped = variables[name].copy()
    bumped[:20, :] += 1.0  # the first 20 IR frames (60 ms) louder
    variables[name] = bumped
    broken = InferenceModel(checkpoint.config, variables, phase_mode="ddsp")
    audio, stages = staged(broken, a)
    assert relative_error(stages["reverb_ir"], a["reverb/ir"]) > 10 * IR_REL_TOL
    assert np.max(np.abs(audio - a["crop/signal"])) > AUDIO_ATOL


# ---------------------------------------------------------------- the kind


@needs_fixtures
def test_the_checkpoint_is_a_power_control_model(checkpoint) -> None:
    model = InferenceModel(checkpoint)
    assert isinstance(model, ControlModel)
    assert (model.kind, model.era, model.level, model.power_frame_size) == (
        "vst",
        "vst",
        "power",
        1024,
    )
    assert model.synth.reverb.kind == "filtered_noise"
    assert model.synth.output_samples(1001) == 320000
    a = case(_case_names()[0])
    controls, state = model.synth_controls(a["pre/f0_hz"], a["pre/pw_db"])
    assert isinstance(controls, SynthControls) and state.shape == (512,)
    for got, ref in (
        (controls.amplitudes, "harmonic/amplitudes"),
        (controls.harmonic_distribution, "harmonic/harmonic_distribution"),
        (controls.noise_magnitudes, "filtered_noise/magnitudes"),
    ):
        assert relative_error(got, a[ref]) <= REL_TOL
    np.testing.assert_array_equal(controls.f0_hz, a["pre/f0_hz"])
    # In pieces with the state carried: the same controls.
    half = 400
    first, mid = model.synth_controls(a["pre/f0_hz"][:half], a["pre/pw_db"][:half])
    second, end = model.synth_controls(a["pre/f0_hz"][half:], a["pre/pw_db"][half:], mid)
    joined = SynthControls.concatenate([first, second])
    for key in ("amplitudes", "harmonic_distribution", "noise_magnitudes"):
        np.testing.assert_allclose(
            getattr(joined, key), getattr(controls, key), rtol=1e-5, atol=1e-7
        )
    np.testing.assert_allclose(end, state, rtol=1e-5, atol=1e-6)


@needs_fixtures
def test_seeded_reverb_noise_and_blocks(checkpoint) -> None:
    model = InferenceModel(checkpoint, kernels="numpy")
    a = case(_case_names()[-1])
    f0, pw = a["pre/f0_hz"][:300], a["pre/pw_db"][:300]
    one = model.render(f0, pw, seed=3)
    assert one.shape == (299 * 320,)
    np.testing.assert_array_equal(model.render(f0, pw, seed=3), one)
    other = model.render(f0, pw, seed=4)
    assert np.max(np.abs(other - one)) > 1e-4  # signal and reverb noise both follow the seed
    # The IR of a seed does not depend on the clip.
    _, long_stages = model.render(a["pre/f0_hz"], a["pre/pw_db"], seed=3, return_intermediates=True)
    _, short_stages = model.render(f0, pw, seed=3, return_intermediates=True)
    np.testing.assert_array_equal(long_stages["reverb_ir"], short_stages["reverb_ir"])
    joined = np.concatenate(list(model.render_blocks(f0, pw, seed=3, block_frames=70)))
    assert joined.shape == one.shape
    np.testing.assert_allclose(joined, one, rtol=0, atol=1e-4)


@needs_fixtures
def test_vst_checkpoint_refuses_loudness_features(checkpoint, tmp_path: Path) -> None:
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.transfer import Engine, RenderSettings

    path = tmp_path / "loudness.npz"
    np.savez(path, f0_hz=np.full(50, 440.0), f0_confidence=np.ones(50), loudness_db=np.zeros(50))
    engine = Engine(kernels="numpy")
    loaded = engine.load_model(CHECKPOINT)
    settings = RenderSettings(controls=ControlSettings(adjust=False), normalize=False)
    with pytest.raises(InputError, match=r"holds loudness_db.*takes power_db"):
        engine.render(loaded, settings, features_path=path)


@needs_fixtures
def test_engine_renders_the_vst_checkpoint_from_audio_and_power_features(tmp_path: Path) -> None:
    import soundfile as sf

    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.features import load_features_npz
    from ddsp_pd.transfer import Engine, RenderSettings

    a = case(_case_names()[-1])
    wav = tmp_path / "in.wav"
    sf.write(wav, a["audio"][: 16000 * 2], 16000, subtype="FLOAT")
    engine = Engine(kernels="numpy")
    loaded = engine.load_model(CHECKPOINT)
    assert (loaded.kind, loaded.era, loaded.level) == ("vst", "vst", "power")
    assert loaded.ranges is not None  # from dataset_statistics.pkl
    settings = RenderSettings(controls=ControlSettings(), normalize=False, seed=1)
    result = engine.render(loaded, settings, input_path=wav)
    assert result.features.level == "power"
    assert result.features.n_frames == 101
    # The same power as ddsp's, but for the last frames, whose 1024-sample window sees the cut.
    np.testing.assert_allclose(
        result.features.power_db[:98], a["pre/pw_db"][:98], rtol=1e-5, atol=1e-4
    )
    assert result.audio.shape == (32000,)
    assert result.adjusted.report.adjust_ran and "power" in result.adjusted.report.message
    features = tmp_path / "power.npz"
    np.savez(
        features,
        f0_hz=a["pre/f0_hz"][:200],
        f0_confidence=a["pre/f0_confidence"][:200],
        power_db=a["pre/pw_db"][:200],
    )
    loaded_features = load_features_npz(features, 50.0, "power")
    assert loaded_features.n_frames == 200
    again = engine.render(loaded, settings, features_path=features, keep_controls=True)
    assert again.audio.shape == (199 * 320,)
    assert again.controls is not None and again.controls.n_frames == 200


def test_vst_defaults_config_is_valid() -> None:
    c = ModelConfig.vst()
    assert c.level == "power" and c.era == "vst"
    with pytest.raises(CheckpointError, match="power"):
        ModelConfig.vst(power_frame_size=None)
    solo = ModelConfig.solo_instrument()
    assert solo.level == "loudness" and solo.power_frame_size is None and solo.crop_size == 0


@needs_fixtures
def test_gin_file_reads_with_its_macros() -> None:
    bindings = read_gin(CHECKPOINT / "operative_config-0.gin")
    assert config_from_gin(bindings).power_frame_size == 1024


@needs_fixtures
def test_ddsp_phase_mode_in_blocks_places_samples_by_the_clips_index(checkpoint) -> None:
    """ddsp's resize positions depend on the sample's index in the clip: blocks carry it."""
    model = InferenceModel(checkpoint, kernels="numpy", phase_mode="ddsp")
    a = case(_case_names()[0])
    f0, pw = a["pre/f0_hz"][:400], a["pre/pw_db"][:400]
    whole = model.render(f0, pw, seed=2)
    joined = np.concatenate(list(model.render_blocks(f0, pw, seed=2, block_frames=90)))
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-4)
