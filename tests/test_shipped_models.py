"""The shipped instruments (``checkpoints/pd_<instrument>``, issue 16) load by name, follow
the pitch of a held-out melody, and their ``.tflite`` keeps the DDSP-VST plugin's contract.

Each ``tests/data/heldout/<instrument>.flac`` is the first 5 s of a melody the model never
trained on (``scripts/make_instrument_model.py``: another seed), committed so that the tests
need no fluidsynth. It is rendered by name as ``ddsp-pd render -c pd_<instrument>`` does (the
default controls: auto-adjust on, confidence gate 0.2, no normalisation here, so the level
checked is the model's own), and again with auto-adjust off (at the input's own pitch:
auto-adjust may move a clip by an octave, which can hide a model's trouble in its own
range); then at least 95 % of the frames the tracker calls clearly voiced in the input
(confidence >= 0.5, and not gated) must have an output f0 within 50 cents of the f0 the
model was given, both tracked by ddsp-pd's default tracker (Praat).

The ``.tflite`` checks are those of ``tests/test_export.py`` run on the shipped file: the
plugin's three inputs and four outputs by name and shape, builtin ops only, ``metadata.json``
in an appended zip with every field ddsp_export writes and the checkpoint's ranges, and the
frames of a sweep equal to the shipped checkpoint's decoder (so the file is that model).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from test_export import _interpreter, assert_plugin_tensors

from ddsp_pd.catalog import SHIPPED_DIR, find_checkpoints, resolve_checkpoint
from ddsp_pd.checkpoint import load_checkpoint
from ddsp_pd.cli import main
from ddsp_pd.controls import ControlSettings
from ddsp_pd.export.metadata import METADATA_FIELDS
from ddsp_pd.export.plugin import reference_controls
from ddsp_pd.kinds.tflite import load_tflite, vst_inputs
from ddsp_pd.kinds.vst_metadata import parse_metadata
from ddsp_pd.library.checks import check_tflite
from ddsp_pd.pitch import get_tracker
from ddsp_pd.statistics import load_statistics
from ddsp_pd.tensor_bundle import list_tensors
from ddsp_pd.transfer import Engine, RenderSettings

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
HELDOUT = Path(__file__).resolve().parent / "data" / "heldout"
INSTRUMENTS = ("flute", "clarinet", "cello", "violin")
NAMES = [f"pd_{i}" for i in INSTRUMENTS]
MAX_CENTS = 50.0
MIN_TRACKED = 0.95
VOICED_CONFIDENCE = 0.5
#: The whole shipped family (four checkpoints and four .tflite files) stays well under 60 MB.
MAX_TOTAL_BYTES = 40e6


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(tracker="praat", checkpoint_dirs=[CHECKPOINTS])


def test_every_instrument_is_listed_by_name():
    """In the shipped folder that ``models list``, ``serve`` and the patch's menu read."""
    assert SHIPPED_DIR == CHECKPOINTS
    names = {e.name for e in find_checkpoints([SHIPPED_DIR])}
    assert {"default", *NAMES} <= names
    for name in NAMES:
        assert resolve_checkpoint(name) == (CHECKPOINTS / name).resolve()


def test_models_list_shows_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DDSP_PD_MODELS_DIR", str(tmp_path / "library"))
    result = CliRunner().invoke(main, ["models", "list", "--offline"])
    assert result.exit_code == 0, result.output
    for name in NAMES:
        line = next((row for row in result.output.splitlines() if name in row.split()), None)
        assert line is not None, result.output
        assert "shipped" in line


def test_the_family_is_small():
    total = sum(p.stat().st_size for n in NAMES for p in (CHECKPOINTS / n).rglob("*"))
    assert total < MAX_TOTAL_BYTES, f"{total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_is_complete_and_holds_model_variables_only(name):
    folder = CHECKPOINTS / name
    ckpt = load_checkpoint(folder)
    assert ckpt.config.level == "power"  # the VST config: it exports to the plugin
    assert (ckpt.config.n_harmonics, ckpt.config.n_noise_bands, ckpt.config.rnn_channels) == (
        60,
        65,
        512,
    )
    assert ckpt.statistics_path is not None
    for extra in ("MODEL_CARD.md", "loss.png", "loss.csv", f"{name}.tflite"):
        assert (folder / extra).is_file(), extra
    (index,) = folder.glob("ckpt-*.index")
    keys = list(list_tensors(index.with_suffix("")))
    root_keys = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    assert len(keys) > 1
    assert all(k.startswith("model/") or k in root_keys for k in keys)  # no optimizer state


@pytest.mark.parametrize("adjust", [True, False], ids=["auto-adjust", "own-pitch"])
@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_renders_a_heldout_melody_at_its_pitch(engine, instrument, adjust):
    clip = HELDOUT / f"{instrument}.flac"
    info = sf.info(clip)
    assert info.samplerate == 16000 and info.duration <= 5.01
    loaded = engine.load_model(f"pd_{instrument}")  # by name, as render -c and the server do
    assert loaded.name == f"pd_{instrument}"
    controls = ControlSettings(adjust=adjust)
    settings = RenderSettings(controls=controls, sample_rate=None, normalize=False)
    result = engine.render(loaded, settings, input_path=clip)
    audio = result.audio.astype(np.float64)
    rms_db = 10 * np.log10(np.mean(audio**2) + 1e-20)
    assert rms_db > -40.0, f"output RMS {rms_db:.1f} dBFS"
    assert float(np.max(np.abs(audio))) < 1.0

    config = loaded.model
    n = min(len(result.adjusted.f0_hz), len(audio) * int(config.frame_rate) // config.sample_rate)
    tracker = get_tracker("praat")
    out_f0, out_conf = tracker.track(result.audio, config.sample_rate, config.frame_rate, n)
    asked = result.adjusted.f0_hz[:n]  # the input's f0, moved by auto-adjust's octave if any
    voiced = (result.features.f0_confidence[:n] >= VOICED_CONFIDENCE) & (asked > 0)
    assert voiced.sum() > 0.3 * n, "the held-out clip should be mostly voiced"
    cents = 1200 * np.abs(np.log2(np.maximum(out_f0[voiced], 1e-3) / asked[voiced]))
    tracked = float(np.mean((cents <= MAX_CENTS) & (out_conf[voiced] > 0)))
    print(f"pd_{instrument} (adjust {adjust}): {tracked:.1%} of {voiced.sum()} voiced frames")
    assert tracked >= MIN_TRACKED, f"{tracked:.1%} within {MAX_CENTS:g} cents"


@pytest.mark.parametrize("name", NAMES)
def test_tflite_keeps_the_plugin_contract(name):
    path = CHECKPOINTS / name / f"{name}.tflite"
    data = path.read_bytes()
    check_tflite(data, str(path))
    assert_plugin_tensors(_interpreter(path))
    ops = {d["op_name"] for d in _interpreter(path, delegates=False)._get_ops_details()}
    assert ops and not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]


@pytest.mark.parametrize("name", NAMES)
def test_tflite_metadata_is_the_checkpoints(name):
    folder = CHECKPOINTS / name
    path = folder / f"{name}.tflite"
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["metadata.json"]
        assert archive.getinfo("metadata.json").compress_type == zipfile.ZIP_STORED
        packed = archive.read("metadata.json")
    metadata = parse_metadata(packed, str(path))
    fields = json.loads(packed)
    assert list(fields) == list(METADATA_FIELDS)
    ranges = load_statistics(folder / "dataset_statistics.pkl").model_ranges(source=str(folder))
    for attribute, key in ranges.FIELDS:
        assert fields[key] == pytest.approx(getattr(ranges, attribute), abs=1e-5), key
    assert (metadata.num_harmonics, metadata.num_noise_amps) == (60, 65)
    assert (folder / "reverb_ir_16000_hz.wav").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_tflite_is_the_shipped_checkpoint(name):
    """A sweep frame by frame through the .tflite equals the checkpoint's numpy decoder."""
    folder = CHECKPOINTS / name
    t = np.linspace(0.0, 1.0, 90)
    f0 = 55.0 * 2.0 ** (6.0 * t)
    f0[::13] = 0.0
    f0_scaled, pw_scaled = vst_inputs(f0, -80.0 + 75.0 * np.sin(np.pi * t) ** 2)
    with load_tflite(folder / f"{name}.tflite") as model:
        outputs, state = model.run(f0_scaled, pw_scaled)
    ckpt = load_checkpoint(folder)
    expected = reference_controls(ckpt.config, ckpt.variables, f0_scaled, pw_scaled)
    got = {
        "amps": outputs.amps,
        "harmonic_distribution": outputs.harmonic_distribution,
        "noise_magnitudes": outputs.noise_magnitudes,
        "state": state,
    }
    for key, value in got.items():
        np.testing.assert_allclose(value, expected[key], rtol=0, atol=1e-5, err_msg=key)
