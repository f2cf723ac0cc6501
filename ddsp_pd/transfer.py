"""One timbre-transfer render, end to end, and the warm :class:`Engine` that caches its parts.

audio file -> features -> adjusted controls -> model -> audio at the caller's rate.
The engine keeps loaded models (with their statistics) and extracted features between renders;
everything it calls is a pure function of its inputs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ddsp_pd.audio_io import resample
from ddsp_pd.catalog import display_name, resolve_checkpoint
from ddsp_pd.checkpoint import Checkpoint, load_checkpoint
from ddsp_pd.controls import AdjustedControls, ControlSettings, apply_controls
from ddsp_pd.errors import CancelledError, ControlError, InputError, StatisticsError
from ddsp_pd.features import FeatureCache, Features, load_features_npz
from ddsp_pd.inference import InferenceModel, ModelControls
from ddsp_pd.inference import kernels as inference_kernels
from ddsp_pd.statistics import DatasetStatistics, load_statistics

log = logging.getLogger(__name__)

#: Peak level of a normalised result, in dBFS.
NORMALIZE_PEAK_DB = -1.0
#: Memory the engine may keep for decoder outputs of recent renders (10 s of audio takes
#: about 1.3 MB; a 10-minute render's 77 MB is not kept).
PREPARED_CACHE_BYTES = 64 << 20
#: Clips longer than this many frames (2 minutes at 250 frames/s) are rendered block by
#: block with bounded memory and without the decoder-output cache.
LONG_RENDER_FRAMES = 30000

ProgressFn = Callable[[str, float], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class RenderSettings:
    """Everything a render needs besides the input and the model."""

    controls: ControlSettings = field(default_factory=ControlSettings)
    sample_rate: int | None = None  # None: the input file's rate (the model's for features input)
    normalize: bool = True
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ControlError` for any value out of range."""
        self.controls.validate()
        if self.sample_rate is not None and not 8000 <= int(self.sample_rate) <= 192000:
            raise ControlError(f"sample rate {self.sample_rate} is out of range [8000, 192000]")


@dataclass
class LoadedModel:
    """A checkpoint loaded once: the model, and its statistics or why there are none."""

    checkpoint: Checkpoint
    model: InferenceModel
    statistics: DatasetStatistics | None
    statistics_problem: str | None

    @property
    def name(self) -> str:
        """The checkpoint's display name, as the checkpoint folders list it."""
        return display_name(self.checkpoint.path)


@dataclass
class RenderResult:
    """A finished render and what happened on the way."""

    audio: np.ndarray
    sample_rate: int
    features: Features
    adjusted: AdjustedControls
    gain_db: float


def normalize_peak(
    audio: np.ndarray, peak_db: float = NORMALIZE_PEAK_DB
) -> tuple[np.ndarray, float]:
    """Scale so the peak sits at ``peak_db`` dBFS; silence is left alone (gain 0 dB)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 1e-9:
        return audio, 0.0
    gain = 10.0 ** (peak_db / 20.0) / peak
    return (audio * gain).astype(np.float32), float(20.0 * np.log10(gain))


def _check(should_stop: StopFn | None) -> None:
    if should_stop is not None and should_stop():
        raise CancelledError("render cancelled")


def _load_statistics(checkpoint: Checkpoint) -> tuple[DatasetStatistics | None, str | None]:
    if checkpoint.statistics_path is None:
        return None, "the checkpoint has no dataset_statistics.pkl"
    try:
        return load_statistics(checkpoint.statistics_path), None
    except StatisticsError as exc:
        log.warning("statistics of %s not used: %s", checkpoint.name, exc)
        return None, f"dataset_statistics.pkl unusable: {exc}"


def _warm_up(model: InferenceModel) -> None:
    """Render one second of a quiet tone, so that the first render a user asks for finds
    every kernel loaded (numba's, from its on-disk cache) and every buffer size seen."""
    frames = int(model.config.frame_rate)
    model.render(np.full(frames, 220.0, np.float32), np.full(frames, -60.0, np.float32))


def _features_key(path: Path, model: InferenceModel, f0_hz: np.ndarray, ld: np.ndarray) -> tuple:
    """What the decoder's output depends on: the model (this very object: a checkpoint
    reloaded from the same path may hold new weights) and its two input curves."""
    digest = hashlib.blake2b(digest_size=16)
    for arr in (f0_hz, ld):
        arr = np.ascontiguousarray(arr, np.float32)
        digest.update(str(arr.shape).encode())
        digest.update(arr.tobytes())
    return (path, model.serial, model.phase_mode, digest.hexdigest())


class Engine:
    """Loads models and features once and renders with them; safe to call from several threads."""

    def __init__(
        self,
        tracker: str = "default",
        max_models: int = 4,
        max_features: int = 8,
        checkpoint_dirs: list[Path] | None = None,
        warm_up: bool = False,
        kernels: str = "auto",
        max_prepared_bytes: int = PREPARED_CACHE_BYTES,
    ) -> None:
        self.tracker_name = tracker
        self.checkpoint_dirs = checkpoint_dirs
        self.warm_up = warm_up
        # "auto": the compiled kernels where their start-up cost pays (see kernels_for).
        self.kernels = inference_kernels.check_backend(kernels)
        self._models: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._max_models = max_models
        self._features = FeatureCache(max_entries=max_features)
        # Decoder output and harmonic signal of recent renders, keyed by the model and its
        # input curves: a change of seed, output rate or normalisation skips the decoder.
        self._prepared: OrderedDict[tuple, ModelControls] = OrderedDict()
        self._max_prepared_bytes = max_prepared_bytes
        self._lock = threading.Lock()

    def kernels_for(self, n_frames: int) -> str:
        """The kernel backend for a render of ``n_frames`` frames.

        ``auto`` picks the compiled kernels when a long-running engine (``warm_up``) asks,
        when they are already loaded in this process, or when the clip is long enough for
        their half second of start-up to pay; numpy otherwise.
        """
        if self.kernels != "auto":
            return self.kernels
        return inference_kernels.auto_backend(n_frames, long_running=self.warm_up)

    def _render_long(
        self,
        loaded: LoadedModel,
        adjusted: AdjustedControls,
        seed: int,
        should_stop: StopFn | None,
    ) -> np.ndarray:
        """A long clip block by block: the model's memory stays that of one block (the
        result itself is the only full-length array), and nothing is cached."""
        model = loaded.model
        n_frames = len(adjusted.f0_hz)
        audio = np.empty(n_frames * model.config.hop, np.float32)
        filled = 0
        pieces = model.render_blocks(
            adjusted.f0_hz, adjusted.loudness_db, seed=seed, kernels=self.kernels_for(n_frames)
        )
        for piece in pieces:
            audio[filled : filled + len(piece)] = piece
            filled += len(piece)
            _check(should_stop)
        return audio

    def prepared_controls(
        self, loaded: LoadedModel, f0_hz: np.ndarray, loudness_db: np.ndarray
    ) -> ModelControls:
        """The decoder's controls and harmonic signal for these curves, cached."""
        key = _features_key(Path(loaded.checkpoint.path), loaded.model, f0_hz, loudness_db)
        with self._lock:
            hit = self._prepared.get(key)
            if hit is not None:
                self._prepared.move_to_end(key)
                return hit
        prepared = loaded.model.model_controls(
            f0_hz, loudness_db, kernels=self.kernels_for(len(f0_hz))
        )
        if prepared.nbytes <= self._max_prepared_bytes:
            with self._lock:
                self._prepared[key] = prepared
                total = sum(p.nbytes for p in self._prepared.values())
                while total > self._max_prepared_bytes and len(self._prepared) > 1:
                    _, dropped = self._prepared.popitem(last=False)
                    total -= dropped.nbytes
        return prepared

    def load_model(self, checkpoint: str | Path | None) -> LoadedModel:
        """Return the model of a checkpoint path or name (None: the default), loading it once."""
        path = resolve_checkpoint(checkpoint, self.checkpoint_dirs)
        with self._lock:
            if path in self._models:
                self._models.move_to_end(path)
                return self._models[path]
        ckpt = load_checkpoint(path)
        statistics, problem = _load_statistics(ckpt)
        model = InferenceModel(ckpt, kernels=self.kernels_for(0))
        loaded = LoadedModel(ckpt, model, statistics, problem)
        if self.warm_up:
            _warm_up(loaded.model)
        with self._lock:
            replaced = self._models.get(path)  # a concurrent load of the same path
            self._models[path] = loaded
            evicted = [replaced] if replaced is not None else []
            while len(self._models) > self._max_models:
                evicted.append(self._models.popitem(last=False)[1])
        for old in evicted:
            old.checkpoint.close()  # a zip's extracted files leave with its model
        return loaded

    def features_for(self, input_path: str | Path, loaded: LoadedModel) -> tuple[Features, int]:
        """Frame features of an audio file for this model (cached by content), and its own rate."""
        config = loaded.model.config
        features, _audio = self._features.get(
            Path(input_path),
            config.sample_rate,
            config.hop,
            config.loudness_version,
            self.tracker_name,
        )
        return features, int(sf.info(str(input_path)).samplerate)

    def adjust(
        self, features: Features, loaded: LoadedModel, settings: RenderSettings
    ) -> AdjustedControls:
        """Apply the controls to frame features with this model's statistics."""
        settings.validate()
        config = loaded.model.config
        adjusted = apply_controls(
            features.f0_hz,
            features.f0_confidence,
            features.loudness_db,
            settings.controls,
            loaded.statistics,
            config.min_db,
            statistics_problem=loaded.statistics_problem,
        )
        return adjusted

    def render(
        self,
        loaded: LoadedModel,
        settings: RenderSettings,
        *,
        input_path: str | Path | None = None,
        features_path: str | Path | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> RenderResult:
        """Render one input (an audio file, or a features ``.npz``) with ``loaded``.

        ``progress(stage, fraction)`` is called at each stage; ``should_stop()`` is polled between
        stages and a True answer raises :class:`CancelledError`.
        """
        settings.validate()
        report = progress or (lambda stage, fraction: None)
        config = loaded.model.config
        report("features", 0.0)
        if (input_path is None) == (features_path is None):
            raise InputError("give exactly one of an input audio file or a features file")
        if input_path is not None:
            features, input_rate = self.features_for(input_path, loaded)
        else:
            features = load_features_npz(Path(features_path), config.frame_rate)
            input_rate = config.sample_rate
        _check(should_stop)
        report("controls", 0.0)
        adjusted = self.adjust(features, loaded, settings)
        _check(should_stop)
        report("model", 0.0)
        if len(adjusted.f0_hz) > LONG_RENDER_FRAMES:
            audio = self._render_long(loaded, adjusted, settings.seed, should_stop)
        else:
            prepared = self.prepared_controls(loaded, adjusted.f0_hz, adjusted.loudness_db)
            _check(should_stop)
            audio = loaded.model.render_controls(prepared, seed=settings.seed)
        _check(should_stop)
        out_rate = int(settings.sample_rate or input_rate)
        if out_rate != config.sample_rate:
            audio = resample(audio, config.sample_rate, out_rate)
        gain_db = 0.0
        if settings.normalize:
            audio, gain_db = normalize_peak(audio)
        report("model", 1.0)
        return RenderResult(np.asarray(audio, np.float32), out_rate, features, adjusted, gain_db)
