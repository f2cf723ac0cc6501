"""``ddsp-pd train --config vst``: ddsp's vst.gin on a folder of audio, end to end.

A tiny VST-shaped model (``vst-tiny``: the plugin's 60 harmonics, 65 noise bands and GRU of
512, a narrow decoder and a short FilteredNoiseReverb) trains for a few steps on generated
tones; the checkpoint it writes is compared with ddsp's own VST checkpoint in the fixtures
(keys, object graph, operative config, statistics fields), reloaded with ddsp-pd's loader,
rendered by the numpy path, and exported for the plugin. The TensorFlow VST model itself
is checked against the fixture's stages from the stored noise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow (the train extra) not installed")

import soundfile as sf  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import VST_REFERENCE, needs_fixtures  # noqa: E402

from ddsp_pd.checkpoint import GIN_NAME, STATISTICS_NAME, load_checkpoint  # noqa: E402
from ddsp_pd.cli import main  # noqa: E402
from ddsp_pd.config import ModelConfig, config_from_gin  # noqa: E402
from ddsp_pd.gin_config import parse_gin, read_gin  # noqa: E402
from ddsp_pd.inference import InferenceModel  # noqa: E402
from ddsp_pd.model import DdspModel  # noqa: E402
from ddsp_pd.power import compute_power  # noqa: E402
from ddsp_pd.statistics import load_statistics  # noqa: E402
from ddsp_pd.training.dataset import prepare_examples  # noqa: E402
from ddsp_pd.training.graph import VST_PROCESSORS, architecture_of  # noqa: E402
from ddsp_pd.training.loop import TrainOptions, preset_config, train  # noqa: E402
from ddsp_pd.training.writer import TrainSettings, operative_config_text  # noqa: E402

SR = 16000
VST_CKPT = VST_REFERENCE / "checkpoint"
STEPS = 30
# A higher learning rate than ddsp's 3e-4, so that 30 steps show the loss falling.
SETTINGS = TrainSettings(learning_rate=2e-3)


def _tone(seconds: float, f0_start: float, seed: int) -> np.ndarray:
    """A harmonic tone with vibrato, a glide, swells, a rest and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = f0_start * 2 ** (0.3 * t / seconds) * 2 ** (0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    harmonics = sum((0.6**k) * np.sin(k * phase) for k in range(1, 9))
    envelope = 0.5 + 0.4 * np.sin(2 * np.pi * 0.7 * t) ** 2
    envelope[(t > 0.45 * seconds) & (t < 0.55 * seconds)] = 0.0
    return (0.3 * envelope * harmonics + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vst_audio")
    for i, f0 in enumerate((220.0, 330.0)):
        sf.write(folder / f"tone{i}.wav", _tone(3.0, f0, i), SR)
    return folder


def _options(steps: int = STEPS) -> TrainOptions:
    return TrainOptions(
        steps=steps, batch_size=4, config="vst-tiny", seed=3, save_every=15, log_every=15,
        example_secs=1.0, hop_secs=0.25, settings=SETTINGS,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(audio_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vst_run")
    lines: list[str] = []
    result = train(audio_dir, out, _options(), say=lines.append)
    return result, out, lines


def _model_keys(prefix: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(s) for k, s in tf.train.list_variables(str(prefix)) if k.startswith("model/")}


# --------------------------------------------------------------------------- training


def test_loss_falls_and_every_variable_trains(trained):
    result, _out, lines = trained
    losses = np.array([loss for _, loss in result.losses])
    assert len(losses) == STEPS
    first, last = losses[:8].mean(), losses[-8:].mean()
    print(f"loss {first:.3f} -> {last:.3f}")
    assert last < 0.92 * first, (first, last)
    assert any("noise reverb 4000" in line for line in lines)
    start = DdspModel(result.config, seed=3).ddsp_variables()
    for name, var in result.model.ddsp_variables().items():
        assert not np.array_equal(var.numpy(), start[name].numpy()), f"{name} did not train"
    assert "processor_group/reverb/magnitudes" in start


def test_power_examples_are_centred(audio_dir, tmp_path):
    """1 s examples of a VST model: 16000 samples, 51 centred frames, and power computed
    from each example's own audio as OnlineF0PowerPreprocessor computes it."""
    ex = prepare_examples(audio_dir, tmp_path, SR, 320, 1.0, 0.5, level="power")
    assert ex.audio.shape == (10, SR)
    assert ex.f0_hz.shape == ex.loudness_db.shape == ex.power_db.shape == (10, 51)
    for clip, power in zip(ex.audio, ex.power_db, strict=True):
        np.testing.assert_array_equal(power, compute_power(clip, SR, 50.0, 1024))
    again = prepare_examples(audio_dir, tmp_path, SR, 320, 1.0, 0.5, level="power")
    np.testing.assert_array_equal(again.power_db, ex.power_db)
    loudness_only = prepare_examples(audio_dir, tmp_path, SR, 320, 1.0, 0.5)
    assert loudness_only.power_db is None and loudness_only.f0_hz.shape == (10, 50)


# --------------------------------------------------------------------------- the checkpoint


@needs_fixtures
def test_checkpoint_has_ddsps_vst_keys_and_graph(trained):
    """The same variable keys as ddsp's own VST checkpoint (sizes of the tiny config), the
    root's save_counter, and exactly its object graph (test_checkpoint_graph's check)."""
    from test_checkpoint_graph import _differences, _graph

    _result, out, _ = trained
    ours, theirs = _model_keys(out / f"ckpt-{STEPS}"), _model_keys(VST_CKPT / "ckpt-400")
    assert set(ours) == set(theirs)
    assert ours["model/processor_group/reverb/magnitudes/.ATTRIBUTES/VARIABLE_VALUE"] == (100, 16)
    assert architecture_of(load_checkpoint(out).config).processors == VST_PROCESSORS
    diff = _differences(_graph(out / f"ckpt-{STEPS}"), _graph(VST_CKPT / "ckpt-400"))
    assert not diff, "\n".join(diff)


@needs_fixtures
def test_operative_config_is_vst_gins():
    """The vst preset's gin binds every model selector of ddsp's own operative config to
    the same value, and ddsp-pd reads it back to the same config."""
    settings = TrainSettings(batch_size=16, num_steps=400, steps_per_save=100)
    ours = parse_gin(operative_config_text(preset_config("vst"), settings))
    reference = read_gin(VST_CKPT / GIN_NAME)
    assert set(reference) - set(ours) <= {"train.data_provider", "TFRecordProvider.file_pattern"}
    assert {k: ours[k] for k in reference if k in ours} == {
        k: v for k, v in reference.items() if k in ours
    }
    back = config_from_gin(ours)
    want = preset_config("vst")
    for field in ("era", "input_keys", "ch", "rnn_channels", "layers_per_stack", "output_splits",
                  "amp_resample_method", "reverb_type", "reverb_length", "reverb_n_frames",
                  "reverb_n_filter_banks", "power_frame_size", "crop_size", "crop_location",
                  "n_samples", "hop"):  # fmt: skip
        assert getattr(back, field) == getattr(want, field), field
    assert want == ModelConfig.vst()


@needs_fixtures
def test_reloads_renders_and_has_vst_statistics(trained):
    """ddsp-pd's loader reads the run back as a VST model; the numpy render path renders
    what the trained TensorFlow model renders for the same seed; the statistics have the
    fields of ddsp's VST pickle."""
    result, out, _ = trained
    ckpt = load_checkpoint(out)
    assert ckpt.config == result.config
    frames = 101
    f0 = np.geomspace(200.0, 400.0, frames).astype(np.float32)
    power = np.linspace(-60.0, -15.0, frames).astype(np.float32)
    audio = InferenceModel(ckpt).render(f0, power, seed=7)
    expected = result.model.render(f0, power, seed=7)
    assert audio.shape == ((frames - 1) * 320,)  # Crop: T centred frames -> (T - 1) hops
    np.testing.assert_allclose(audio, expected, rtol=0, atol=1e-5)
    assert np.max(np.abs(audio)) > 1e-3
    ours = load_statistics(out / STATISTICS_NAME)
    theirs = load_statistics(VST_CKPT / STATISTICS_NAME)
    assert list(ours.extra) == list(theirs.extra)
    assert ours.transformer_class == theirs.transformer_class
    ranges = ours.model_ranges()
    assert 55.0 < ranges.pitch_min_note <= ranges.pitch_max_note < 70.0


def test_trained_model_exports_for_the_plugin(trained, tmp_path):
    from ddsp_pd.export.plugin import export_plugin_model, reference_controls
    from ddsp_pd.kinds.tflite import load_tflite, vst_inputs

    _result, out, _ = trained
    target = tmp_path / "tones.tflite"
    done = export_plugin_model(out, target, say=lambda _: None)
    assert done.check_difference < 1e-5
    assert done.metadata["mean_min_power_note"] == pytest.approx(
        load_statistics(out / STATISTICS_NAME).model_ranges().power_min_db, abs=1e-5
    )
    f0_scaled, pw_scaled = vst_inputs(np.geomspace(100, 900, 60), np.linspace(-70, -10, 60))
    with load_tflite(tmp_path) as model:
        outputs, _ = model.run(f0_scaled, pw_scaled)
        assert model.reverb_ir is not None and model.reverb_ir.shape == (4000,)
    ckpt = load_checkpoint(out)
    want = reference_controls(ckpt.config, ckpt.variables, f0_scaled, pw_scaled)
    np.testing.assert_allclose(outputs.harmonic_distribution, want["harmonic_distribution"],
                               rtol=0, atol=1e-5)  # fmt: skip


def test_cli_resumes_a_vst_run(trained, tmp_path):
    """``ddsp-pd train --config vst-tiny`` on the run's folder continues it."""
    _result, out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "tone.wav", _tone(4.5, 260.0, 5), SR)
    res = CliRunner().invoke(
        main,
        ["train", str(audio), "-o", str(run), "--config", "vst-tiny", "--steps",
         str(STEPS + 1), "--batch-size", "2", "--seed", "3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"resuming from step {STEPS}" in res.output
    assert (run / f"ckpt-{STEPS + 1}.index").is_file()
    assert load_checkpoint(run).config.era == "vst"


# --------------------------------------------------------------------------- the TF model


@needs_fixtures
def test_tensorflow_vst_model_matches_ddsps_stages():
    """The training model on ddsp's VST checkpoint, from the cases' stored noise: decoder
    outputs, the FilteredNoiseReverb IR, the filtered noise and the crop are ddsp's."""
    case = np.load(VST_REFERENCE / "cases" / "sung_world_female.npz")
    model = DdspModel(load_checkpoint(VST_CKPT))
    out = model(
        case["pre/f0_hz"][None],
        case["pre/pw_db"][None],
        case["filtered_noise/white_noise"].reshape(1, -1),
        case["reverb/ir_white_noise"].reshape(-1),
    )
    for ours, theirs in (("raw_amps", "dec/amps"), ("raw_noise_magnitudes",
                                                    "dec/noise_magnitudes")):  # fmt: skip
        ref = case[theirs]
        np.testing.assert_allclose(out[ours].numpy()[0], ref, rtol=0,
                                   atol=1e-4 * np.abs(ref).max())  # fmt: skip
    ir = model.impulse_response(case["reverb/ir_white_noise"].reshape(-1)).numpy()
    np.testing.assert_allclose(ir, case["reverb/ir"].reshape(-1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["filtered_noise_signal"].numpy()[0],
                               case["filtered_noise/signal"].reshape(-1), rtol=0,
                               atol=1e-6)  # fmt: skip
    audio = out["audio"].numpy()[0]
    assert audio.shape == case["crop/signal"].reshape(-1).shape
    np.testing.assert_array_equal(audio, out["reverb_signal"].numpy()[0, :-320])
