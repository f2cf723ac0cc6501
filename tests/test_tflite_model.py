"""DDSP-VST ``.tflite`` models: opening, the plugin's contract, frame-by-frame runs, controls.

The fixture's export (``vst_ddsp37/export``) was run by ddsp's own tooling one frame per call
with the state fed back; ddsp-pd's runs must give the same outputs. Bad files must each give
one line naming the problem.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from conftest import VST_REFERENCE, needs_fixtures

from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.kinds.controls import CONTROL_NAMES, ControlModel, SynthControls
from ddsp_pd.kinds.tflite import (
    INPUT_TENSORS,
    OUTPUT_TENSORS,
    TfliteModel,
    TfliteOutputs,
    check_contract,
    describe_tflite,
    load_tflite,
    plugin_controls,
    tflite_info,
    vst_inputs,
)
from ddsp_pd.kinds.tflite_files import TfliteFiles, looks_like_tflite, read_tflite_files
from ddsp_pd.kinds.vst_metadata import parse_metadata

EXPORT = VST_REFERENCE / "export"
TFLITE = EXPORT / "tflite" / "clarinet.tflite"
CASES = ("midi_flute", "sung_world_female")
TOL = 1e-5


def one_line_error(excinfo: pytest.ExceptionInfo[BaseException], *words: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    for word in words:
        assert word in message, message
    return message


# ------------------------------------------------------------------ fixture helpers


@pytest.fixture(scope="module")
def model() -> TfliteModel:
    with load_tflite(TFLITE) as m:
        yield m


@pytest.fixture(scope="module")
def export_cases() -> dict[str, np.ndarray]:
    with np.load(EXPORT / "cases.npz") as data:
        return {k: data[k] for k in data.files}


def case_features(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(VST_REFERENCE / "cases" / f"{name}.npz") as data:
        return data["pre/f0_hz"], data["pre/pw_db"]


def flatbuffer_only() -> bytes:
    """The fixture's flatbuffer without the zip ddsp_export appended to it."""
    data = TFLITE.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        start = min(info.header_offset for info in zf.infolist())
    return data[:start]


def with_metadata(metadata: dict[str, Any] | None) -> bytes:
    """The fixture's flatbuffer with ``metadata`` packed the way ddsp_export packs it."""
    buf = io.BytesIO(flatbuffer_only())
    buf.seek(0, io.SEEK_END)
    if metadata is not None:
        with zipfile.ZipFile(buf, "a") as zf:
            zf.writestr("metadata.json", json.dumps(metadata))
    return buf.getvalue()


def fixture_metadata() -> dict[str, Any]:
    return json.loads((EXPORT / "metadata.json").read_text())


# ------------------------------------------------------------------ the fixture's model


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_frame_by_frame_equals_stored_outputs(
    model: TfliteModel, export_cases: dict[str, np.ndarray], name: str
) -> None:
    f0_hz, pw_db = case_features(name)
    f0_scaled, pw_scaled = model.preprocess(f0_hz, pw_db)
    np.testing.assert_allclose(f0_scaled, export_cases[f"{name}/f0_scaled"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(pw_scaled, export_cases[f"{name}/pw_scaled"], rtol=0, atol=1e-6)

    out, state = model.run(
        export_cases[f"{name}/f0_scaled"], export_cases[f"{name}/pw_scaled"], keep_states=True
    )
    for got, key in (
        (out.amps, "amps"),
        (out.harmonic_distribution, "harmonic_distribution"),
        (out.noise_magnitudes, "noise_magnitudes"),
        (out.states, "state_out"),
    ):
        want = export_cases[f"{name}/{key}"]
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=key)
    np.testing.assert_array_equal(state, out.states[-1])

    controls, _ = model.controls(f0_hz, pw_db)
    assert isinstance(controls, SynthControls)
    np.testing.assert_array_equal(controls.f0_hz, f0_hz.astype(np.float32))
    for got, key in (
        (controls.amplitudes, "amps"),
        (controls.harmonic_distribution, "harmonic_distribution"),
        (controls.noise_magnitudes, "noise_magnitudes"),
    ):
        np.testing.assert_allclose(got, export_cases[f"{name}/{key}"], rtol=0, atol=TOL)


@needs_fixtures
@pytest.mark.parametrize("name", CASES)
def test_controls_are_the_offline_models_scaled_controls(model: TfliteModel, name: str) -> None:
    """The export's outputs are already scaled (exp_sigmoid, Nyquist, normalisation)."""
    f0_hz, pw_db = case_features(name)
    controls, _ = model.controls(f0_hz, pw_db)
    with np.load(VST_REFERENCE / "cases" / f"{name}.npz") as c:
        pairs = (
            (controls.amplitudes, c["harmonic/amplitudes"]),
            (controls.harmonic_distribution, c["harmonic/harmonic_distribution"]),
            (controls.noise_magnitudes, c["filtered_noise/magnitudes"]),
        )
        for got, want in pairs:
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
        # ... and far from the raw decoder outputs.
        assert np.abs(controls.amplitudes - c["dec/amps"]).max() > 0.1
    above = f0_hz[:, None] * np.arange(1, 61) >= 8000.0
    assert above.any() and not controls.harmonic_distribution[above].any()


@needs_fixtures
def test_pieces_carry_the_state(model: TfliteModel) -> None:
    f0_hz, pw_db = case_features("sung_world_female")
    whole, end = model.controls(f0_hz, pw_db)
    parts, state = [], None
    for a, b in ((0, 1), (1, 200), (200, 201), (201, len(f0_hz))):
        part, state = model.controls(f0_hz[a:b], pw_db[a:b], state)
        parts.append(part)
    joined = SynthControls.concatenate(parts)
    for name in CONTROL_NAMES:
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
    np.testing.assert_array_equal(state, end)
    # A fresh clip starts from zeros again: not from where the last one ended.
    again, _ = model.controls(f0_hz[:5], pw_db[:5])
    np.testing.assert_array_equal(again.amplitudes, whole.amplitudes[:5])


class Reordered:
    """A real interpreter whose tensor lists come in another order (as in other exports)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_input_details(self) -> list[dict[str, Any]]:
        return self._inner.get_input_details()[::-1]

    def get_output_details(self) -> list[dict[str, Any]]:
        details = self._inner.get_output_details()
        return details[1:] + details[:1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@needs_fixtures
def test_tensors_are_matched_by_name(
    model: TfliteModel, export_cases: dict[str, np.ndarray]
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    # The fixture itself lists them out of the plugin's order: positions would mix them up.
    real = Interpreter(model_path=str(TFLITE))
    assert [d["name"] for d in real.get_input_details()] != list(INPUT_TENSORS.values())
    assert [d["name"] for d in real.get_output_details()] != list(OUTPUT_TENSORS.values())

    def factory(data: bytes, threads: int) -> Reordered:
        it = Interpreter(model_content=data, num_threads=threads)
        it.allocate_tensors()
        return Reordered(it)

    reordered = TfliteModel(read_tflite_files(TFLITE), interpreter_factory=factory)
    f0 = export_cases["midi_flute/f0_scaled"][:50]
    pw = export_cases["midi_flute/pw_scaled"][:50]
    got, _ = reordered.run(f0, pw)
    want, _ = model.run(f0, pw)
    np.testing.assert_array_equal(got.harmonic_distribution, want.harmonic_distribution)
    np.testing.assert_array_equal(got.noise_magnitudes, want.noise_magnitudes)
    np.testing.assert_array_equal(got.amps, want.amps)


@needs_fixtures
def test_metadata_and_reverb_of_the_export(model: TfliteModel) -> None:
    md = model.metadata
    assert md.source == "embedded" and md.defaulted == ()
    assert md.pitch_note_range == pytest.approx((66.01069641113281, 74.87700653076172))
    assert md.power_note_range == pytest.approx((-41.23360061645508, -24.328109741210938))
    assert (md.num_harmonics, md.num_noise_amps, md.version) == (60, 65, "3.7.0")
    assert (model.sample_rate, model.frame_rate, model.hop, model.frame_size) == (
        16000,
        50.0,
        320,
        1024,
    )
    # ddsp_export writes the IR one folder above tflite/: found from the file itself.
    want, rate = soundfile.read(EXPORT / "reverb_ir_16000_hz.wav", dtype="float32")
    assert rate == 16000 and model.reverb_ir is not None
    np.testing.assert_array_equal(model.reverb_ir, want)
    assert model.reverb_ir_location == str(EXPORT / "reverb_ir_16000_hz.wav")
    assert isinstance(model, ControlModel)


@needs_fixtures
def test_folder_and_zip_hold_a_model(tmp_path: Path) -> None:
    from_folder = load_tflite(EXPORT)
    assert from_folder.location == str(TFLITE) and from_folder.reverb_ir is not None

    archive = tmp_path / "clarinet.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(TFLITE, "clarinet/tflite/clarinet.tflite")
        zf.write(EXPORT / "reverb_ir_16000_hz.wav", "clarinet/reverb_ir_16000_hz.wav")
        zf.writestr("clarinet/notes.txt", "not a model")
    zipped = load_tflite(archive)
    assert zipped.location == "clarinet.zip:clarinet/tflite/clarinet.tflite"
    np.testing.assert_array_equal(zipped.reverb_ir, from_folder.reverb_ir)
    assert zipped.metadata == from_folder.metadata
    assert looks_like_tflite(archive) and looks_like_tflite(EXPORT) and looks_like_tflite(TFLITE)
    assert not looks_like_tflite(VST_REFERENCE / "checkpoint")


@needs_fixtures
def test_info_describes_the_model() -> None:
    lines = describe_tflite(EXPORT)
    text = "\n".join(lines)
    for expected in (
        "kind: DDSP-VST plugin model (.tflite)",
        "sample rate: 16000 Hz, frame rate: 50/s, hop: 320 samples, power frame: 1024",
        "60 harmonics, 65 noise bands",
        "call_f0_scaled:0 [1]",
        "StatefulPartitionedCall:3 [512]",
        "MIDI 66.01 to 74.88 (370.2 to 617.8 Hz)",
        "-41.23 to -24.33 dB",
        "ddsp 3.7.0",
        "24000 samples (1.5 s)",
    ):
        assert expected in text, text
    info = tflite_info(TFLITE)
    assert info["kind"] == "tflite" and info["metadata"]["num_harmonics"] == 60
    assert info["reverb"]["samples"] == 24000 and info["runtime"].startswith("ai-edge-litert")


@needs_fixtures
def test_old_export_without_rates_takes_the_defaults(tmp_path: Path) -> None:
    old = {
        k: v
        for k, v in fixture_metadata().items()
        if k not in ("frame_rate", "frame_size", "sample_rate")
    }
    path = tmp_path / "old.tflite"
    path.write_bytes(with_metadata(old))
    m = load_tflite(path)
    assert (m.sample_rate, m.frame_rate, m.hop, m.frame_size) == (16000, 50.0, 320, 1024)
    assert m.metadata.defaulted == ("frame_rate", "frame_size", "sample_rate")
    assert "defaults of exports before 2022-03" in "\n".join(m.describe_lines())

    # No metadata at all: the plugin still plays it; ranges unknown.
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(with_metadata(None))
    m = load_tflite(bare)
    assert m.metadata.source == "none" and m.metadata.pitch_note_range is None
    assert m.reverb_ir is None


@needs_fixtures
def test_metadata_beside_is_used_when_none_is_packed(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(with_metadata(None))
    (tmp_path / "metadata.json").write_text(json.dumps({**fixture_metadata(), "frame_rate": 50}))
    m = load_tflite(tmp_path)
    assert m.metadata.source == "beside" and m.metadata.power_note_range is not None


@needs_fixtures
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"num_harmonics": 100}, ("num_harmonics 100", "60 harmonics")),
        ({"num_noise_amps": 64}, ("num_noise_amps 64", "65 noise bands")),
        ({"frame_rate": "fast"}, ("frame_rate", "not a finite number")),
        ({"frame_rate": 48}, ("sample_rate 16000", "frame_rate 48")),
    ],
)
def test_metadata_that_contradicts_the_model(
    tmp_path: Path, change: dict[str, Any], words: tuple[str, ...]
) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(with_metadata({**fixture_metadata(), **change}))
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(path)
    one_line_error(excinfo, "bad.tflite", *words)


@needs_fixtures
def test_truncated_model(tmp_path: Path) -> None:
    data = TFLITE.read_bytes()
    for n, cut in enumerate((len(data) // 2, len(flatbuffer_only()) - 1, 64)):
        path = tmp_path / f"cut{n}.tflite"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as excinfo:
            load_tflite(path)
        one_line_error(excinfo, f"cut{n}.tflite", "not a valid TFLite model")


@needs_fixtures
def test_reverb_ir_problems(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(TFLITE.read_bytes())
    wav = tmp_path / "reverb_ir_16000_hz.wav"
    wav.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(tmp_path / "m.tflite")
    one_line_error(excinfo, "cannot read the reverb IR", "reverb_ir_16000_hz.wav")

    wav.unlink()
    soundfile.write(tmp_path / "reverb_ir_44100_hz.wav", np.zeros(100, np.float32), 44100)
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(tmp_path / "m.tflite")
    one_line_error(excinfo, "44100 Hz", "16000 Hz")


# ------------------------------------------------------------------ a model built with TF


def _tf_tflite(fn: Any, signature: list[Any]) -> bytes:
    tf = pytest.importorskip("tensorflow")

    class Module(tf.Module):
        @tf.function(input_signature=signature)
        def call(self, *args: Any) -> Any:
            return fn(tf, *args)

    module = Module()
    concrete = module.call.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    return converter.convert()


@pytest.mark.slow
def test_a_tflite_that_is_not_a_ddsp_vst_model(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    data = _tf_tflite(lambda tf, x: 2.0 * x, [tf.TensorSpec([4], tf.float32, name="x")])
    path = tmp_path / "doubler.tflite"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(path)
    one_line_error(excinfo, "doubler.tflite", "not a DDSP-VST model", "call_f0_scaled:0")


# ------------------------------------------------------------------ a fake interpreter


class FakeInterpreter:
    """The interpreter API over a numpy function, with tensors listed in any order."""

    def __init__(
        self,
        inputs: dict[str, tuple[int, ...]],
        outputs: dict[str, tuple[int, ...]],
        fn: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        names = [*inputs, *outputs]
        self.index = {name: 10 + 7 * i for i, name in enumerate(names)}
        self._in = [self._detail(n, s, dtype) for n, s in inputs.items()]
        self._out = [self._detail(n, s, dtype) for n, s in outputs.items()]
        self.values: dict[int, np.ndarray] = {}
        self.fn = fn
        self.invokes = 0

    def _detail(self, name: str, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
        return {"name": name, "index": self.index[name], "shape": np.array(shape), "dtype": dtype}

    def get_input_details(self) -> list[dict[str, Any]]:
        return list(self._in)

    def get_output_details(self) -> list[dict[str, Any]]:
        return list(self._out)

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self.values[index] = np.array(value)

    def invoke(self) -> None:
        self.invokes += 1
        by_name = {d["name"]: self.values[d["index"]] for d in self._in}
        for name, value in self.fn(by_name).items():
            self.values[self.index[name]] = np.asarray(value, np.float32)

    def get_tensor(self, index: int) -> np.ndarray:
        return self.values[index].copy()


def toy_model(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A recognisable fake: amps = f0 + pw, a distribution peaked at a harmonic set by the
    state, noise = pw, and a state that counts frames and sums f0."""
    state = f["call_state:0"].copy()
    dist = np.full(60, 1e-3, np.float32)
    dist[int(state[0]) % 60] = 1.0
    dist /= dist.sum()
    state[0] += 1.0
    state[1] += f["call_f0_scaled:0"][0]
    return {
        "StatefulPartitionedCall:0": f["call_f0_scaled:0"] + f["call_pw_scaled:0"],
        "StatefulPartitionedCall:1": dist,
        "StatefulPartitionedCall:2": np.full(65, f["call_pw_scaled:0"][0]),
        "StatefulPartitionedCall:3": state,
    }


PLUGIN_INPUTS = {"call_state:0": (512,), "call_pw_scaled:0": (1,), "call_f0_scaled:0": (1,)}
PLUGIN_OUTPUTS = {
    "StatefulPartitionedCall:3": (512,),
    "StatefulPartitionedCall:2": (65,),
    "StatefulPartitionedCall:0": (1,),
    "StatefulPartitionedCall:1": (60,),
}


def fake_model(interpreter: FakeInterpreter, **companions: bytes) -> TfliteModel:
    files = TfliteFiles(
        Path("fake.tflite"),
        "fake.tflite",
        "fake",
        b"",
        companions.pop("embedded", None),
        {k.replace("_dot_", "."): v for k, v in companions.items()},
        {k.replace("_dot_", "."): k for k in companions},
    )
    return TfliteModel(files, interpreter_factory=lambda data, threads: interpreter)


def test_fake_model_maps_roles_by_name_and_carries_the_state() -> None:
    interpreter = FakeInterpreter(PLUGIN_INPUTS, PLUGIN_OUTPUTS, toy_model)
    m = fake_model(interpreter)
    f0 = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    pw = np.array([0.5, 0.25, 0.0, 1.0], np.float32)
    out, state = m.run(f0, pw)
    assert interpreter.invokes == 4
    np.testing.assert_allclose(out.amps[:, 0], f0 + pw)
    np.testing.assert_allclose(out.noise_magnitudes, np.repeat(pw[:, None], 65, axis=1))
    assert list(out.harmonic_distribution.argmax(axis=1)) == [0, 1, 2, 3]
    assert state[0] == 4 and state[1] == pytest.approx(f0.sum())
    _, state2 = m.run(f0[2:], pw[2:], m.run(f0[:2], pw[:2])[1])
    np.testing.assert_array_equal(state2, state)


@pytest.mark.parametrize(
    ("inputs", "outputs", "words"),
    [
        (
            {**PLUGIN_INPUTS, "call_loudness:0": (1,)},
            PLUGIN_OUTPUTS,
            ("unexpected input tensor call_loudness:0",),
        ),
        (
            {"call_state:0": (512,), "call_ld_scaled:0": (1,), "call_f0_scaled:0": (1,)},
            PLUGIN_OUTPUTS,
            ("no input tensor call_pw_scaled:0",),
        ),
        (
            PLUGIN_INPUTS,
            {k: v for k, v in PLUGIN_OUTPUTS.items() if not k.endswith(":3")},
            ("no output tensor StatefulPartitionedCall:3",),
        ),
        (
            PLUGIN_INPUTS,
            {**PLUGIN_OUTPUTS, "StatefulPartitionedCall:1": (100,)},
            ("StatefulPartitionedCall:1", "[100]", "[60]"),
        ),
        (
            PLUGIN_INPUTS,
            {**PLUGIN_OUTPUTS, "StatefulPartitionedCall:2": (1, 65)},
            ("noise magnitudes", "[1, 65]", "[65]"),
        ),
        (
            {**PLUGIN_INPUTS, "call_state:0": (256,)},
            PLUGIN_OUTPUTS,
            ("call_state:0", "[256]", "[512]"),
        ),
    ],
)
def test_contract_violations_are_one_line(
    inputs: dict[str, tuple[int, ...]],
    outputs: dict[str, tuple[int, ...]],
    words: tuple[str, ...],
) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        fake_model(FakeInterpreter(inputs, outputs, toy_model))
    one_line_error(excinfo, "fake.tflite", *words)


def test_contract_refuses_other_dtypes_and_ignores_extra_outputs() -> None:
    quantised = FakeInterpreter(PLUGIN_INPUTS, PLUGIN_OUTPUTS, toy_model, dtype=np.int8)
    with pytest.raises(CheckpointError) as excinfo:
        fake_model(quantised)
    one_line_error(excinfo, "int8", "float32")
    extra = FakeInterpreter(PLUGIN_INPUTS, {**PLUGIN_OUTPUTS, "Identity:0": (3,)}, toy_model)
    ins, outs = check_contract(extra.get_input_details(), extra.get_output_details())
    assert ins == {role: extra.index[name] for role, name in INPUT_TENSORS.items()}
    assert outs == {role: extra.index[name] for role, name in OUTPUT_TENSORS.items()}


def test_fake_model_companions_and_metadata() -> None:
    buf = io.BytesIO()
    soundfile.write(buf, np.linspace(0, 1, 48, dtype=np.float32), 16000, format="WAV",
                    subtype="FLOAT")  # fmt: skip
    m = fake_model(
        FakeInterpreter(PLUGIN_INPUTS, PLUGIN_OUTPUTS, toy_model),
        embedded=json.dumps({"mean_min_power_note": -50, "num_harmonics": 60}).encode(),
        reverb_ir_16000_hz_dot_wav=buf.getvalue(),
    )
    assert m.metadata.power_note_range is None  # the max is missing
    assert m.metadata.defaulted == ("frame_rate", "frame_size", "sample_rate")
    np.testing.assert_allclose(m.reverb_ir, np.linspace(0, 1, 48), atol=1e-7)
    with pytest.raises(CheckpointError) as excinfo:
        fake_model(FakeInterpreter(PLUGIN_INPUTS, PLUGIN_OUTPUTS, toy_model), embedded=b"{not json")
    one_line_error(excinfo, "fake.tflite", "not valid JSON")


def test_bad_features_and_state() -> None:
    m = fake_model(FakeInterpreter(PLUGIN_INPUTS, PLUGIN_OUTPUTS, toy_model))
    with pytest.raises(InputError):
        m.controls(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError):
        m.controls(np.array([np.nan]), np.zeros(1))
    with pytest.raises(InputError):
        m.controls(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError):
        m.controls(np.zeros(3), np.zeros(3), np.zeros(10))
    m.close()
    with pytest.raises(CheckpointError, match="closed"):
        m.controls(np.zeros(3), np.zeros(3))


# ------------------------------------------------------------------ files that are not models


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    for name, data in (
        ("garbage.tflite", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40),
        ("empty.tflite", b""),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as excinfo:
            load_tflite(path)
        one_line_error(excinfo, name, "not a TFLite model")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(other)
    one_line_error(excinfo, "neither a .tflite model")
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(tmp_path / "missing.tflite")
    one_line_error(excinfo, "not found")


def test_a_flatbuffer_header_with_garbage_behind_it(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    path = tmp_path / "fake.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 4000)
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(path)
    one_line_error(excinfo, "fake.tflite", "not a valid TFLite model")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zips_without_exactly_one_model(tmp_path: Path) -> None:
    cases = [
        ({"model/readme.txt": b"x", "model/ckpt-1.index": b""}, "holds no .tflite model"),
        ({"a.tflite": b"1", "b/b.tflite": b"2"}, "several .tflite models: a.tflite, b/b.tflite"),
        ({"../evil.tflite": b"x"}, "unsafe path"),
    ]
    for n, (members, words) in enumerate(cases):
        archive = _zip(tmp_path / f"z{n}.zip", members)
        with pytest.raises(CheckpointError) as excinfo:
            load_tflite(archive)
        one_line_error(excinfo, f"z{n}.zip", words)
    assert not looks_like_tflite(tmp_path / "z0.zip")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(broken)
    one_line_error(excinfo, "broken.zip")


def test_zip_member_over_its_limit_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    from ddsp_pd.kinds import tflite_files

    monkeypatch.setattr(tflite_files, "TFLITE_MAX_BYTES", 100)
    archive = _zip(tmp_path / "big.zip", {"big.tflite": b"\x00" * 101})
    with pytest.raises(CheckpointError) as excinfo:
        read_tflite_files(archive)
    one_line_error(excinfo, "big.zip:big.tflite", "over the 100")


def test_folders_without_exactly_one_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(tmp_path / "empty")
    one_line_error(excinfo, "no .tflite model in folder")
    two = tmp_path / "two"
    (two / "tflite").mkdir(parents=True)
    (two / "a.tflite").write_bytes(b"1")
    (two / "tflite" / "b.tflite").write_bytes(b"2")
    with pytest.raises(CheckpointError) as excinfo:
        load_tflite(two)
    one_line_error(excinfo, "several .tflite models", "a.tflite", "tflite/b.tflite")
    assert looks_like_tflite(two) and not looks_like_tflite(tmp_path / "empty")


# ------------------------------------------------------------------ pure parts


def test_metadata_defaults_and_checks() -> None:
    md = parse_metadata({"mean_min_pitch_note_hz": 440.0, "mean_max_pitch_note_hz": 880.0})
    assert (md.frame_rate, md.frame_size, md.sample_rate, md.hop) == (50, 1024, 16000, 320)
    assert md.pitch_note_range == pytest.approx((69.0, 81.0))
    assert "frame_rate" not in md.as_dict() and md.as_dict()["mean_min_pitch_note_hz"] == 440.0
    md = parse_metadata({"frame_rate": 250, "frame_size": 512, "sample_rate": 16000, "x": 1})
    assert (md.hop, md.defaulted, md.extra) == (64, (), {"x": 1})
    assert parse_metadata(None).source == "none"
    for bad, words in (
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({"mean_min_power_note": True}).encode(), "mean_min_power_note"),
        (json.dumps({"num_harmonics": 60.5}).encode(), "not a positive integer"),
        (b'{"mean_max_pitch_note": 1e999}', "not a finite number"),
        (b'{"sample_rate": ' + b"9" * 400 + b"}", "sample_rate"),
    ):
        with pytest.raises(CheckpointError) as excinfo:
            parse_metadata(bad, "m.tflite")
        one_line_error(excinfo, "m.tflite", words)


def test_vst_inputs() -> None:
    f0, pw = vst_inputs([0.0, 440.0, 880.0, 8.175798915643707], [-80.0, 0.0, -40.0, 8.0])
    np.testing.assert_allclose(f0, [0.0, 69 / 127, 81 / 127, 0.0], atol=1e-7)
    np.testing.assert_allclose(pw, [0.0, 1.0, 0.5, 1.1], atol=1e-7)
    assert f0.dtype == np.float32 and pw.dtype == np.float32


def test_plugin_controls_nyquist_and_nan_guard() -> None:
    dist = np.full((3, 60), 1.0 / 60, np.float32)
    out = TfliteOutputs(
        np.array([[0.5], [0.5], [np.nan]], np.float32),
        dist,
        np.array([[0.1] * 64 + [np.inf]] * 3, np.float32),
    )
    c = plugin_controls([100.0, 1000.0, 100.0], out, 16000)
    np.testing.assert_allclose(c.harmonic_distribution[0], dist[0], rtol=1e-6)
    assert not c.harmonic_distribution[1, 7:].any()  # 8 x 1000 Hz is at Nyquist
    np.testing.assert_allclose(c.harmonic_distribution[1, :7], 1 / 7, rtol=1e-6)
    assert c.amplitudes[2, 0] == 0.0 and not c.harmonic_distribution[2].any()
    assert c.noise_magnitudes[0, -1] == 0.0 and c.noise_magnitudes[0, 0] == pytest.approx(0.1)
    above_all = plugin_controls(
        [9000.0], TfliteOutputs(out.amps[:1], dist[:1], out.amps[:1]), 16000
    )
    assert not above_all.harmonic_distribution.any()


def test_synth_controls_contract() -> None:
    c = SynthControls(np.zeros(4), np.zeros((4, 1)), np.zeros((4, 60)), np.zeros((4, 65)))
    assert (c.n_frames, c.n_harmonics, c.n_noise_bands) == (4, 60, 65)
    assert list(c.as_arrays()) == list(CONTROL_NAMES)
    assert all(a.dtype == np.float32 for a in c.as_arrays().values())
    with pytest.raises(ValueError, match="amplitudes"):
        SynthControls(np.zeros(4), np.zeros((4, 2)), np.zeros((4, 60)), np.zeros((4, 65)))
    with pytest.raises(ValueError, match="noise_magnitudes"):
        SynthControls(np.zeros(4), np.zeros((4, 1)), np.zeros((4, 60)), np.zeros((3, 65)))
    with pytest.raises(ValueError, match="f0_hz"):
        SynthControls(np.zeros((4, 2)), np.zeros((4, 1)), np.zeros((4, 60)), np.zeros((4, 65)))
    batched = SynthControls.from_model_outputs(
        np.ones((1, 4, 1)), np.ones((1, 4, 1)), np.ones((1, 4, 60)), np.ones((1, 4, 65))
    )
    assert batched.f0_hz.shape == (4,) and batched.amplitudes.shape == (4, 1)
    joined = SynthControls.concatenate([c, batched])
    assert joined.n_frames == 8 and joined.f0_hz[4] == 1.0


def test_runtime_start_up_line_is_held_back(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from ddsp_pd.kinds.tflite import _quiet_runtime_log

    with _quiet_runtime_log():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"something else\n")
    assert capfd.readouterr().err == "something else\n"


@needs_fixtures
def test_running_a_model_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ddsp_pd.kinds.tflite import load_tflite\n"
        f"m = load_tflite({str(TFLITE)!r})\n"
        "c, _ = m.controls([440.0] * 3, [-30.0] * 3)\n"
        "print(c.n_frames, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["3", "False"]
    assert done.stderr == ""  # LiteRT's start-up INFO line is held back
