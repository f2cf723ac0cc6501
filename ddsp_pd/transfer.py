"""One timbre-transfer render, end to end, and the warm :class:`Engine` that caches its parts.

audio file -> features -> adjusted controls -> model -> synthesizer controls -> audio at the
caller's rate. The engine keeps loaded models (with their statistics) and extracted features
between renders; everything it calls is a pure function of its inputs.

Every model kind goes the same way (:class:`ddsp_pd.kinds.controls.ControlModel`): a ddsp
solo checkpoint, a DDSP-VST-config checkpoint or a DDSP-VST ``.tflite``. The kind's
``level`` picks the features (loudness or power) and the controls (:func:`apply_controls`
with the dataset statistics, or :func:`apply_power_controls` with the model's note-on
ranges); its ``synth_controls`` gives the synthesizer controls, and
:mod:`ddsp_pd.inference.synthesis` renders them, the same for every kind.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ddsp_pd.audio_io import resample
from ddsp_pd.catalog import display_name, resolve_checkpoint
from ddsp_pd.checkpoint import Checkpoint
from ddsp_pd.controls import (
    AUTO_ADJUST_FIELDS,
    AdjustedControls,
    ControlSettings,
    apply_manual_controls,
    apply_power_controls,
    auto_adjust_controls,
)
from ddsp_pd.errors import CancelledError, ControlError, InputError, StatisticsError
from ddsp_pd.features import FeatureCache, Features, load_features_npz
from ddsp_pd.inference import ModelControls, synthesis
from ddsp_pd.inference import kernels as inference_kernels
from ddsp_pd.inference.decoder import PRECISIONS
from ddsp_pd.kinds.controls import SynthControls
from ddsp_pd.kinds.loader import open_model
from ddsp_pd.statistics import DatasetStatistics, ModelRanges, load_statistics

log = logging.getLogger(__name__)

#: Peak level of a normalised result, in dBFS.
NORMALIZE_PEAK_DB = -1.0
#: Memory the engine may keep for decoder outputs of recent renders (10 s of audio takes
#: about 1.3 MB; a 10-minute render's 77 MB is not kept).
PREPARED_CACHE_BYTES = 64 << 20
#: Clips longer than this many frames (2 minutes at 250 frames/s) are rendered block by
#: block with bounded memory and without the decoder-output cache.
LONG_RENDER_FRAMES = 30000
# Auto-adjusted curves kept (a few recent inputs; four arrays of a frame's value each).
_AUTO_ADJUST_ENTRIES = 4
#: Fractions of the model stage reported after the decoder and after synthesis (in-memory
#: renders; long ones report per block), roughly their share of its time.
MODEL_PROGRESS_DECODED = 0.6
MODEL_PROGRESS_SYNTHESISED = 0.9

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
    """A model loaded once, of any kind, and what auto-adjust can use or why nothing.

    ``model`` fits :class:`ddsp_pd.kinds.controls.ControlModel` (an
    :class:`~ddsp_pd.inference.InferenceModel` for checkpoints, a
    :class:`~ddsp_pd.kinds.tflite.TfliteModel` for ``.tflite`` files); ``checkpoint`` is
    the ddsp checkpoint (None for a ``.tflite``). Loudness models adjust with
    ``statistics``; power models with ``ranges`` (:class:`ModelRanges`, from the
    statistics of a VST checkpoint or a ``.tflite``'s metadata). ``statistics_problem``
    says why the one needed is None.
    """

    checkpoint: Checkpoint | None
    model: Any
    statistics: DatasetStatistics | None
    statistics_problem: str | None
    ranges: ModelRanges | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        """The model's display name, as the checkpoint folders list it."""
        where = self.path if self.path is not None else self.checkpoint.path
        return display_name(where)

    @property
    def kind(self) -> str:
        """``"solo"``, ``"vst"`` or ``"tflite"``."""
        return str(self.model.kind)

    @property
    def era(self) -> str:
        """The ddsp era of a checkpoint (``"2.x"``, ``"vst"``, ...), ``"tflite"`` for a
        plugin model: what ``/ddsp/loaded`` reports."""
        return str(self.model.era)

    @property
    def level(self) -> str:
        """The level the model takes: ``"loudness"`` or ``"power"``."""
        return str(self.model.level)

    def close(self) -> None:
        """Remove a zip checkpoint's extracted files (the weights stay in memory). A
        ``.tflite``'s interpreter is left to be freed with the model, so that a render
        still running with an evicted model finishes."""
        if self.checkpoint is not None:
            self.checkpoint.close()


@dataclass
class RenderResult:
    """A finished render and what happened on the way."""

    audio: np.ndarray
    sample_rate: int
    features: Features
    adjusted: AdjustedControls
    gain_db: float
    #: The frame-rate synthesizer controls, when the render was asked to keep them.
    controls: SynthControls | None = None


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


def _model_ranges(
    model: Any, statistics: DatasetStatistics | None, problem: str | None
) -> tuple[ModelRanges | None, str | None]:
    """A power model's note-on ranges: a ``.tflite``'s metadata, else the statistics'."""
    metadata = getattr(model, "metadata", None)
    if metadata is not None:
        pitch, power = metadata.pitch_note_range, metadata.power_note_range
        if pitch is None or power is None:
            return None, "the model's metadata.json has no pitch and power note ranges"
        try:
            return ModelRanges(*pitch, *power, source="metadata.json"), None
        except StatisticsError as exc:
            return None, f"metadata.json ranges unusable: {exc}"
    if statistics is None:
        return None, problem
    try:
        return statistics.model_ranges(), None
    except StatisticsError as exc:
        return None, str(exc)


def _warm_up(model: Any) -> None:
    """Render one second of a quiet tone, so that the first render a user asks for finds
    every kernel loaded (numba's, from its on-disk cache) and every buffer size seen."""
    frames = max(2, int(model.frame_rate))
    for _ in model.render_blocks(
        np.full(frames, 220.0, np.float32), np.full(frames, -60.0, np.float32)
    ):
        pass


def _features_key(path: Path, model: Any, f0_hz: np.ndarray, ld: np.ndarray) -> tuple:
    """What the decoder's output depends on: the model (this very object: a checkpoint
    reloaded from the same path may hold new weights) and its two input curves."""
    digest = hashlib.blake2b(digest_size=16)
    for arr in (f0_hz, ld):
        arr = np.ascontiguousarray(arr, np.float32)
        digest.update(str(arr.shape).encode())
        digest.update(arr.tobytes())
    return (path, model.serial, getattr(model, "phase_mode", "accurate"), digest.hexdigest())


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
        precision: str = "exact",
    ) -> None:
        self.tracker_name = tracker
        self.checkpoint_dirs = checkpoint_dirs
        self.warm_up = warm_up
        # "auto": the compiled kernels where their start-up cost pays (see kernels_for).
        self.kernels = inference_kernels.check_backend(kernels)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        #: The decoder's precision for every model this engine loads (``"fast"``: the
        #: GRU's recurrent kernel in 8 bits; see :mod:`ddsp_pd.inference.decoder`).
        self.precision = precision
        self._models: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._max_models = max_models
        self._features = FeatureCache(max_entries=max_features)
        # Decoder output and harmonic signal of recent renders, keyed by the model and its
        # input curves: a change of seed, output rate or normalisation skips the decoder.
        self._prepared: OrderedDict[tuple, ModelControls] = OrderedDict()
        self._max_prepared_bytes = max_prepared_bytes
        # The auto-adjusted curves of recent (features, model, auto-adjust settings): a
        # change of the loudness shift, octave or confidence gate reuses them.
        self._auto: OrderedDict[tuple, tuple[Features, LoadedModel, AdjustedControls]] = (
            OrderedDict()
        )
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
        kept: list[SynthControls] | None = None,
    ) -> np.ndarray:
        """A long clip block by block: the model's memory stays that of one block (the
        result itself is the only full-length array), and nothing is cached. ``kept``
        collects each block's controls when given."""
        model = loaded.model
        n_frames = len(adjusted.f0_hz)
        audio = np.empty(model.synth.output_samples(n_frames), np.float32)
        filled = 0
        pieces = model.render_blocks(
            adjusted.f0_hz,
            adjusted.level_db,
            seed=seed,
            kernels=self.kernels_for(n_frames),
            on_controls=None if kept is None else kept.append,
        )
        for piece in pieces:
            audio[filled : filled + len(piece)] = piece
            filled += len(piece)
            _check(should_stop)
        return audio[:filled]

    def prepared_controls(
        self,
        loaded: LoadedModel,
        f0_hz: np.ndarray,
        loudness_db: np.ndarray,
        keep_controls: bool = False,
    ) -> ModelControls:
        """The model's controls and harmonic signal for these curves (``loudness_db`` is
        the model's level, loudness or power), cached; with ``keep_controls`` the result
        also holds the :class:`SynthControls` (the cache keeps only what audio needs)."""
        model = loaded.model
        where = loaded.path if loaded.path is not None else loaded.checkpoint.path
        key = _features_key(Path(where), model, f0_hz, loudness_db)
        with self._lock:
            hit = self._prepared.get(key)
            if hit is not None and (hit.controls is not None or not keep_controls):
                self._prepared.move_to_end(key)
                return hit
        backend = self.kernels_for(len(f0_hz))
        controls, _ = model.synth_controls(f0_hz, loudness_db, None, kernels=backend)
        prepared = synthesis.prepare(
            controls, model.synth, getattr(model, "phase_mode", "accurate"), backend
        )
        cached = replace(prepared, controls=None)
        if cached.nbytes <= self._max_prepared_bytes:
            with self._lock:
                self._prepared[key] = cached
                total = sum(p.nbytes for p in self._prepared.values())
                while total > self._max_prepared_bytes and len(self._prepared) > 1:
                    _, dropped = self._prepared.popitem(last=False)
                    total -= dropped.nbytes
        return prepared if keep_controls else cached

    def load_model(self, checkpoint: str | Path | None) -> LoadedModel:
        """Return the model of a path or name (None: the default), loading it once.

        Any kind: a ddsp checkpoint (folder, zip, ckpt file) or a DDSP-VST ``.tflite``
        (a file, or a folder or zip holding one).
        """
        path = resolve_checkpoint(checkpoint, self.checkpoint_dirs)
        with self._lock:
            if path in self._models:
                self._models.move_to_end(path)
                return self._models[path]
        model, ckpt = open_model(path, kernels=self.kernels_for(0), precision=self.precision)
        statistics, problem = None, "the model has no statistics"
        if ckpt is not None:
            statistics, problem = _load_statistics(ckpt)
        ranges = None
        if model.level == "power":
            ranges, problem = _model_ranges(model, statistics, problem)
        loaded = LoadedModel(ckpt, model, statistics, problem, ranges, Path(path))
        if self.warm_up:
            _warm_up(loaded.model)
        with self._lock:
            replaced = self._models.get(path)  # a concurrent load of the same path
            self._models[path] = loaded
            evicted = [replaced] if replaced is not None else []
            while len(self._models) > self._max_models:
                evicted.append(self._models.popitem(last=False)[1])
            for key, (_, model_of, _) in list(self._auto.items()):
                if any(model_of is old for old in evicted):
                    del self._auto[key]  # an evicted model must not stay alive here
        for old in evicted:
            old.close()  # a zip's extracted files leave with its model
        return loaded

    def features_for(self, input_path: str | Path, loaded: LoadedModel) -> tuple[Features, int]:
        """Frame features of an audio file for this model (cached by content), and its own
        rate: loudness or power, as the model's level says."""
        model = loaded.model
        config = getattr(model, "config", None)
        # Long inputs are analysed block by block, keeping no audio (FeatureCache.features).
        features = self._features.features(
            Path(input_path),
            model.sample_rate,
            model.hop,
            config.loudness_version if config is not None else "power",
            self.tracker_name,
            level=model.level,
            power_frame_size=model.power_frame_size,
        )
        return features, int(sf.info(str(input_path)).samplerate)

    def adjust(
        self, features: Features, loaded: LoadedModel, settings: RenderSettings
    ) -> AdjustedControls:
        """Apply the controls to frame features: with the dataset statistics for a
        loudness model, with the note-on ranges for a power model."""
        settings.validate()
        model = loaded.model
        if features.level != model.level:
            raise InputError(
                f"these features carry {features.level_name}, but the model takes "
                f"{model.level} ({'power_db' if model.level == 'power' else 'loudness_db'})"
            )
        if model.level == "power":
            return apply_power_controls(
                features.f0_hz,
                features.f0_confidence,
                features.power_db,
                settings.controls,
                loaded.ranges,
                model.frame_rate,
                statistics_problem=loaded.statistics_problem,
            )
        return apply_manual_controls(
            self._auto_adjusted(features, loaded, settings.controls),
            features.f0_confidence,
            settings.controls,
        )

    def _auto_adjusted(
        self, features: Features, loaded: LoadedModel, controls: ControlSettings
    ) -> AdjustedControls:
        """:func:`auto_adjust_controls` of a loudness model's features, cached (the same
        objects: the feature cache hands out one per input)."""
        key = (id(features), id(loaded), *(getattr(controls, f) for f in AUTO_ADJUST_FIELDS))
        with self._lock:
            hit = self._auto.get(key)
            if hit is not None and hit[0] is features and hit[1] is loaded:
                self._auto.move_to_end(key)
                return hit[2]
        auto = auto_adjust_controls(
            features.f0_hz,
            features.f0_confidence,
            features.loudness_db,
            controls,
            loaded.statistics,
            loaded.model.config.min_db,
            statistics_problem=loaded.statistics_problem,
        )
        if len(features.f0_hz) > LONG_RENDER_FRAMES:
            return auto  # flat memory for long inputs (their re-render is no blink anyway)
        with self._lock:
            self._auto[key] = (features, loaded, auto)
            while len(self._auto) > _AUTO_ADJUST_ENTRIES:
                self._auto.popitem(last=False)
        return auto

    def render(
        self,
        loaded: LoadedModel,
        settings: RenderSettings,
        *,
        input_path: str | Path | None = None,
        features_path: str | Path | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        keep_controls: bool = False,
    ) -> RenderResult:
        """Render one input (an audio file, or a features ``.npz``) with ``loaded``.

        ``progress(stage, fraction)`` is called at each stage; ``should_stop()`` is polled between
        stages and a True answer raises :class:`CancelledError`. ``keep_controls`` keeps the
        frame-rate synthesizer controls in the result (``--controls-out``).
        """
        settings.validate()
        report = progress or (lambda stage, fraction: None)
        model = loaded.model
        report("features", 0.0)
        if (input_path is None) == (features_path is None):
            raise InputError("give exactly one of an input audio file or a features file")
        if input_path is not None:
            features, input_rate = self.features_for(input_path, loaded)
        else:
            features = load_features_npz(Path(features_path), model.frame_rate, model.level)
            input_rate = model.sample_rate
        _check(should_stop)
        report("controls", 0.0)
        adjusted = self.adjust(features, loaded, settings)
        _check(should_stop)
        report("model", 0.0)
        controls: SynthControls | None = None
        if len(adjusted.f0_hz) > LONG_RENDER_FRAMES:
            kept: list[SynthControls] | None = [] if keep_controls else None
            audio = self._render_long(loaded, adjusted, settings.seed, should_stop, kept)
            if kept:
                controls = SynthControls.concatenate(kept)
        else:
            prepared = self.prepared_controls(
                loaded, adjusted.f0_hz, adjusted.level_db, keep_controls
            )
            _check(should_stop)
            # The decoder is most of the model stage; say so, so a progress bar moves.
            report("model", MODEL_PROGRESS_DECODED)
            audio = synthesis.render_prepared(prepared, model.synth, seed=settings.seed)
            controls = prepared.controls
            report("model", MODEL_PROGRESS_SYNTHESISED)
        _check(should_stop)
        out_rate = int(settings.sample_rate or input_rate)
        if out_rate != model.sample_rate:
            audio = resample(audio, model.sample_rate, out_rate)
        gain_db = 0.0
        if settings.normalize:
            audio, gain_db = normalize_peak(audio)
        report("model", 1.0)
        return RenderResult(
            np.asarray(audio, np.float32), out_rate, features, adjusted, gain_db, controls
        )
