"""The synthesizer controls every model kind produces, and the seam a kind fits.

A model kind (a ddsp checkpoint run by :mod:`ddsp_pd.inference`, a DDSP-VST ``.tflite``
run by :mod:`ddsp_pd.kinds.tflite`, ...) turns frame features into :class:`SynthControls`:
the frame-rate inputs of ddsp's ``Harmonic`` and ``FilteredNoise`` synthesizers, already
scaled as those synthesizers use them. What happens after (oscillators, noise filter,
reverb) is the same for every kind: :mod:`ddsp_pd.inference.synthesis` renders
:class:`SynthControls` with a kind's :class:`SynthConfig`. ``ddsp-pd render --controls-out
C.npz`` writes :meth:`SynthControls.as_arrays`.

The kinds:

==================  ==========================================  =========  ================
kind                what                                         level      reverb
==================  ==========================================  =========  ================
``"solo"``          ddsp checkpoint, ``solo_instrument`` family  loudness   learned IR
``"vst"``           ddsp checkpoint trained with ``vst.gin``     power      filtered noise
``"tflite"``        DDSP-VST plugin model (``.tflite``)          power      IR file or none
==================  ==========================================  =========  ================
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CONTROL_NAMES",
    "CROP_LOCATIONS",
    "KINDS",
    "REVERB_KINDS",
    "ControlModel",
    "ReverbSpec",
    "SynthConfig",
    "SynthControls",
    "write_controls_npz",
]

#: The arrays of :class:`SynthControls`, in the order they are written.
CONTROL_NAMES = ("f0_hz", "amplitudes", "harmonic_distribution", "noise_magnitudes")
#: Model kinds (see the module notes).
KINDS = ("solo", "vst", "tflite")
#: ``ReverbSpec.kind``: no reverb; a fixed impulse response; an IR made from seeded noise.
REVERB_KINDS = ("none", "ir", "filtered_noise")
CROP_LOCATIONS = ("back", "front", "mid")


@dataclass(frozen=True, eq=False)
class ReverbSpec:
    """The reverb after the dry signal (harmonic + filtered noise).

    - ``"none"``: no reverb.
    - ``"ir"``: convolution with ``ir`` ``[L]`` (ddsp's trainable ``Reverb``, whose IR is
      a variable, or the ``reverb_ir_<rate>_hz.wav`` beside a ``.tflite``).
    - ``"filtered_noise"``: ddsp's ``FilteredNoiseReverb``: the IR is ``length`` samples of
      white noise filtered (``FilteredNoise``, window ``window_size``) by ``magnitudes``
      ``[n_frames, n_bands]`` (already scaled: ``exp_sigmoid(variable + initial_bias)``).
      ddsp draws the noise anew on every call; ddsp-pd draws it from the render's seed.

    In every case the IR's first sample is set to 0 and, with ``add_dry``, the dry signal
    is added to the wet one. ``source`` says where the IR comes from, for descriptions.
    """

    kind: str = "none"
    ir: np.ndarray | None = None
    magnitudes: np.ndarray | None = None
    length: int = 0
    window_size: int = 257
    add_dry: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in REVERB_KINDS:
            raise ValueError(f"reverb kind must be one of {REVERB_KINDS}, got {self.kind!r}")
        if self.kind == "ir":
            if self.ir is None:
                raise ValueError("an 'ir' reverb needs its impulse response")
            ir = np.ascontiguousarray(self.ir, np.float32).reshape(-1)
            if ir.size < 1:
                raise ValueError("the reverb impulse response is empty")
            object.__setattr__(self, "ir", ir)
            object.__setattr__(self, "length", int(ir.size))
        if self.kind == "filtered_noise":
            mags = np.ascontiguousarray(self.magnitudes, np.float32)
            if mags.ndim != 2 or mags.shape[0] < 1 or mags.shape[1] < 2:
                raise ValueError(
                    f"filtered-noise reverb magnitudes must be [frames, bands >= 2], got "
                    f"{list(mags.shape)}"
                )
            if self.length < mags.shape[0]:
                raise ValueError(
                    f"a filtered-noise reverb of {self.length} samples cannot have "
                    f"{mags.shape[0]} frames"
                )
            object.__setattr__(self, "magnitudes", mags)

    @property
    def samples(self) -> int:
        """Length of the impulse response in samples (0 for no reverb)."""
        return 0 if self.kind == "none" else int(self.length)

    def describe(self, sample_rate: int) -> str:
        """One line for ``ddsp-pd info``."""
        if self.kind == "none":
            return "none"
        seconds = self.samples / sample_rate
        dry = ", dry added" if self.add_dry else ", wet only"
        if self.kind == "ir":
            where = f" ({self.source})" if self.source else ""
            return f"impulse response{where}, {self.samples} samples ({seconds:.2f} s){dry}"
        assert self.magnitudes is not None
        frames, bands = self.magnitudes.shape
        return (
            f"filtered noise (FilteredNoiseReverb), {self.samples} samples ({seconds:.2f} s), "
            f"learned magnitudes {frames} frames x {bands} bands, window {self.window_size}, "
            f"IR noise drawn from the render's seed{dry}"
        )


@dataclass(frozen=True, eq=False)
class SynthConfig:
    """How :class:`SynthControls` become audio: the same synthesizers for every kind.

    ``hop`` samples per frame at ``sample_rate``; the harmonic amplitudes are upsampled
    ``amp_resample_method`` (``'window'`` or ``'linear'``), the noise filter uses
    ``noise_window_size`` (0: no windowing); then ``reverb``; then, as ddsp's ``Crop``,
    ``crop_size`` samples are dropped at ``crop_location`` (``'back'``: the end,
    ``'front'``: the start, ``'mid'``: half at each end). Controls of T frames give
    ``T * hop - crop_size`` samples.
    """

    sample_rate: int
    hop: int
    amp_resample_method: str = "window"
    noise_window_size: int = 0
    reverb: ReverbSpec = ReverbSpec()
    crop_size: int = 0
    crop_location: str = "back"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop <= 0:
            raise ValueError("sample_rate and hop must be positive")
        if self.amp_resample_method not in ("window", "linear"):
            raise ValueError(f"unknown amp_resample_method {self.amp_resample_method!r}")
        if self.crop_size < 0 or self.crop_location not in CROP_LOCATIONS:
            raise ValueError(f"bad crop {self.crop_size} at {self.crop_location!r}")

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop

    def output_samples(self, n_frames: int) -> int:
        """Samples of audio that ``n_frames`` frames of controls render to."""
        return max(0, int(n_frames) * self.hop - self.crop_size)

    def crop_span(self, n_frames: int) -> tuple[int, int]:
        """``(start, stop)`` of the kept samples among the ``n_frames * hop`` synthesised."""
        total = int(n_frames) * self.hop
        size = min(self.crop_size, total)
        if self.crop_location == "front":
            return size, total
        if self.crop_location == "mid":
            return size // 2, total - (size - size // 2)
        return 0, total - size


@dataclass(frozen=True)
class SynthControls:
    """Frame-rate synthesizer controls of one clip (no batch axis), float32.

    - ``f0_hz`` ``[T]``: the fundamental the oscillators play, in Hz (0 = unvoiced).
    - ``amplitudes`` ``[T, 1]``: the overall harmonic amplitude, after ddsp's
      ``exp_sigmoid`` (what ``Harmonic.get_controls`` returns as ``amplitudes``).
    - ``harmonic_distribution`` ``[T, K]``: after ``exp_sigmoid``, with every harmonic
      ``k f0 >= sample_rate / 2`` zeroed, normalised to sum 1 per frame (a frame with
      nothing below Nyquist stays all zero). Harmonic k's amplitude is
      ``amplitudes * harmonic_distribution[..., k - 1]``.
    - ``noise_magnitudes`` ``[T, bands]``: the noise filter's magnitudes, after
      ``exp_sigmoid(raw + initial_bias)`` (``FilteredNoise.get_controls``).

    Arrays are converted to float32 and their shapes checked on construction.
    """

    f0_hz: np.ndarray
    amplitudes: np.ndarray
    harmonic_distribution: np.ndarray
    noise_magnitudes: np.ndarray

    def __post_init__(self) -> None:
        for name in CONTROL_NAMES:
            object.__setattr__(self, name, np.asarray(getattr(self, name), np.float32))
        t = self.f0_hz.shape[0] if self.f0_hz.ndim == 1 else None
        if t is None:
            raise ValueError(f"f0_hz must have shape [frames], got {self.f0_hz.shape}")
        expected = {
            "amplitudes": (t, 1),
            "harmonic_distribution": (t, None),
            "noise_magnitudes": (t, None),
        }
        for name, shape in expected.items():
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != t or shape[1] not in (None, arr.shape[1]):
                want = f"[{t}, {shape[1] if shape[1] is not None else 'n'}]"
                raise ValueError(f"{name} must have shape {want}, got {list(arr.shape)}")

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.f0_hz.shape[0])

    @property
    def n_harmonics(self) -> int:
        """Number of harmonics K."""
        return int(self.harmonic_distribution.shape[1])

    @property
    def n_noise_bands(self) -> int:
        """Number of noise filter bands."""
        return int(self.noise_magnitudes.shape[1])

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by name (for ``np.savez``)."""
        return {name: getattr(self, name) for name in CONTROL_NAMES}

    @classmethod
    def from_model_outputs(
        cls,
        f0_hz: Any,
        amplitudes: Any,
        harmonic_distribution: Any,
        noise_magnitudes: Any,
    ) -> SynthControls:
        """Controls from arrays that may carry ddsp's batch axis of one.

        Accepts ``f0_hz`` as ``[T]``, ``[T, 1]``, ``[1, T]`` or ``[1, T, 1]`` and the others
        as ``[T, n]`` or ``[1, T, n]`` (what :class:`ddsp_pd.inference.InferenceModel`'s
        stages return for one clip).
        """

        def unbatch(x: Any, rank: int) -> np.ndarray:
            arr = np.asarray(x, np.float32)
            if arr.ndim == rank + 1 and arr.shape[0] == 1:
                arr = arr[0]
            return arr

        f0 = np.asarray(f0_hz, np.float32)
        if f0.ndim > 1 and sum(d > 1 for d in f0.shape) <= 1:
            f0 = f0.reshape(-1)
        return cls(
            f0,
            unbatch(amplitudes, 2),
            unbatch(harmonic_distribution, 2),
            unbatch(noise_magnitudes, 2),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[SynthControls]) -> SynthControls:
        """Join the controls of consecutive pieces of a clip along time."""
        if not parts:
            raise ValueError("no controls to concatenate")
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in CONTROL_NAMES))


@runtime_checkable
class ControlModel(Protocol):
    """What the engine needs of a model kind (the "model kind" seam).

    ``synth_controls`` takes frame features (``f0_hz`` and the kind's ``level`` in dB,
    ``[T]`` each: loudness for ddsp's solo models, power for DDSP-VST models) and a
    recurrent ``state`` (``None`` = the start of a clip), and returns the controls of those
    frames with the state after the last one. A whole clip is one call; frame by frame,
    or block by block, is the same calls in sequence with the state passed on, and gives
    the same controls. ``synth`` says how the controls become audio
    (:mod:`ddsp_pd.inference.synthesis` does it, the same for every kind).

    ``level`` is ``"loudness"`` or ``"power"``; a power model's features are ddsp's
    ``compute_power`` with frames of ``power_frame_size`` samples (None for loudness
    models). ``kind`` is one of :data:`KINDS`; ``era`` is the ddsp era of a checkpoint
    (``"0.x"``, ``"1.x"``, ``"2.x"``, ``"vst"``) and ``"tflite"`` for a plugin model.
    """

    kind: str
    era: str
    level: str
    power_frame_size: int | None
    sample_rate: int
    frame_rate: float
    hop: int
    synth: SynthConfig

    def initial_state(self) -> Any:
        """The recurrent state at the start of a clip."""
        ...

    def synth_controls(
        self, f0_hz: Any, level_db: Any, state: Any = None
    ) -> tuple[SynthControls, Any]:
        """Controls for these frames, and the state after them."""
        ...


def write_controls_npz(
    path: str | os.PathLike[str],
    controls: SynthControls,
    frame_rate: float,
    sample_rate: int,
) -> Path:
    """Write ``controls`` to an ``.npz`` (``ddsp-pd render --controls-out``), atomically.

    The arrays of :data:`CONTROL_NAMES` (frame rate, float32), plus ``frame_rate`` and
    ``sample_rate`` scalars. The data goes to a temporary file beside ``path``, synced,
    then renamed over it, so a reader sees the old file or the whole new one.

    Raises:
        OutputError: the file cannot be written.
    """
    from ddsp_pd.errors import OutputError

    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as handle:
            np.savez(
                handle,
                **controls.as_arrays(),
                frame_rate=np.float64(frame_rate),
                sample_rate=np.int64(sample_rate),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from err
    return target
