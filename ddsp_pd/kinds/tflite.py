"""DDSP-VST plugin models (``.tflite``): load, validate, and run them frame by frame.

A DDSP-VST model is what ddsp's ``ddsp_export --inference_model=vst_stateless_predict_controls
--tflite`` writes (the Train_VST colab's export, and the plugin's own 11 instruments). It is
one step of the decoder: per 20 ms frame it takes the scaled pitch and power and the GRU
state, and returns the synthesizer controls and the next state. This module opens such a
file (or a folder or zip holding one, see :mod:`ddsp_pd.kinds.tflite_files`), checks it
against the plugin's contract, and runs it over a clip or a piece of one, carrying the state.

The contract (from the plugin's source, ``util/Constants.h``). Tensors are matched by NAME,
as the plugin does: their order differs between exports (the fixture lists its inputs as
state, f0, power and its outputs as :1, :3, :0, :2).

- inputs: ``call_f0_scaled:0`` [1] = hz_to_midi(f0) / 127 (0 Hz -> 0);
  ``call_pw_scaled:0`` [1] = power_db / 80 + 1; ``call_state:0`` [512], the GRU state,
  zeros at the start of a clip;
- outputs: ``StatefulPartitionedCall:0`` [1] amplitudes, ``:1`` [60] harmonic
  distribution, ``:2`` [65] noise magnitudes, ``:3`` [512] the state after the frame,
  fed back into ``call_state:0`` for the next one.

Scaling. The export applies the synthesizers' nonlinearities inside the graph (ddsp's
``VSTStatelessPredictControls.call`` runs ``Harmonic.get_controls`` and
``FilteredNoise.get_controls`` on the decoder's outputs, with f0 recovered from f0_scaled
as midi_to_hz(127 f0_scaled)). Measured on the fixture: its stored outputs equal the
offline model's *scaled* controls within 8.4e-7 (amplitudes = exp_sigmoid(raw), the
distribution after exp_sigmoid, Nyquist removal and normalisation, sums within 2e-7 of 1,
zero above Nyquist; noise = exp_sigmoid(raw - 5)) and differ from its raw decoder outputs
by up to 5.4. So :meth:`TfliteModel.controls` applies no nonlinearity; it does what the
plugin's ``HarmonicSynthesizer`` does before synthesis: zero the harmonics at or above
Nyquist for the f0 actually played and renormalise (the same mask as the export's except
at float rounding, so a no-op here within 2e-7), and, as ``PredictControlsModel`` does, a
frame whose outputs are not finite becomes silent (amplitude 0, distribution 0).

Runtime: ai-edge-litert (Google's LiteRT, where the TFLite interpreter now lives on PyPI),
not ``tensorflow.lite.Interpreter``. Measured here (2.3.0, Linux x86-64, Python 3.11): it
imports in ~0.1 s without TensorFlow (importing TensorFlow takes ~5.5 s, and ``ddsp-pd
render`` must start fast and must not need the ``train`` extra); it installs ~60 MB where
TensorFlow installs ~1.9 GB; and TensorFlow 2.21's own ``tf.lite.Interpreter`` warns that it
is deprecated, "scheduled for deletion", in favour of ai_edge_litert. With its default
XNNPACK delegate it reproduces the fixture's stored frame-by-frame outputs bit for bit, at
~0.13 ms a frame on one thread (a minute of audio, 3000 frames, in ~0.4 s). It is imported
only when a model is opened. Its one start-up log line ("Created TensorFlow Lite XNNPACK
delegate") is held back.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.kinds.controls import ReverbSpec, SynthConfig, SynthControls
from ddsp_pd.kinds.tflite_files import REVERB_IR_PATTERN, TfliteFiles, read_tflite_files
from ddsp_pd.kinds.vst_metadata import METADATA_NAME, VstMetadata, parse_metadata

__all__ = [
    "F0_RANGE_MIDI",
    "INPUT_TENSORS",
    "KIND",
    "N_HARMONICS",
    "N_NOISE_BANDS",
    "OUTPUT_TENSORS",
    "POWER_RANGE_DB",
    "STATE_SIZE",
    "TfliteModel",
    "TfliteOutputs",
    "check_contract",
    "describe_tflite",
    "load_tflite",
    "plugin_controls",
    "plugin_synth_config",
    "tflite_info",
    "vst_inputs",
]

KIND = "tflite"
#: Input role -> tensor name, as the plugin looks them up.
INPUT_TENSORS = {
    "f0_scaled": "call_f0_scaled:0",
    "pw_scaled": "call_pw_scaled:0",
    "state": "call_state:0",
}
#: Output role -> tensor name.
OUTPUT_TENSORS = {
    "amps": "StatefulPartitionedCall:0",
    "harmonic_distribution": "StatefulPartitionedCall:1",
    "noise_magnitudes": "StatefulPartitionedCall:2",
    "state": "StatefulPartitionedCall:3",
}
#: The sizes the plugin is built for (it refuses other models: ``kHarmonicsSize`` etc.).
N_HARMONICS = 60
N_NOISE_BANDS = 65
STATE_SIZE = 512
_INPUT_SHAPES = {"f0_scaled": (1,), "pw_scaled": (1,), "state": (STATE_SIZE,)}
_OUTPUT_SHAPES = {
    "amps": (1,),
    "harmonic_distribution": (N_HARMONICS,),
    "noise_magnitudes": (N_NOISE_BANDS,),
    "state": (STATE_SIZE,),
}
#: f0_scaled = MIDI / 127 and pw_scaled = pw_db / 80 + 1, as ddsp's OnlineF0PowerPreprocessor.
F0_RANGE_MIDI = 127.0
POWER_RANGE_DB = 80.0
_RUNTIME = "ai-edge-litert"
_RUNTIME_LOG = re.compile(
    rb"^INFO: (?:Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|Initialized TensorFlow Lite runtime\.)\r?$"
)

InterpreterFactory = Callable[[bytes, int], Any]
_serials = itertools.count(1 << 32)  # apart from InferenceModel's: caches key on serials
#: Frames per block of :meth:`TfliteModel.render_blocks` (80 s at 50 frames/s).
STREAM_BLOCK_FRAMES = 4000


# ------------------------------------------------------------------ preprocessing


def vst_inputs(f0_hz: Any, power_db: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(f0_scaled, pw_scaled)`` float32 ``[T]``: hz_to_midi(f0) / 127 with 0 Hz -> 0,
    and power_db / 80 + 1 (ddsp's ``OnlineF0PowerPreprocessor``; the plugin's
    ``normalizedPitch`` / ``normalizedLoudness``). Computed in float64, then rounded."""
    f0 = np.asarray(f0_hz, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        midi = 12.0 * (np.log2(f0) - math.log2(440.0)) + 69.0
    midi = np.where(f0 <= 0.0, 0.0, midi)
    pw = np.asarray(power_db, np.float64) / POWER_RANGE_DB + 1.0
    return (midi / F0_RANGE_MIDI).astype(np.float32), pw.astype(np.float32)


# ------------------------------------------------------------------ the contract


def _shape(detail: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in np.asarray(detail.get("shape", ())).reshape(-1))


def _match(
    details: Sequence[Mapping[str, Any]],
    wanted: Mapping[str, str],
    shapes: Mapping[str, tuple[int, ...]],
    what: str,
    where: str,
    *,
    extras_allowed: bool,
) -> dict[str, int]:
    by_name: dict[str, Mapping[str, Any]] = {}
    for detail in details:
        by_name.setdefault(str(detail.get("name", "")), detail)
    missing = [name for name in wanted.values() if name not in by_name]
    if missing:
        found = ", ".join(sorted(by_name)) or "none"
        raise CheckpointError(
            f"{where} is not a DDSP-VST model: no {what} tensor {', '.join(missing)} "
            f"(its {what}s: {found})"
        )
    extra = sorted(set(by_name) - set(wanted.values()))
    if extra and not extras_allowed:
        raise CheckpointError(
            f"{where} is not a DDSP-VST model: unexpected {what} tensor {', '.join(extra)}"
        )
    indices = {}
    for role, name in wanted.items():
        detail = by_name[name]
        shape = _shape(detail)
        if shape != shapes[role]:
            raise CheckpointError(
                f"{where}: {what} {name} ({role.replace('_', ' ')}) has shape {list(shape)}, "
                f"the DDSP-VST plugin needs {list(shapes[role])}"
            )
        dtype = np.dtype(detail.get("dtype", np.float32))
        if dtype != np.float32:
            raise CheckpointError(f"{where}: {what} {name} is {dtype}, the plugin needs float32")
        indices[role] = int(detail["index"])
    return indices


def check_contract(
    input_details: Sequence[Mapping[str, Any]],
    output_details: Sequence[Mapping[str, Any]],
    where: str = "model",
) -> tuple[dict[str, int], dict[str, int]]:
    """Match an interpreter's tensors to the plugin's contract, by name.

    ``*_details`` are what ``Interpreter.get_input_details()`` / ``get_output_details()``
    return (dicts with ``name``, ``index``, ``shape``, ``dtype``). Returns
    ``(inputs, outputs)``: role -> tensor index. Every input must be one of the three the
    plugin sets (it leaves any other unset); other outputs are ignored, as by the plugin.
    Raises :class:`CheckpointError` naming the first missing, unexpected or misshapen
    tensor.
    """
    inputs = _match(
        input_details, INPUT_TENSORS, _INPUT_SHAPES, "input", where, extras_allowed=False
    )
    outputs = _match(
        output_details, OUTPUT_TENSORS, _OUTPUT_SHAPES, "output", where, extras_allowed=True
    )
    return inputs, outputs


def _check_metadata(metadata: VstMetadata, where: str) -> None:
    """The metadata's sizes must be the model's (the plugin checks the same two)."""
    for field_name, size, what in (
        ("num_harmonics", N_HARMONICS, "harmonics"),
        ("num_noise_amps", N_NOISE_BANDS, "noise bands"),
    ):
        declared = getattr(metadata, field_name)
        if declared is not None and declared != size:
            raise CheckpointError(
                f"{where}: metadata.json says {field_name} {declared}, but the model outputs "
                f"{size} {what}"
            )


# ------------------------------------------------------------------ the runtime


@contextlib.contextmanager
def _quiet_runtime_log() -> Iterator[None]:
    """Hold back LiteRT's start-up INFO line (written by C++ straight to descriptor 2);
    everything else captured is written back, all of it if the body raises."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().splitlines(keepends=True)
            kept = [ln for ln in lines if failed or not _RUNTIME_LOG.match(ln.rstrip(b"\n"))]
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, b"".join(kept))


def _runtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{_RUNTIME} {version(_RUNTIME)}"
    except PackageNotFoundError:
        return _RUNTIME


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _litert_interpreter(model: bytes, num_threads: int) -> Any:
    """A LiteRT interpreter over ``model``, tensors allocated (errors left to the caller)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise CheckpointError(
            f"opening .tflite models needs the {_RUNTIME} package (pip install {_RUNTIME})"
        ) from exc
    interpreter = Interpreter(model_content=model, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _open_interpreter(
    files: TfliteFiles, factory: InterpreterFactory | None, num_threads: int
) -> Any:
    try:
        with _quiet_runtime_log():
            return (factory or _litert_interpreter)(files.model, num_threads)
    except ValueError as exc:
        raise CheckpointError(
            f"{files.location} is not a valid TFLite model (truncated or damaged?): "
            f"{_one_line(exc)}"
        ) from exc
    except RuntimeError as exc:
        raise CheckpointError(
            f"{files.location} cannot be run by the TFLite interpreter: {_one_line(exc)}"
        ) from exc


# ------------------------------------------------------------------ companions


def _metadata(files: TfliteFiles) -> VstMetadata:
    if files.embedded_metadata is not None:
        return parse_metadata(files.embedded_metadata, files.location, "embedded")
    beside = files.companions.get(METADATA_NAME)
    if beside is not None:
        return parse_metadata(beside, files.companion_locations[METADATA_NAME], "beside")
    return parse_metadata(None)


def _reverb_ir(files: TfliteFiles, sample_rate: int) -> tuple[np.ndarray | None, str | None]:
    """The reverb IR ``reverb_ir_<rate>_hz.wav`` beside the model, mono float32, or None."""
    found = {
        int(m.group(1)): name
        for name in files.companions
        if (m := REVERB_IR_PATTERN.match(name)) is not None
    }
    if not found:
        return None, None
    if sample_rate not in found:
        other = ", ".join(f"{rate} Hz" for rate in sorted(found))
        raise CheckpointError(
            f"{files.location}: its reverb IR is for {other}, the model runs at {sample_rate} Hz"
        )
    name = found[sample_rate]
    where = files.companion_locations[name]
    import soundfile

    try:
        ir, rate = soundfile.read(io.BytesIO(files.companions[name]), dtype="float32",
                                  always_2d=True)  # fmt: skip
    except (RuntimeError, ValueError, TypeError, soundfile.SoundFileError) as exc:
        raise CheckpointError(f"cannot read the reverb IR {where}: {_one_line(exc)}") from exc
    if rate != sample_rate:
        raise CheckpointError(f"reverb IR {where} is at {rate} Hz, the model at {sample_rate} Hz")
    if ir.shape[0] == 0 or not np.all(np.isfinite(ir)):
        raise CheckpointError(f"reverb IR {where} is empty or not finite")
    # ddsp writes a mono IR; a multichannel file is mixed down rather than refused.
    return np.ascontiguousarray(ir.mean(axis=1, dtype=np.float32)), where


# ------------------------------------------------------------------ outputs and controls


@dataclass(frozen=True)
class TfliteOutputs:
    """The model's outputs frame by frame, as it returns them (float32).

    ``amps`` ``[T, 1]``, ``harmonic_distribution`` ``[T, 60]``, ``noise_magnitudes``
    ``[T, 65]`` (already scaled, see the module notes), and ``states`` ``[T, 512]`` (the
    state after each frame) when asked for, else None.
    """

    amps: np.ndarray
    harmonic_distribution: np.ndarray
    noise_magnitudes: np.ndarray
    states: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.amps.shape[0])


def plugin_controls(f0_hz: Any, outputs: TfliteOutputs, sample_rate: float) -> SynthControls:
    """Synthesizer controls from a model's outputs, as the plugin prepares them.

    Harmonics at or above Nyquist for ``f0_hz`` (the f0 the oscillators play) are zeroed
    and the distribution renormalised to sum 1 (an all-zero frame stays zero); a frame
    with a non-finite harmonic or amplitude output becomes silent, and non-finite noise
    magnitudes become 0.
    """
    f0 = np.asarray(f0_hz, np.float32).reshape(-1)
    amps = np.array(outputs.amps, np.float32)
    dist = np.array(outputs.harmonic_distribution, np.float32)
    noise = np.array(outputs.noise_magnitudes, np.float32)
    bad = ~(np.isfinite(dist).all(axis=1) & np.isfinite(amps).all(axis=1))
    dist[bad] = 0.0
    amps[bad] = 0.0
    noise[~np.isfinite(noise)] = 0.0
    k = np.arange(1, dist.shape[1] + 1, dtype=np.float32)
    dist[f0[:, None] * k >= np.float32(sample_rate / 2.0)] = 0.0
    total = dist.sum(axis=1, keepdims=True)
    np.divide(dist, total, out=dist, where=total != 0.0)
    return SynthControls(f0, amps, dist, noise)


def plugin_synth_config(
    sample_rate: int, hop: int, reverb_ir: np.ndarray | None, reverb_source: str | None
) -> SynthConfig:
    """How a ``.tflite``'s controls become audio: ``vst.gin``'s synthesizers (amplitudes
    upsampled linearly, the noise filter unwindowed), the export's reverb IR when there is
    one (dry added, as ``vst.gin``'s reverb adds it), and ``Crop``'s last hop dropped, as a
    VST checkpoint renders, so power features of L samples give ``L // hop * hop`` samples.
    """
    reverb = ReverbSpec()
    if reverb_ir is not None:
        source = Path(reverb_source).name if reverb_source else "reverb IR file"
        reverb = ReverbSpec("ir", ir=reverb_ir, add_dry=True, source=source)
    return SynthConfig(
        sample_rate=sample_rate,
        hop=hop,
        amp_resample_method="linear",
        noise_window_size=0,
        reverb=reverb,
        crop_size=hop,
        crop_location="back",
    )


def _frames(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, np.float32)
    if arr.ndim != 1:
        raise InputError(f"{name} must have shape [frames], got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite (no NaN or infinity)")
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------ the model


class TfliteModel:
    """A DDSP-VST ``.tflite`` model, validated and ready to run (the ``"tflite"`` kind).

    Fits :class:`ddsp_pd.kinds.controls.ControlModel`: :meth:`controls` takes ``f0_hz``
    and ``power_db`` (``[T]``, power as ddsp's ``compute_power`` at the model's rate,
    frame rate and frame size) and a state, and returns :class:`SynthControls` and the
    state after the last frame. Open one with :func:`load_tflite`.

    Attributes: ``path`` (as given), ``location`` (of the ``.tflite``), ``name``,
    ``metadata`` (:class:`VstMetadata`), ``sample_rate``, ``frame_rate``, ``hop``,
    ``frame_size`` (from the metadata, or the pre-2022-03 defaults), ``n_harmonics``,
    ``n_noise_bands``, ``state_size``, ``reverb_ir`` (mono float32 at ``sample_rate``, or
    None) and ``reverb_ir_location``. One model may be used from several threads; its
    runs take turns.
    """

    kind = KIND
    era = KIND
    level = "power"
    #: The harmonic phase accumulator of renders (see ddsp_pd.inference.synth).
    phase_mode = "accurate"

    def __init__(
        self,
        files: TfliteFiles,
        *,
        interpreter_factory: InterpreterFactory | None = None,
        num_threads: int = 1,
    ) -> None:
        where = files.location
        self.path = files.path
        self.location = where
        self.name = files.name
        self.size_bytes = files.size
        self.metadata = _metadata(files)
        _check_metadata(self.metadata, where)
        self.sample_rate = self.metadata.sample_rate
        self.frame_rate = float(self.metadata.frame_rate)
        self.hop = self.metadata.hop
        self.frame_size = self.metadata.frame_size
        self.n_harmonics = N_HARMONICS
        self.n_noise_bands = N_NOISE_BANDS
        self.state_size = STATE_SIZE
        self.reverb_ir, self.reverb_ir_location = _reverb_ir(files, self.sample_rate)
        self.synth = plugin_synth_config(
            self.sample_rate, self.hop, self.reverb_ir, self.reverb_ir_location
        )
        #: Unique per model object in this process: caches of its outputs key on it.
        self.serial = next(_serials)
        self._model = files.model  # the interpreter reads this buffer
        self._interpreter = _open_interpreter(files, interpreter_factory, num_threads)
        self._inputs, self._outputs = check_contract(
            self._interpreter.get_input_details(), self._interpreter.get_output_details(), where
        )
        self._lock = threading.Lock()

    @property
    def power_frame_size(self) -> int:
        """Samples per power frame (``frame_size`` of the metadata)."""
        return int(self.frame_size)

    # ------------------------------------------------------------ running
    def initial_state(self) -> np.ndarray:
        """The GRU state at the start of a clip: zeros ``[512]``."""
        return np.zeros(self.state_size, np.float32)

    def preprocess(self, f0_hz: Any, power_db: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(f0_scaled, pw_scaled)`` for these frames (see :func:`vst_inputs`)."""
        return vst_inputs(_frames("f0_hz", f0_hz), _frames("power_db", power_db))

    def _state(self, state: Any) -> np.ndarray:
        if state is None:
            return self.initial_state()
        arr = np.ascontiguousarray(state, np.float32)
        if arr.shape != (self.state_size,) or not np.all(np.isfinite(arr)):
            raise InputError(f"the state must be {self.state_size} finite values")
        return arr

    def run(
        self, f0_scaled: Any, pw_scaled: Any, state: Any = None, *, keep_states: bool = False
    ) -> tuple[TfliteOutputs, np.ndarray]:
        """Run the model on scaled inputs ``[T]``, one invoke per frame, the state fed back.

        ``state`` is the state before the first frame (None: zeros). Returns the outputs
        and the state after the last frame; ``keep_states`` also keeps every frame's.
        """
        f0 = _frames("f0_scaled", f0_scaled)
        pw = _frames("pw_scaled", pw_scaled)
        if f0.shape != pw.shape:
            raise InputError(f"f0 and power differ in length: {f0.shape[0]} vs {pw.shape[0]}")
        state = self._state(state)
        n = f0.shape[0]
        amps = np.empty((n, 1), np.float32)
        dist = np.empty((n, self.n_harmonics), np.float32)
        noise = np.empty((n, self.n_noise_bands), np.float32)
        states = np.empty((n, self.state_size), np.float32) if keep_states else None
        i, o = self._inputs, self._outputs
        with self._lock:
            it = self._interpreter
            if it is None:
                raise CheckpointError(f"{self.location} was closed")
            set_tensor, get_tensor = it.set_tensor, it.get_tensor
            try:
                for t in range(n):
                    set_tensor(i["f0_scaled"], f0[t : t + 1])
                    set_tensor(i["pw_scaled"], pw[t : t + 1])
                    set_tensor(i["state"], state)
                    it.invoke()
                    amps[t] = get_tensor(o["amps"])
                    dist[t] = get_tensor(o["harmonic_distribution"])
                    noise[t] = get_tensor(o["noise_magnitudes"])
                    state = np.ascontiguousarray(get_tensor(o["state"]), np.float32)
                    if states is not None:
                        states[t] = state
            except (RuntimeError, ValueError) as exc:
                raise CheckpointError(f"{self.location} failed to run: {_one_line(exc)}") from exc
        return TfliteOutputs(amps, dist, noise, states), state

    def controls(
        self, f0_hz: Any, power_db: Any, state: Any = None
    ) -> tuple[SynthControls, np.ndarray]:
        """Synthesizer controls for frames of ``f0_hz`` and ``power_db`` (``[T]`` each),
        from ``state`` (None: the start of a clip); returns them and the state after.

        A clip in pieces, each call given the state the previous one returned, gives the
        controls of the whole clip.
        """
        f0 = _frames("f0_hz", f0_hz)
        pw_db = _frames("power_db", power_db)
        if f0.shape != pw_db.shape:
            raise InputError(
                f"f0_hz and power_db differ in length: {f0.shape[0]} vs {pw_db.shape[0]}"
            )
        outputs, state = self.run(*vst_inputs(f0, pw_db), state)
        return plugin_controls(f0, outputs, self.sample_rate), state

    def synth_controls(
        self, f0_hz: Any, level_db: Any, state: Any = None, *, kernels: str | None = None
    ) -> tuple[SynthControls, np.ndarray]:
        """:meth:`controls` under the name of the model-kind seam
        (:class:`ddsp_pd.kinds.controls.ControlModel`); ``level_db`` is power and
        ``kernels`` is not used (the interpreter runs the decoder)."""
        return self.controls(f0_hz, level_db, state)

    def render_blocks(
        self,
        f0_hz: Any,
        power_db: Any,
        seed: int = 0,
        noise: Any | None = None,
        block_frames: int = STREAM_BLOCK_FRAMES,
        kernels: str | None = None,
        on_controls: Callable[[SynthControls], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Audio of one clip's frames in consecutive pieces, with bounded memory: the
        model run ``block_frames`` frames at a time with its state carried, synthesised
        by :func:`ddsp_pd.inference.synthesis.render_blocks` (``kernels`` is its backend)."""
        from ddsp_pd.inference import kernels as kernels_module
        from ddsp_pd.inference import synthesis

        f0 = _frames("f0_hz", f0_hz)
        name = kernels_module.check_backend(kernels or "numpy")
        backend = kernels_module.auto_backend(len(f0)) if name == "auto" else name
        return synthesis.render_blocks(
            self.synth_controls,
            f0,
            power_db,
            self.synth,
            seed,
            noise=noise,
            block_frames=block_frames,
            phase_mode=self.phase_mode,
            backend=backend,
            on_controls=on_controls,
        )

    # ------------------------------------------------------------ describing
    def describe(self) -> dict[str, Any]:
        """What ``ddsp-pd info`` shows: kind, sizes, rates, metadata, reverb, runtime."""
        md = self.metadata
        reverb = None
        if self.reverb_ir is not None:
            reverb = {
                "location": self.reverb_ir_location,
                "samples": int(self.reverb_ir.shape[0]),
                "seconds": self.reverb_ir.shape[0] / self.sample_rate,
            }
        return {
            "kind": self.kind,
            "path": str(self.path),
            "location": self.location,
            "name": self.name,
            "size_bytes": self.size_bytes,
            "runtime": _runtime_version(),
            "inputs": {name: list(_INPUT_SHAPES[role]) for role, name in INPUT_TENSORS.items()},
            "outputs": {name: list(_OUTPUT_SHAPES[role]) for role, name in OUTPUT_TENSORS.items()},
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "hop": self.hop,
            "frame_size": self.frame_size,
            "rates_defaulted": list(md.defaulted),
            "n_harmonics": self.n_harmonics,
            "n_noise_bands": self.n_noise_bands,
            "state_size": self.state_size,
            "metadata_source": md.source,
            "metadata": md.as_dict(),
            "reverb": reverb,
        }

    def describe_lines(self) -> list[str]:
        """:meth:`describe` as the lines ``ddsp-pd info`` prints."""
        return _lines(self.describe(), self.metadata)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the interpreter; later runs raise :class:`CheckpointError`."""
        with self._lock:
            self._interpreter = None

    def __enter__(self) -> TfliteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TfliteModel({self.location!r})"


def _lines(d: Mapping[str, Any], md: VstMetadata) -> list[str]:
    rates = (
        f"sample rate: {d['sample_rate']} Hz, frame rate: {d['frame_rate']:g}/s, "
        f"hop: {d['hop']} samples, power frame: {d['frame_size']} samples"
    )
    if d["rates_defaulted"]:
        rates += f" ({', '.join(d['rates_defaulted'])}: defaults of exports before 2022-03)"
    lines = [
        f"model: {d['location']}",
        "kind: DDSP-VST plugin model (.tflite), power conditioning",
        f"size: {d['size_bytes']:,} bytes; runtime: {d['runtime']}",
        rates,
        f"controls: {d['n_harmonics']} harmonics, {d['n_noise_bands']} noise bands; "
        f"GRU state {d['state_size']}",
        "inputs: " + ", ".join(f"{n} {s}" for n, s in d["inputs"].items()),
        "outputs: " + ", ".join(f"{n} {s}" for n, s in d["outputs"].items()),
    ]
    pitch = md.pitch_note_range
    if pitch is not None:
        lo_hz = md.mean_min_pitch_note_hz or 440.0 * 2.0 ** ((pitch[0] - 69.0) / 12.0)
        hi_hz = md.mean_max_pitch_note_hz or 440.0 * 2.0 ** ((pitch[1] - 69.0) / 12.0)
        lines.append(
            f"pitch range (mean note min/max): MIDI {pitch[0]:.2f} to {pitch[1]:.2f} "
            f"({lo_hz:.1f} to {hi_hz:.1f} Hz)"
        )
    power = md.power_note_range
    if power is not None:
        lines.append(f"power range (mean note min/max): {power[0]:.2f} to {power[1]:.2f} dB")
    if md.version or md.export_time:
        lines.append(
            "exported: " + " ".join(
                x for x in (f"ddsp {md.version}" if md.version else "", md.export_time) if x
            )
        )  # fmt: skip
    source = {"embedded": "packed in the .tflite", "beside": "beside the model"}
    lines.append(f"metadata: {source.get(md.source, 'none')}")
    reverb = d["reverb"]
    lines.append(
        f"reverb: {reverb['location']}, {reverb['samples']} samples ({reverb['seconds']:g} s)"
        if reverb
        else "reverb: none (no reverb_ir_<rate>_hz.wav beside the model)"
    )
    lines.append(
        "synthesis: as vst.gin (amplitudes upsampled 'linear', unwindowed noise filter, "
        f"dry added to the reverb), the last {d['hop']} samples cropped"
    )
    if md.pitch_note_range is None or md.power_note_range is None:
        lines.append("auto-adjust: unavailable (the metadata has no pitch and power ranges)")
    else:
        lines.append("auto-adjust: into the pitch and power ranges above")
    return lines


# ------------------------------------------------------------------ entry points


def load_tflite(
    path: str | Path,
    *,
    interpreter_factory: InterpreterFactory | None = None,
    num_threads: int = 1,
) -> TfliteModel:
    """Open and validate the DDSP-VST model at ``path`` (a ``.tflite``, or a folder or zip
    holding exactly one). One thread is the fastest for one frame at a time.

    ``interpreter_factory(model_bytes, num_threads)`` replaces the LiteRT interpreter (for
    tests). Raises :class:`CheckpointError` with one line naming the problem.
    """
    return TfliteModel(
        read_tflite_files(path), interpreter_factory=interpreter_factory, num_threads=num_threads
    )


def tflite_info(path: str | Path) -> dict[str, Any]:
    """:meth:`TfliteModel.describe` of the model at ``path`` (validated, not run)."""
    with load_tflite(path) as model:
        return model.describe()


def describe_tflite(path: str | Path) -> list[str]:
    """The lines ``ddsp-pd info`` prints for the model at ``path``."""
    with load_tflite(path) as model:
        return model.describe_lines()
