"""The synthesizer controls every model kind produces, and the seam a kind fits.

A model kind (a ddsp checkpoint run by :mod:`ddsp_pd.inference`, a DDSP-VST ``.tflite``
run by :mod:`ddsp_pd.kinds.tflite`, ...) turns frame features into :class:`SynthControls`:
the frame-rate inputs of ddsp's ``Harmonic`` and ``FilteredNoise`` synthesizers, already
scaled as those synthesizers use them. What happens after (oscillators, noise filter,
reverb) is the same for every kind. ``ddsp-pd render --controls-out C.npz`` writes
:meth:`SynthControls.as_arrays`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["CONTROL_NAMES", "ControlModel", "SynthControls"]

#: The arrays of :class:`SynthControls`, in the order they are written.
CONTROL_NAMES = ("f0_hz", "amplitudes", "harmonic_distribution", "noise_magnitudes")


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
    """What the engine needs of a model kind to get controls (the "model kind" seam).

    ``controls`` takes frame features (``f0_hz`` and the kind's conditioning in dB,
    ``[T]`` each: loudness for ddsp's solo models, power for DDSP-VST models) and a
    recurrent ``state`` (``None`` = the start of a clip), and returns the controls of those
    frames with the state after the last one. A whole clip is one call; frame by frame,
    or block by block, is the same calls in sequence with the state passed on, and gives
    the same controls.
    """

    kind: str
    sample_rate: int
    frame_rate: float
    hop: int

    def initial_state(self) -> Any:
        """The recurrent state at the start of a clip."""
        ...

    def controls(
        self, f0_hz: Any, conditioning_db: Any, state: Any = None
    ) -> tuple[SynthControls, Any]:
        """Controls for these frames, and the state after them."""
        ...
