"""Frame features of a clip (f0, confidence, and a level: loudness or power), ``.npz`` feature
files, and the cache that keys extracted features by file content.

The level is what the model's preprocessor reads: A-weighted *loudness* for solo-instrument
models (ddsp's ``F0LoudnessPreprocessor``), frame *power* for DDSP-VST models
(``OnlineF0PowerPreprocessor``, :mod:`ddsp_pd.power`). :attr:`Features.level` says which one
:attr:`Features.level_db` holds; feature files name it by their array (``loudness_db`` or
``power_db``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ddsp_pd.audio_io import load_audio, read_bytes
from ddsp_pd.errors import InputError, OutputError
from ddsp_pd.loudness import compute_loudness
from ddsp_pd.pitch import (
    CREPE_FRAME,
    CREPE_SAMPLE_RATE,
    DEFAULT_TRACKER,
    PitchTracker,
    get_tracker,
)
from ddsp_pd.power import compute_power

log = logging.getLogger(__name__)

# Bump when extraction changes so that on-disk cache entries of older code are not reused.
FEATURES_VERSION = 1

Level = Literal["loudness", "power"]
#: The level kinds, and the array that holds each in feature files and on :class:`Features`.
LEVEL_ARRAYS: dict[str, str] = {"loudness": "loudness_db", "power": "power_db"}
_LEVEL_MODELS = {
    "loudness": "solo-instrument (loudness) models",
    "power": "DDSP-VST (power) models",
}
#: The arrays of a loudness features file (kept for callers of the loudness-only API).
FEATURE_ARRAYS = ("f0_hz", "f0_confidence", "loudness_db")
_PITCH_ARRAYS = ("f0_hz", "f0_confidence")


def _check_level(level: str) -> str:
    if level not in LEVEL_ARRAYS:
        raise ValueError(f"unknown level {level!r} (expected 'loudness' or 'power')")
    return level


@dataclass(eq=False)
class Features:
    """Per-frame conditioning: float32 arrays of equal length ``n_frames``.

    ``f0_hz`` (0 = no pitch), ``f0_confidence`` in [0, 1], ``level_db`` in dB, the frame
    rate in frames per second (``sample_rate / hop`` of the model), and ``level``: whether
    ``level_db`` is loudness (solo models, the default) or power (DDSP-VST models). The level
    is also readable under its own name, :attr:`loudness_db` or :attr:`power_db`; the other
    name raises AttributeError, so power never reaches a loudness model unnoticed.
    """

    f0_hz: np.ndarray
    f0_confidence: np.ndarray
    level_db: np.ndarray
    frame_rate: float
    level: Level = "loudness"

    def __post_init__(self) -> None:
        _check_level(self.level)
        names = (*_PITCH_ARRAYS, "level_db")
        for name in names:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float32))
        lengths = {name: getattr(self, name).shape for name in names}
        if any(len(shape) != 1 for shape in lengths.values()) or len(set(lengths.values())) != 1:
            raise ValueError(f"feature arrays must be 1-D of equal length, got {lengths}")
        self.frame_rate = float(self.frame_rate)

    @property
    def level_name(self) -> str:
        """The level array's name: ``'loudness_db'`` or ``'power_db'``."""
        return LEVEL_ARRAYS[self.level]

    @property
    def loudness_db(self) -> np.ndarray:
        """Loudness in dB; AttributeError for power features."""
        if self.level != "loudness":
            raise AttributeError("these features carry power_db (DDSP-VST models), not loudness_db")
        return self.level_db

    @property
    def power_db(self) -> np.ndarray:
        """Power in dB; AttributeError for loudness features."""
        if self.level != "power":
            raise AttributeError("these features carry loudness_db, not power_db")
        return self.level_db

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.f0_hz)

    def copy(self) -> Features:
        """A deep copy (cached features are shared; callers that modify arrays copy first)."""
        return Features(
            self.f0_hz.copy(),
            self.f0_confidence.copy(),
            self.level_db.copy(),
            self.frame_rate,
            self.level,
        )


def _resolve(tracker: PitchTracker | str) -> PitchTracker:
    return get_tracker(tracker) if isinstance(tracker, str) else tracker


def feature_frames(n_samples: int, hop: int, level: str = "loudness") -> int:
    """Frames :func:`extract_features` makes from ``n_samples``: ``n // hop`` for loudness;
    ``n // hop + 1`` for power (ddsp's centred power frames, the last centred on sample
    ``hop * (n // hop)``), and a power model renders ``(n_frames - 1) * hop`` samples."""
    return n_samples // hop + (1 if _check_level(level) == "power" else 0)


def extract_features(
    audio: np.ndarray,
    sample_rate: int,
    hop: int,
    loudness_version: str,
    tracker: PitchTracker | str = DEFAULT_TRACKER,
    *,
    level: Level = "loudness",
    power_frame_size: int | None = None,
) -> Features:
    """f0, confidence and the level (loudness or power) of mono ``audio`` for a model.

    Loudness (``level='loudness'``, solo models): ``n_frames = len(audio) // hop``; frame i
    is at sample ``i * hop``. Loudness is :func:`ddsp_pd.loudness.compute_loudness` of
    ``loudness_version`` ('v1' or 'v3', v3 trimmed to ``n_frames``). For v1 models the f0
    track is read 512 CREPE samples (32 ms) later, because ddsp 1.x ran CREPE on uncentred
    frames and its models were trained that way.

    Power (``level='power'``, DDSP-VST models): :func:`ddsp_pd.power.compute_power` with
    frames of ``power_frame_size`` samples (required; the gin's ``frame_size``), giving
    ``len(audio) // hop + 1`` centred frames as ddsp's ``OnlineF0PowerPreprocessor`` does;
    f0 is tracked at the same frame times. ``loudness_version`` is not used.

    Raises InputError if the audio is shorter than one hop; ValueError for an unknown level
    or a missing or unusable ``power_frame_size``.
    """
    _check_level(level)
    if level == "power" and power_frame_size is None:
        raise ValueError("power features need power_frame_size (the model's frame_size)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"audio must be mono, got an array of shape {audio.shape}")
    if len(audio) // hop == 0:
        raise InputError(f"audio is too short: {len(audio)} samples, need at least {hop}")
    if not np.all(np.isfinite(audio)):
        raise InputError("audio contains NaN or infinite samples")
    tracker = _resolve(tracker)
    frame_rate = sample_rate / hop
    n_frames = feature_frames(len(audio), hop, level)
    pitch_audio = audio
    if level == "power":
        assert power_frame_size is not None
        level_db = compute_power(audio, sample_rate, frame_rate, power_frame_size)
    else:
        level_db = compute_loudness(audio, sample_rate, hop, loudness_version)
        if loudness_version == "v1":
            shift = round(CREPE_FRAME / 2 * sample_rate / CREPE_SAMPLE_RATE)
            pitch_audio = np.concatenate(
                [audio[shift:], np.zeros(min(shift, len(audio)), np.float32)]
            )
    f0, confidence = tracker.track(pitch_audio, sample_rate, frame_rate, n_frames)
    if len(f0) != n_frames or len(confidence) != n_frames:
        raise RuntimeError(
            f"tracker {tracker.name!r} returned {len(f0)} / {len(confidence)} frames, "
            f"expected {n_frames}"
        )
    return Features(f0, confidence, level_db, frame_rate, level)


def load_features_npz(
    path: str | os.PathLike[str], frame_rate: float, level: Level = "loudness"
) -> Features:
    """Read features from an ``.npz`` with arrays ``f0_hz``, ``f0_confidence`` and the level
    the model takes: ``loudness_db`` (``level='loudness'``) or ``power_db`` (``'power'``).

    Arrays may be ``[n]`` or have one extra axis of size 1 (``[1, n]``, ``[n, 1]``). If the
    file stores a ``frame_rate`` it must equal ``frame_rate`` (the model's). A file holding
    both level arrays is read for the one asked for.

    Raises InputError for a missing or unreadable file, a file whose level is the other kind
    (saying which it holds and which the model needs), a missing array, wrong dimensions,
    unequal lengths, zero frames, NaN or infinite values, negative f0, or confidence outside
    [0, 1]. ValueError for an unknown ``level``.
    """
    level_name = LEVEL_ARRAYS[_check_level(level)]
    wanted = (*_PITCH_ARRAYS, level_name)
    p = Path(path)
    if not p.exists():
        raise InputError(f"features file not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not a features file")
    try:
        npz = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{p} is not a readable .npz features file ({reason})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InputError(f"{p} holds a single array, not an .npz of named feature arrays")
    try:
        if level_name not in npz.files:
            _refuse_other_level(p, npz.files, level)
        missing = [name for name in wanted if name not in npz.files]
        if missing:
            raise InputError(
                f"{p} lacks array(s) {', '.join(missing)} (has: {', '.join(npz.files) or 'none'})"
            )
        arrays = {name: np.asarray(npz[name]) for name in wanted}
        stored_rate = npz["frame_rate"] if "frame_rate" in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{p} is not a readable .npz features file ({reason})") from err
    finally:
        npz.close()

    for name, array in arrays.items():
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise InputError(f"{p}: {name} must be 1-D [n_frames], got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise InputError(f"{p}: {name} must be real numbers, got dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise InputError(f"{p}: {name} contains NaN or infinite values")
        arrays[name] = array.astype(np.float32)
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise InputError(f"{p}: feature arrays differ in length ({detail})")
    if lengths["f0_hz"] == 0:
        raise InputError(f"{p}: feature arrays are empty (0 frames)")
    if np.any(arrays["f0_hz"] < 0):
        raise InputError(f"{p}: f0_hz has negative values")
    conf = arrays["f0_confidence"]
    if np.any(conf < 0) or np.any(conf > 1):
        raise InputError(f"{p}: f0_confidence must lie in [0, 1]")
    if stored_rate is not None:
        try:
            stored = float(np.asarray(stored_rate).reshape(-1)[0])
        except (TypeError, ValueError, IndexError) as err:
            raise InputError(f"{p}: frame_rate is not a number") from err
        if not np.isclose(stored, frame_rate, rtol=1e-6):
            raise InputError(
                f"{p} was made at {stored:g} frames/s but the model runs at {frame_rate:g}"
            )
    return Features(arrays["f0_hz"], conf, arrays[level_name], frame_rate, level)


def _refuse_other_level(path: Path, names: list[str], level: str) -> None:
    """Raise a clear InputError when the file carries the other level kind."""
    for other, other_name in LEVEL_ARRAYS.items():
        if other != level and other_name in names:
            raise InputError(
                f"{path} holds {other_name}, the level of {_LEVEL_MODELS[other]}, but this "
                f"model takes {LEVEL_ARRAYS[level]} ({_LEVEL_MODELS[level]}); make the "
                f"features for this model"
            )


def save_features_npz(path: str | os.PathLike[str], features: Features) -> Path:
    """Write features (and their frame rate) to an ``.npz``, atomically (temp file + rename).

    The level is stored under its own name: ``loudness_db`` or ``power_db``.

    Raises OutputError if the file cannot be written.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            arrays = {
                "f0_hz": features.f0_hz,
                "f0_confidence": features.f0_confidence,
                features.level_name: features.level_db,
            }
            np.savez(handle, **arrays, frame_rate=np.float64(features.frame_rate))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from err
    return target


#: Inputs longer than this (seconds) are analysed block by block by
#: :meth:`FeatureCache.features` (and rendered so by :mod:`ddsp_pd.longform`).
LONG_INPUT_SECONDS = 120.0


def _file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read a megabyte at a time (InputError as read_bytes)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    return digest.hexdigest()


class FeatureCache:
    """Features of input files keyed by their content, in memory (LRU) and optionally on disk.

    The key is the sha256 of the file's bytes plus the sample rate, hop, loudness version (or
    power frame size) and tracker name, so an edited file under the same path is recomputed
    and a copy under another path is a hit. The disk cache (``cache_dir``) holds one ``.npz``
    per key, written atomically; unreadable entries are recomputed. Thread-safe.
    """

    def __init__(
        self, max_entries: int = 8, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.max_entries = max_entries
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, tuple[Features, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(
        content_sha256: str,
        sample_rate: int,
        hop: int,
        loudness_version: str,
        tracker_name: str,
        *,
        level: Level = "loudness",
        power_frame_size: int | None = None,
    ) -> str:
        """The cache key (hex) for file content and extraction settings.

        Loudness keys are those of earlier versions, so their disk entries stay valid; power
        keys name the power frame size in place of the loudness version.
        """
        version = loudness_version
        if _check_level(level) == "power":
            version = f"power{int(power_frame_size or 0)}"
        text = (
            f"v{FEATURES_VERSION}|{content_sha256}|{int(sample_rate)}|{int(hop)}|"
            f"{version}|{tracker_name}"
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def get(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        hop: int,
        loudness_version: str,
        tracker: PitchTracker | str = DEFAULT_TRACKER,
        *,
        level: Level = "loudness",
        power_frame_size: int | None = None,
    ) -> tuple[Features, np.ndarray]:
        """Features of the file at ``path`` and its mono audio at ``sample_rate``.

        ``level`` and ``power_frame_size`` as for :func:`extract_features`. The returned
        objects are shared with the cache: do not modify them in place (``Features.copy()``
        first). Raises InputError as :func:`load_audio` does.
        """
        tracker = _resolve(tracker)
        if _check_level(level) == "power" and power_frame_size is None:
            raise ValueError("power features need power_frame_size (the model's frame_size)")
        data = read_bytes(path)
        key = self.key(
            hashlib.sha256(data).hexdigest(),
            sample_rate,
            hop,
            loudness_version,
            tracker.name,
            level=level,
            power_frame_size=power_frame_size,
        )
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        # Decode the bytes that were hashed, so that the key always matches the audio.
        audio = load_audio(path, sample_rate, min_samples=hop, data=data)
        n_frames = feature_frames(len(audio), hop, level)
        features = self._load_disk(key, sample_rate / hop, n_frames, level)
        with self._lock:
            if features is None:
                self.misses += 1
            else:
                self.hits += 1
        if features is None:
            features = extract_features(
                audio,
                sample_rate,
                hop,
                loudness_version,
                tracker,
                level=level,
                power_frame_size=power_frame_size,
            )
            self._save_disk(key, features)
        with self._lock:
            self._items[key] = (features, audio)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return features, audio

    def features(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        hop: int,
        loudness_version: str,
        tracker: PitchTracker | str = DEFAULT_TRACKER,
        *,
        level: Level = "loudness",
        power_frame_size: int | None = None,
        long_seconds: float = LONG_INPUT_SECONDS,
    ) -> Features:
        """Features of the file at ``path`` (the arguments of :meth:`get`), in bounded memory.

        Inputs up to ``long_seconds`` go through :meth:`get`; longer ones are hashed and
        analysed block by block (:mod:`ddsp_pd.blockwise_features`) and only their features
        are kept, in memory and on disk. Raises InputError as :meth:`get` does.
        """
        from ddsp_pd.audio_io import probe_audio

        info = probe_audio(path)
        if info.frames / info.sample_rate <= long_seconds:
            return self.get(
                path,
                sample_rate,
                hop,
                loudness_version,
                tracker,
                level=level,
                power_frame_size=power_frame_size,
            )[0]
        from ddsp_pd.blockwise_features import file_features

        tracker = _resolve(tracker)
        if _check_level(level) == "power" and power_frame_size is None:
            raise ValueError("power features need power_frame_size (the model's frame_size)")
        key = self.key(
            _file_sha256(path),
            sample_rate,
            hop,
            loudness_version,
            tracker.name,
            level=level,
            power_frame_size=power_frame_size,
        )
        memory_key = f"blocks:{key}"  # never returned by get(), which promises the audio
        with self._lock:
            if memory_key in self._items:
                self._items.move_to_end(memory_key)
                self.hits += 1
                return self._items[memory_key][0]
        features = self._load_disk(key, sample_rate / hop, None, level)
        with self._lock:
            if features is None:
                self.misses += 1
            else:
                self.hits += 1
        if features is None:
            features = file_features(
                path,
                sample_rate,
                hop,
                loudness_version,
                tracker,
                level=level,
                power_frame_size=power_frame_size,
            )
            self._save_disk(key, features)
        with self._lock:
            self._items[memory_key] = (features, np.zeros(0, np.float32))
            self._items.move_to_end(memory_key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return features

    def clear(self) -> None:
        """Forget the in-memory entries (the disk cache stays)."""
        with self._lock:
            self._items.clear()

    def _disk_path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.npz" if self.cache_dir is not None else None

    def _load_disk(
        self, key: str, frame_rate: float, n_frames: int | None, level: Level = "loudness"
    ) -> Features | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            features = load_features_npz(path, frame_rate, level)
        except InputError as err:
            log.warning("ignoring a bad feature cache entry: %s", err)
            return None
        return features if n_frames is None or features.n_frames == n_frames else None

    def _save_disk(self, key: str, features: Features) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        try:
            save_features_npz(path, features)
        except OutputError as err:
            # The cache only saves time; a read-only or full disk must not fail a render.
            log.warning("feature cache not written: %s", err)
