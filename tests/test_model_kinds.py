"""Every model kind through one seam: solo checkpoints, DDSP-VST-config checkpoints and
DDSP-VST ``.tflite`` files in render, info and serve.

- each kind is a :class:`ControlModel` with a :class:`SynthConfig`, and renders through the
  one synthesis path (:mod:`ddsp_pd.inference.synthesis`);
- ``render --controls-out`` writes the frame-rate controls for every kind; the fixture's
  ``.tflite`` gives its stored frame-by-frame outputs to 1e-5;
- ``info`` describes every kind; ``serve`` lists and loads them;
- bad input (a ``.tflite`` that is not a DDSP-VST model, a truncated one, a zip without a
  model, a VST gin with missing bindings) is one line naming the problem.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import AUDIO, REFERENCE, REFERENCE_CHECKPOINT, VST_REFERENCE, needs_fixtures

from ddsp_pd.cli import main
from ddsp_pd.controls import ControlSettings
from ddsp_pd.errors import CheckpointError
from ddsp_pd.inference import synthesis
from ddsp_pd.kinds.controls import CONTROL_NAMES, ControlModel, SynthConfig
from ddsp_pd.transfer import Engine, RenderSettings

VST_CHECKPOINT = VST_REFERENCE / "checkpoint"
EXPORT = VST_REFERENCE / "export"
TFLITE = EXPORT / "tflite" / "clarinet.tflite"
CASES = ("midi_flute", "sung_world_female")
CONTROLS_TOL = 1e-5

pytestmark = needs_fixtures


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *words: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def case(name: str) -> dict[str, np.ndarray]:
    with np.load(VST_REFERENCE / "cases" / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def power_features(tmp_path: Path, name: str, frames: int | None = None) -> Path:
    """A features file of a fixture case: its f0, confidence and ddsp's power."""
    a = case(name)
    path = tmp_path / f"{name}.power.npz"
    stop = slice(None, frames)
    np.savez(
        path,
        f0_hz=a["pre/f0_hz"][stop],
        f0_confidence=a["pre/f0_confidence"][stop],
        power_db=a["pre/pw_db"][stop],
        frame_rate=np.float64(50.0),
    )
    return path


def loudness_features(tmp_path: Path, frames: int = 500) -> Path:
    t = np.arange(frames) / 250.0
    path = tmp_path / "loudness.npz"
    np.savez(
        path,
        f0_hz=(330.0 + 20 * np.sin(2 * np.pi * t)).astype(np.float32),
        f0_confidence=np.full(frames, 0.9, np.float32),
        loudness_db=np.full(frames, -30.0, np.float32),
    )
    return path


PLAIN = ("--no-adjust", "--confidence", "0", "--no-normalize")
PLAIN_SETTINGS = RenderSettings(
    controls=ControlSettings(adjust=False, confidence=0.0), normalize=False, seed=5
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(kernels="numpy")


# ---------------------------------------------------------------- the seam


@pytest.mark.parametrize(
    ("path", "kind", "era", "level", "reverb"),
    [
        (REFERENCE_CHECKPOINT, "solo", "2.x", "loudness", "ir"),
        (VST_CHECKPOINT, "vst", "vst", "power", "filtered_noise"),
        (TFLITE, "tflite", "tflite", "power", "ir"),
    ],
)
def test_every_kind_fits_the_seam(engine, path, kind, era, level, reverb) -> None:
    loaded = engine.load_model(path)
    model = loaded.model
    assert isinstance(model, ControlModel)
    assert (loaded.kind, loaded.era, loaded.level) == (kind, era, level)
    assert isinstance(model.synth, SynthConfig)
    assert model.synth.reverb.kind == reverb
    assert model.synth.sample_rate == model.sample_rate == 16000
    assert (model.power_frame_size is None) == (level == "loudness")
    assert model.synth.output_samples(10) == 10 * model.hop - (0 if level == "loudness" else 320)


@pytest.mark.parametrize(
    ("path", "features"),
    [
        (REFERENCE_CHECKPOINT, "loudness"),
        (VST_CHECKPOINT, "power"),
        (TFLITE, "power"),
    ],
)
def test_one_synthesis_path_renders_every_kind(engine, tmp_path, path, features) -> None:
    """The engine's audio is the kind's controls rendered by the shared synthesis path."""
    loaded = engine.load_model(path)
    file = (
        loudness_features(tmp_path)
        if features == "loudness"
        else power_features(tmp_path, "sung_world_female", 150)
    )
    result = engine.render(loaded, PLAIN_SETTINGS, features_path=file, keep_controls=True)
    model = loaded.model
    controls, _ = model.synth_controls(result.adjusted.f0_hz, result.adjusted.level_db)
    expected = synthesis.render(controls, model.synth, seed=5, backend="numpy")
    np.testing.assert_array_equal(result.audio, expected)
    for name in CONTROL_NAMES:
        np.testing.assert_array_equal(getattr(result.controls, name), getattr(controls, name))


def test_tflite_decoder_output_is_cached_across_seeds(engine, tmp_path, monkeypatch) -> None:
    loaded = engine.load_model(TFLITE)
    file = power_features(tmp_path, "midi_flute", 120)
    calls = []
    original = loaded.model.run
    monkeypatch.setattr(loaded.model, "run", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = engine.render(loaded, PLAIN_SETTINGS, features_path=file)
    assert len(calls) == 1
    settings = RenderSettings(controls=PLAIN_SETTINGS.controls, normalize=False, seed=6)
    second = engine.render(loaded, settings, features_path=file)
    assert len(calls) == 1  # only the noise changed
    assert np.max(np.abs(second.audio - first.audio)) > 0
    louder = RenderSettings(
        controls=ControlSettings(adjust=False, confidence=0.0, loudness_db=3.0), normalize=False
    )
    engine.render(loaded, louder, features_path=file)
    assert len(calls) == 2


def test_long_tflite_renders_in_blocks_with_the_same_result(tmp_path, monkeypatch) -> None:
    import ddsp_pd.transfer as transfer

    engine = transfer.Engine(kernels="numpy")
    loaded = engine.load_model(TFLITE)
    file = power_features(tmp_path, "sung_world_female", 400)
    short = engine.render(loaded, PLAIN_SETTINGS, features_path=file, keep_controls=True)
    monkeypatch.setattr(transfer, "LONG_RENDER_FRAMES", 100)
    calls = []
    original = loaded.model.render_blocks
    monkeypatch.setattr(
        loaded.model, "render_blocks", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    long = engine.render(loaded, PLAIN_SETTINGS, features_path=file, keep_controls=True)
    assert calls, "the long path was not taken"
    assert long.audio.shape == short.audio.shape == (399 * 320,)
    np.testing.assert_allclose(long.audio, short.audio, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        long.controls.amplitudes, short.controls.amplitudes, rtol=1e-5, atol=1e-7
    )


def test_tflite_renders_from_audio_with_power_and_its_ranges(engine, tmp_path) -> None:
    audio, rate = sf.read(str(AUDIO / "midi_flute.wav"), dtype="float32")
    clip = tmp_path / "clip.wav"
    sf.write(clip, audio[: 2 * rate], rate)
    loaded = engine.load_model(TFLITE)
    assert loaded.ranges is not None and loaded.ranges.source == "metadata.json"
    result = engine.render(loaded, RenderSettings(), input_path=clip)
    assert result.features.level == "power" and result.adjusted.level == "power"
    report = result.adjusted.report
    assert report.adjust_ran and report.level_range_out is not None
    assert result.sample_rate == rate and abs(len(result.audio) / rate - 2.0) < 0.021


# ---------------------------------------------------------------- --controls-out


@pytest.mark.parametrize("name", CASES)
def test_tflite_controls_out_equals_its_stored_frame_by_frame_outputs(tmp_path, name) -> None:
    features = power_features(tmp_path, name)
    out, controls_out = tmp_path / "out.wav", tmp_path / "controls.npz"
    result = run(
        "render", "--features", features, "-c", TFLITE, "-o", out,
        "--controls-out", controls_out, *PLAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "checkpoint: clarinet (tflite" in result.output
    with np.load(EXPORT / "cases.npz") as stored, np.load(controls_out) as got:
        assert set(CONTROL_NAMES) <= set(got.files)
        n = stored[f"{name}/amps"].shape[0]
        np.testing.assert_array_equal(got["f0_hz"], case(name)["pre/f0_hz"])
        for key, ref in (
            ("amplitudes", "amps"),
            ("harmonic_distribution", "harmonic_distribution"),
            ("noise_magnitudes", "noise_magnitudes"),
        ):
            assert got[key].shape == stored[f"{name}/{ref}"].shape
            np.testing.assert_allclose(
                got[key], stored[f"{name}/{ref}"], rtol=0, atol=CONTROLS_TOL, err_msg=key
            )
        assert float(got["frame_rate"]) == 50.0 and int(got["sample_rate"]) == 16000
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000 and len(audio) == (n - 1) * 320


def test_vst_checkpoint_controls_out_equals_ddsp(tmp_path) -> None:
    name = "sung_world_female"
    features = power_features(tmp_path, name)
    controls_out = tmp_path / "c.npz"
    result = run(
        "render", "--features", features, "-c", VST_CHECKPOINT, "-o", tmp_path / "o.wav",
        "--controls-out", controls_out, *PLAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    a = case(name)
    with np.load(controls_out) as got:
        for key, ref in (
            ("amplitudes", "harmonic/amplitudes"),
            ("harmonic_distribution", "harmonic/harmonic_distribution"),
            ("noise_magnitudes", "filtered_noise/magnitudes"),
        ):
            np.testing.assert_allclose(got[key], a[ref], rtol=0, atol=CONTROLS_TOL, err_msg=key)


def test_solo_controls_out_and_its_refusals(tmp_path) -> None:
    features = loudness_features(tmp_path)
    out, controls_out = tmp_path / "o.wav", tmp_path / "c.npz"
    result = run(
        "render", "--features", features, "-c", REFERENCE_CHECKPOINT, "-o", out,
        "--controls-out", controls_out, *PLAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(controls_out) as got:
        assert got["f0_hz"].shape == (500,) and got["amplitudes"].shape == (500, 1)
        assert got["harmonic_distribution"].shape == (500, 60)
        assert got["noise_magnitudes"].shape == (500, 65)
        np.testing.assert_allclose(got["harmonic_distribution"].sum(axis=1), 1.0, atol=1e-5)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left
    before = features.read_bytes()
    refused = run(
        "render", "--features", features, "-c", REFERENCE_CHECKPOINT, "-o", out,
        "--controls-out", features,
    )  # fmt: skip
    assert_one_line_error(refused, "refusing to write the controls over the features file")
    assert features.read_bytes() == before
    assert_one_line_error(
        run("render", "--features", features, "-o", out, "--controls-out", tmp_path / "c.txt"),
        "must name an .npz",
    )


def test_power_model_refuses_a_loudness_features_file(tmp_path) -> None:
    result = run("render", "--features", loudness_features(tmp_path), "-c", TFLITE)
    assert_one_line_error(result, "holds loudness_db", "takes power_db")


# ---------------------------------------------------------------- info


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (REFERENCE_CHECKPOINT, ["kind: ddsp checkpoint (solo_instrument family)", "loudness: v3"]),
        (
            VST_CHECKPOINT,
            [
                "kind: ddsp checkpoint, DDSP-VST config",
                "power: frames of 1024 samples",
                "ch 256, GRU 512, 1 layers per stack",
                "reverb: FilteredNoiseReverb, 24000 samples",
                "crop: 320 samples at the back",
                "auto-adjust ranges: pitch MIDI 66.01 to 74.88, power -41.23 to -24.33 dB",
            ],
        ),
        (
            TFLITE,
            [
                "kind: DDSP-VST plugin model (.tflite)",
                "power frame: 1024 samples",
                "-41.23 to -24.33 dB",
                "the last 320 samples cropped",
            ],
        ),
        (EXPORT, ["kind: DDSP-VST plugin model (.tflite)"]),
    ],
)
def test_info_describes_every_kind(path, words) -> None:
    result = run("info", path)
    assert result.exit_code == 0, result.output
    for word in words:
        assert word in result.output, result.output


# ---------------------------------------------------------------- bad input


def _bad_models(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    data = TFLITE.read_bytes()
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(data.replace(b"call_f0_scaled:0", b"call_f0_scalex:0"))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 2])
    empty_zip = tmp_path / "nothing.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "no model here")
    gin = tmp_path / "vst_missing"
    shutil.copytree(VST_CHECKPOINT, gin)
    text = (gin / "operative_config-0.gin").read_text()
    kept = [ln for ln in text.splitlines() if not ln.startswith("FilteredNoiseReverb.reverb_len")]
    (gin / "operative_config-0.gin").write_text("\n".join(kept))
    return {
        "wrong tensors": (wrong, ["wrong.tflite", "not a DDSP-VST model", "call_f0_scaled:0"]),
        "truncated": (truncated, ["truncated.tflite", "not a valid TFLite model", "truncated"]),
        "zip without one": (empty_zip, ["nothing.zip", "holds no model", ".tflite"]),
        "missing bindings": (gin, ["lacks FilteredNoiseReverb.reverb_length"]),
    }


@pytest.mark.parametrize(
    "what", ["wrong tensors", "truncated", "zip without one", "missing bindings"]
)
def test_bad_models_are_one_line_errors_in_render_and_info(tmp_path, what) -> None:
    path, words = _bad_models(tmp_path)[what]
    features = power_features(tmp_path, "midi_flute", 50)
    rendered = run("render", "--features", features, "-c", path, "-o", tmp_path / "o.wav")
    assert_one_line_error(rendered, *words)
    assert not (tmp_path / "o.wav").exists()
    described = run("info", path)
    assert_one_line_error(described, *words)


def test_bad_models_are_one_line_errors_in_the_engine(tmp_path) -> None:
    engine = Engine(kernels="numpy")
    for path, words in _bad_models(tmp_path).values():
        with pytest.raises(CheckpointError) as excinfo:
            engine.load_model(path)
        message = str(excinfo.value)
        assert "\n" not in message
        for word in words:
            assert word in message, message


# ---------------------------------------------------------------- serve


def test_serve_lists_and_loads_every_kind(tmp_path) -> None:
    from test_server_support import OscClient

    from ddsp_pd.server.app import OscService, ServerConfig

    library = tmp_path / "models"
    library.mkdir()
    shutil.copytree(REFERENCE_CHECKPOINT, library / "solo")
    shutil.copytree(VST_CHECKPOINT, library / "vst")
    shutil.copy(TFLITE, library / "clarinet.tflite")
    (tmp_path / "bad.tflite").write_bytes(TFLITE.read_bytes()[:1000])
    config = ServerConfig(port=0, output_dir=tmp_path / "out", checkpoint_dirs=[library])
    service = OscService(Engine(kernels="numpy"), config)
    service.start()
    client = OscClient(service.address)
    try:
        start = client.mark()
        client.send("/ddsp/checkpoints")
        client.wait_for("/ddsp/checkpoints_end", start)
        names = [e.args[1] for e in client.since(start, "/ddsp/checkpoint_entry")]
        assert sorted(names) == ["clarinet", "solo", "vst"]
        for name, era in (("clarinet", "tflite"), ("vst", "vst"), ("solo", "2.x")):
            loaded = client.request("/ddsp/checkpoint", name, reply="/ddsp/loaded", timeout=120)
            assert loaded.args == [name, era, 16000]
        bad = {"short": (tmp_path / "bad.tflite", ["not a valid TFLite model"])}
        bad.update(_bad_models(tmp_path))
        for path, words in bad.values():
            start = client.mark()
            client.send("/ddsp/checkpoint", str(path))
            error = client.wait_for("/ddsp/error", start, 120)
            assert error.args[0] == "checkpoint", error.args
            for word in words:
                assert word in error.args[1], error.args
        assert client.status()["checkpoint"] == "solo"  # the last good model stays
    finally:
        service.stop()
        client.close()


def test_reference_folder_still_lists_its_checkpoint() -> None:
    from ddsp_pd.catalog import find_checkpoints

    assert [e.name for e in find_checkpoints([REFERENCE])] == ["checkpoint"]


def test_an_export_folder_counts_as_a_model(tmp_path) -> None:
    """ddsp_export's layout: NAME/tflite/NAME.tflite with metadata and IR in NAME/."""
    from ddsp_pd.catalog import find_checkpoints

    library = tmp_path / "lib"
    shutil.copytree(EXPORT, library / "clarinet")
    entries = find_checkpoints([library])
    assert [e.name for e in entries] == ["clarinet"]
    loaded = Engine(kernels="numpy").load_model(entries[0].path)
    assert loaded.era == "tflite" and loaded.model.synth.reverb.kind == "ir"


def test_server_feature_curves_of_a_power_model(engine, tmp_path) -> None:
    """The six curves of /ddsp/features carry power for power models."""
    from ddsp_pd.server.engine import feature_channels

    loaded = engine.load_model(TFLITE)
    from ddsp_pd.features import load_features_npz

    features = load_features_npz(power_features(tmp_path, "midi_flute", 80), 50.0, "power")
    adjusted = engine.adjust(features, loaded, PLAIN_SETTINGS)
    curves = feature_channels(features, adjusted)
    assert curves.shape == (80, 6)
    np.testing.assert_array_equal(curves[:, 2], features.power_db)
    np.testing.assert_array_equal(curves[:, 4], adjusted.power_db)


def test_server_progress_render_of_a_long_input_with_a_tflite(
    engine, tmp_path, monkeypatch
) -> None:
    """Clips the engine renders block by block report progress per block, for power models
    too, and equal the in-memory render."""
    from ddsp_pd import transfer
    from ddsp_pd.server.engine import render_with_progress

    audio, rate = sf.read(str(AUDIO / "midi_flute.wav"), dtype="float32")
    seconds = 31.0
    long = np.tile(audio, int(np.ceil(seconds * rate / len(audio))))[: int(seconds * rate)]
    clip = tmp_path / "long.wav"
    sf.write(clip, long, rate)
    loaded = engine.load_model(TFLITE)
    expected = engine.render(loaded, PLAIN_SETTINGS, input_path=clip)  # in memory
    # 31 s at 50 frames/s is 1550 frames: make that "long" so the engine renders in blocks.
    monkeypatch.setattr(transfer, "LONG_RENDER_FRAMES", 500)
    fractions = []
    result = render_with_progress(
        engine,
        loaded,
        PLAIN_SETTINGS,
        input_path=clip,
        frame_rate=loaded.model.frame_rate,
        progress=lambda stage, f: fractions.append((stage, f)),
        should_stop=lambda: False,
    )
    model_steps = [f for stage, f in fractions if stage == "model"]
    assert len(model_steps) > 3 and model_steps[-1] == 1.0
    assert model_steps == sorted(model_steps)
    assert result.audio.shape == expected.audio.shape
    np.testing.assert_allclose(result.audio, expected.audio, rtol=0, atol=1e-4)
