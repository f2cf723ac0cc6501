"""Training examples from a folder of audio: 4 s windows with f0 and loudness, cached.

Each file is loaded as mono at the model's rate; f0 and confidence (a pitch tracker) and
loudness v3 are computed once over the whole file, then cut into windows of
``example_secs`` every ``hop_secs`` (ddsp's ``prepare_tfrecord`` does the same with a 1 s hop),
plus one window ending at the file's end. A file shorter than one window is padded with
silence. The arrays are stored in ``train_features.npz`` in the output folder under a key
of the files' contents and the settings, so a resumed run skips the analysis.

Power examples (``level="power"``, for DDSP-VST models: ddsp's ``prepare_tfrecord`` with
``centered=True`` as the Train_VST colab runs it) have centred frames: an example of ``L``
samples has ``L / hop + 1`` frames, frame i centred on its sample ``hop * i``, so the
model synthesises ``L + hop`` samples and its ``Crop`` brings them back to ``L``. Their
``power_db`` is ddsp's ``compute_power`` of the example's own audio (what
``OnlineF0PowerPreprocessor`` computes from it during training); loudness is kept for the
dataset statistics (ddsp finds the notes from it).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddsp_pd.audio_io import load_audio
from ddsp_pd.errors import InputError, OutputError
from ddsp_pd.loudness import compute_loudness, loudness_v3
from ddsp_pd.pitch import get_tracker
from ddsp_pd.power import compute_power

__all__ = [
    "AUDIO_EXTENSIONS",
    "CACHE_NAME",
    "LEVELS",
    "Examples",
    "find_audio_files",
    "prepare_examples",
]

log = logging.getLogger(__name__)

CACHE_NAME = "train_features.npz"
_CACHE_VERSION = "1"
LEVELS = ("loudness", "power")
#: File name extensions taken as audio (libsndfile decides by content when reading).
AUDIO_EXTENSIONS = frozenset(
    (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".caf",
     ".w64", ".rf64", ".au", ".snd")
)  # fmt: skip


@dataclass(frozen=True)
class Examples:
    """Equal-length examples: ``audio [N, n_samples]``, frame features ``[N, n_frames]``
    (``power_db`` only in power examples, see the module notes)."""

    audio: np.ndarray
    f0_hz: np.ndarray
    f0_confidence: np.ndarray
    loudness_db: np.ndarray
    sources: tuple[str, ...]
    power_db: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.audio.shape[0])

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at ``indices`` as a dict of stacked arrays."""
        out = {
            "audio": self.audio[indices],
            "f0_hz": self.f0_hz[indices],
            "f0_confidence": self.f0_confidence[indices],
            "loudness_db": self.loudness_db[indices],
        }
        if self.power_db is not None:
            out["power_db"] = self.power_db[indices]
        return out


def find_audio_files(audio_dir: str | Path) -> list[Path]:
    """Audio files in a folder and its subfolders, sorted; InputError if there are none."""
    root = Path(audio_dir).expanduser()
    if not root.exists():
        raise InputError(f"audio folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: give a folder of audio files")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise InputError(f"no audio files in {root} (looked for .wav, .flac, .ogg, .mp3, .aiff)")
    return files


def _cache_key(files: list[Path], root: Path, settings: dict[str, object]) -> str:
    digest = hashlib.sha256()
    digest.update(repr(sorted(settings.items())).encode())
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _windows(n_frames: int, length: int, hop: int) -> list[int]:
    """Start frames of the windows of one file (the last one ends at the file's end)."""
    if n_frames <= length:
        return [0]
    starts = list(range(0, n_frames - length + 1, hop))
    if starts[-1] != n_frames - length:
        starts.append(n_frames - length)
    return starts


def _load_cache(path: Path, key: str) -> Examples | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return Examples(
                audio=data["audio"],
                f0_hz=data["f0_hz"],
                f0_confidence=data["f0_confidence"],
                loudness_db=data["loudness_db"],
                sources=tuple(str(s) for s in data["sources"]),
                power_db=data["power_db"] if "power_db" in data.files else None,
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # unreadable or from another version: recompute


def prepare_examples(
    audio_dir: str | Path,
    cache_dir: str | Path | None,
    sample_rate: int = 16000,
    hop: int = 64,
    example_secs: float = 4.0,
    hop_secs: float = 1.0,
    tracker: str = "praat",
    progress: Callable[[str], None] | None = None,
    level: str = "loudness",
    power_frame_size: int = 1024,
) -> Examples:
    """Cut every file of ``audio_dir`` into examples with features (cached in ``cache_dir``).

    ``level="power"`` makes centred power examples for DDSP-VST models (see the module
    notes), with power frames of ``power_frame_size`` samples. Raises InputError for a
    missing or empty folder, or an unreadable or silent file.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    root = Path(audio_dir).expanduser()
    files = find_audio_files(root)
    say = progress or (lambda _msg: None)
    frame_rate = sample_rate / hop
    length = round(example_secs * frame_rate)
    step = max(1, round(hop_secs * frame_rate))
    settings: dict[str, object] = {
        "version": _CACHE_VERSION,
        "sample_rate": sample_rate,
        "hop": hop,
        "length": length,
        "step": step,
        "tracker": tracker,
        "loudness": "v3",
    }
    if level == "power":
        settings.update(level="power", power_frame_size=power_frame_size)
    key = _cache_key(files, root, settings)
    cache = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    if cache is not None and cache.is_file():
        cached = _load_cache(cache, key)
        if cached is not None:
            say(f"features: {len(cached)} examples from the cache {cache}")
            return cached

    pitch = get_tracker(tracker)
    n_samples = length * hop
    # Centred power examples have one frame more than hops (the one on their last sample).
    centred = int(level == "power")
    frames = length + centred
    audio_out, f0_out, conf_out, ld_out, pw_out, sources = [], [], [], [], [], []
    for i, path in enumerate(files, 1):
        audio = load_audio(path, sample_rate, min_samples=hop)
        if len(audio) < n_samples:
            audio = np.pad(audio, (0, n_samples - len(audio)))
        n_frames = len(audio) // hop
        audio = audio[: n_frames * hop]
        f0, confidence = pitch.track(audio, sample_rate, frame_rate, n_frames + centred)
        if centred:
            loudness = loudness_v3(audio, sample_rate, hop)[: n_frames + 1]
        else:
            loudness = compute_loudness(audio, sample_rate, hop, "v3")
        starts = _windows(n_frames, length, step)
        for start in starts:
            clip = audio[start * hop : start * hop + n_samples]
            audio_out.append(clip)
            f0_out.append(f0[start : start + frames])
            conf_out.append(confidence[start : start + frames])
            ld_out.append(loudness[start : start + frames])
            if centred:
                pw_out.append(compute_power(clip, sample_rate, frame_rate, power_frame_size))
            sources.append(f"{path.relative_to(root)}@{start / frame_rate:.2f}s")
        say(f"features: {path.name} ({len(audio) / sample_rate:.1f} s, {len(starts)} examples) "
            f"[{i}/{len(files)}]")  # fmt: skip
    examples = Examples(
        audio=np.stack(audio_out).astype(np.float32),
        f0_hz=np.stack(f0_out).astype(np.float32),
        f0_confidence=np.stack(conf_out).astype(np.float32),
        loudness_db=np.stack(ld_out).astype(np.float32),
        sources=tuple(sources),
        power_db=np.stack(pw_out).astype(np.float32) if centred else None,
    )
    if cache is not None:
        _save_cache(cache, key, examples)
    return examples


def _save_cache(cache: Path, key: str, examples: Examples) -> None:
    tmp = cache.with_name(cache.name + ".tmp.npz")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            tmp,
            key=np.array(key),
            audio=examples.audio,
            f0_hz=examples.f0_hz,
            f0_confidence=examples.f0_confidence,
            loudness_db=examples.loudness_db,
            sources=np.array(examples.sources),
            **({} if examples.power_db is None else {"power_db": examples.power_db}),
        )
        tmp.replace(cache)
    except OSError as exc:
        raise OutputError(f"cannot write the feature cache {cache}: {exc.strerror}") from exc
