"""Read any audio file as mono float32 at a given rate; write WAV files atomically."""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ddsp_pd.errors import InputError, OutputError

# soxr's "very high quality": 28-bit precision, flat passband to 95 % of Nyquist. Its cost is
# a few milliseconds per 10 s of audio, so there is no reason to trade quality for speed.
RESAMPLE_QUALITY = "VHQ"


def resample(audio: np.ndarray, sr_in: float, sr_out: float) -> np.ndarray:
    """Resample ``audio`` (shape ``[n]`` or ``[n, channels]``) from ``sr_in`` to ``sr_out`` Hz.

    Uses soxr's band-limited resampler; returns float32. The output has about
    ``round(n * sr_out / sr_in)`` samples. Equal rates return a float32 copy.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} and {sr_out}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if sr_in == sr_out or len(audio) == 0:
        return audio.copy()
    return np.asarray(soxr.resample(audio, sr_in, sr_out, quality=RESAMPLE_QUALITY), np.float32)


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an audio file")
    return p


def read_audio(path: str | os.PathLike[str], data: bytes | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``[n, channels]`` and its sample rate.

    If ``data`` is given it is decoded instead of reading ``path`` (which then only names
    the file in messages). Raises InputError for a missing path, a directory, or anything
    libsndfile cannot decode.
    """
    p = Path(path) if data is not None else _check_path(path)
    source: str | io.BytesIO = io.BytesIO(data) if data is not None else str(p)
    try:
        audio, sample_rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as err:
        # libsndfile names the in-memory buffer it was given; only its verdict helps users.
        reason = " ".join(str(err).split()) or type(err).__name__
        reason = re.sub(r"^Error opening <[^>]*>: ", "", reason)
        raise InputError(f"{p} is not a readable audio file ({reason})") from err
    except OSError as err:
        raise InputError(f"cannot read {p}: {err.strerror or err}") from err
    return audio, int(sample_rate)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The raw bytes of an input file, with InputError for a missing path or a directory."""
    p = _check_path(path)
    try:
        return p.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {p}: {err.strerror or err}") from err


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    min_samples: int = 1,
    data: bytes | None = None,
) -> np.ndarray:
    """Load ``path`` (any format libsndfile reads) as mono float32 at ``sample_rate`` Hz.

    Channels are averaged; other rates are resampled with soxr. ``min_samples`` is the
    shortest acceptable result at ``sample_rate`` (a caller passes its hop so that there is at
    least one frame). If ``data`` is given, those bytes are decoded instead of reading
    ``path``, which then only names the file in messages.

    Raises InputError (one line naming the file) if the file is missing, a directory, not
    audio, empty, shorter than ``min_samples``, contains NaN or infinite samples, or is
    silent (all samples zero after mixing to mono).
    """
    frames, file_rate = read_audio(path, data)
    name = Path(path)
    if frames.size == 0:
        raise InputError(f"{name} is empty (0 samples)")
    if not np.all(np.isfinite(frames)):
        raise InputError(f"{name} contains NaN or infinite samples")
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    if not np.any(mono):
        mixed = " after mixing to mono" if frames.shape[1] > 1 and np.any(frames) else ""
        raise InputError(f"{name} is silent (all samples are zero{mixed})")
    audio = resample(mono, file_rate, sample_rate)
    if len(audio) < min_samples:
        raise InputError(
            f"{name} is too short: {len(audio)} samples at {sample_rate} Hz, "
            f"need at least {min_samples} (one frame)"
        )
    return audio


def write_wav_atomic(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    subtype: str = "FLOAT",
) -> Path:
    """Write ``audio`` (``[n]`` or ``[n, channels]``) to ``path`` as a WAV file, atomically.

    The data goes to a temporary file in the same folder, which then replaces ``path`` in one
    rename, so a reader (Pd's soundfiler, say) sees either the old file or the complete new
    one. Parent folders are created. Integer subtypes (``PCM_16``, ``PCM_24``, ...) clip to
    [-1, 1]; ``FLOAT`` and ``DOUBLE`` keep values as they are.

    Raises OutputError if the subtype is not a WAV subtype, the audio has NaN or infinite
    samples, or the file cannot be written. Returns the path written.
    """
    target = Path(path)
    subtype = subtype.upper()
    if not sf.check_format("WAV", subtype):
        raise OutputError(f"cannot write {target}: {subtype!r} is not a WAV subtype")
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise OutputError(f"cannot write {target}: audio must be [n] or [n, channels]")
    if not np.all(np.isfinite(data)):
        raise OutputError(f"cannot write {target}: the audio contains NaN or infinite samples")
    if subtype not in ("FLOAT", "DOUBLE"):
        # libsndfile does not clip by default: out-of-range floats would wrap around.
        data = np.clip(data, -1.0, 1.0)

    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # os.open applies the umask, so the final file gets the usual permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            sf.write(handle, data, int(sample_rate), subtype=subtype, format="WAV")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except (OSError, sf.LibsndfileError, RuntimeError, ValueError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(err, "strerror", None) or " ".join(str(err).split())
        raise OutputError(f"cannot write {target}: {reason}") from err
    return target
