"""Read any audio file as mono float32 at a given rate; write WAV, FLAC, OGG or AIFF atomically.

Reading checks what libsndfile does not: a file cut short (its header promises more than is
there) loads with an :class:`AudioWarning` naming both durations, and one with no frames at
all is an error.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ddsp_pd.audio_header import declared_frames
from ddsp_pd.errors import InputError, OutputError
from ddsp_pd.output_path import file_in_the_way

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


class AudioWarning(UserWarning):
    """Something about an input file the user should know; the file was loaded all the same.

    Raised through :func:`warnings.warn`; a command line shows it as a warning line, a
    server may log it.
    """


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe_audio` found out about an audio file without decoding it.

    ``frames`` is what can be read; ``declared_frames`` what the header says (None when the
    format's header does not say or could not be parsed).
    """

    path: Path
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    declared_frames: int | None

    @property
    def seconds(self) -> float:
        """Duration of the readable audio."""
        return self.frames / self.sample_rate

    @property
    def warning(self) -> str | None:
        """The truncation warning for this file, or None."""
        return _truncation_warning(self.path, self.declared_frames, self.frames, self.sample_rate)


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an audio file")
    return p


def _not_readable(p: Path, err: BaseException) -> InputError:
    # libsndfile names the in-memory buffer it was given; only its verdict helps users.
    reason = " ".join(str(err).split()) or type(err).__name__
    reason = re.sub(r"^Error opening <[^>]*>: ", "", reason)
    reason = re.sub(r"^Error opening '[^']*': ", "", reason)
    return InputError(f"{p} is not a readable audio file ({reason})")


_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError)


def _seconds(frames: int, sample_rate: int) -> str:
    seconds = frames / sample_rate
    return f"{seconds:.2f} s" if seconds >= 0.01 else f"{seconds:.4f} s"


def _truncation_warning(p: Path, declared: int | None, frames: int, rate: int) -> str | None:
    if declared is None or frames >= declared:
        return None
    return (
        f"{p} is truncated: its header says {_seconds(declared, rate)} of audio, "
        f"only {_seconds(frames, rate)} can be read"
    )


def _check_frames(p: Path, declared: int | None, frames: int, rate: int) -> None:
    """Raise InputError for a file with no frames; warn (AudioWarning) if it is cut short."""
    if frames == 0:
        if declared:
            raise InputError(
                f"{p} has no audio frames: its header says {_seconds(declared, rate)}, "
                "but the file is cut short before any audio"
            )
        raise InputError(f"{p} is empty (0 samples)")
    message = _truncation_warning(p, declared, frames, rate)
    if message is not None:
        warnings.warn(AudioWarning(message), stacklevel=2)


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size
    except OSError:
        return None  # the read that follows reports it


def _declared(source: str | io.BytesIO) -> int | None:
    if isinstance(source, io.BytesIO):
        return declared_frames(source)
    try:
        with open(source, "rb") as handle:
            return declared_frames(handle)
    except OSError:
        return None


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Check that ``path`` is an audio file with at least one frame, from its header only.

    Cheap (no decoding), so a command can refuse a bad input before loading anything heavy.
    Raises InputError, with the messages of :func:`read_audio`, for a missing path, a
    directory, an empty (0-byte) file, anything libsndfile cannot open, and a file without
    frames. A truncated file is not an error: see :attr:`AudioInfo.warning`.
    """
    p = _check_path(path)
    if _size(p) == 0:
        raise InputError(f"{p} is empty (0 bytes)")
    try:
        info = sf.info(str(p))
    except _DECODE_ERRORS as err:
        raise _not_readable(p, err) from err
    except OSError as err:
        raise InputError(f"cannot read {p}: {err.strerror or err}") from err
    declared = _declared(str(p))
    rate = int(info.samplerate)
    if info.frames == 0:
        _check_frames(p, declared, 0, rate)  # raises: empty, or promised audio is missing
    return AudioInfo(p, info.format, info.subtype, rate, info.channels, info.frames, declared)


def read_audio(path: str | os.PathLike[str], data: bytes | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``[n, channels]`` and its sample rate.

    If ``data`` is given it is decoded instead of reading ``path`` (which then only names
    the file in messages). Raises InputError for a missing path, a directory, an empty
    (0-byte) file, anything libsndfile cannot decode, and a file whose header promises audio
    of which none is there. A file cut short (fewer frames than its WAV or AIFF header says)
    is read as far as it goes, with an :class:`AudioWarning` naming both durations.
    """
    p = Path(path) if data is not None else _check_path(path)
    if (len(data) if data is not None else _size(p)) == 0:
        raise InputError(f"{p} is empty (0 bytes)")
    source: str | io.BytesIO = io.BytesIO(data) if data is not None else str(p)
    try:
        audio, sample_rate = sf.read(source, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as err:
        raise _not_readable(p, err) from err
    except OSError as err:
        raise InputError(f"cannot read {p}: {err.strerror or err}") from err
    _check_frames(p, _declared(source), len(audio), int(sample_rate))
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


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

#: Output formats by file extension (lower case), and each format's default subtype. FLAC and
#: AIFF get 24-bit PCM (FLAC has no float; float AIFF is rarely read); WAV keeps 32-bit float.
FORMAT_BY_EXTENSION: dict[str, str] = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".aiff": "AIFF",
    ".aif": "AIFF",
}
DEFAULT_SUBTYPES: dict[str, str] = {
    "WAV": "FLOAT",
    "FLAC": "PCM_24",
    "OGG": "VORBIS",
    "AIFF": "PCM_24",
}
#: The extension a default output name gets for each format.
EXTENSION_BY_FORMAT: dict[str, str] = {
    "WAV": ".wav",
    "FLAC": ".flac",
    "OGG": ".ogg",
    "AIFF": ".aiff",
}


def output_format(
    path: str | os.PathLike[str], format: str | None = None, subtype: str | None = None
) -> tuple[str, str]:
    """The ``(format, subtype)`` to write ``path`` in: ``format`` if given, else its extension's.

    ``subtype`` defaults to :data:`DEFAULT_SUBTYPES`. Raises OutputError, listing what is
    supported, for an unknown extension (without ``format``), an unknown format, or a subtype
    the format cannot hold.
    """
    target = Path(path)
    if format is None:
        suffix = target.suffix.lower()
        if suffix not in FORMAT_BY_EXTENSION:
            known = f"use {', '.join(FORMAT_BY_EXTENSION)}, or give --format"
            if not target.suffix:
                raise OutputError(
                    f"cannot write {target}: no extension to choose the format by ({known})"
                )
            raise OutputError(
                f"cannot write {target}: unknown audio extension {target.suffix!r} ({known})"
            )
        format = FORMAT_BY_EXTENSION[suffix]
    format = format.upper()
    if format not in DEFAULT_SUBTYPES:
        raise OutputError(
            f"cannot write {target}: unknown format {format!r} (use {', '.join(DEFAULT_SUBTYPES)})"
        )
    subtype = (subtype or DEFAULT_SUBTYPES[format]).upper()
    if not sf.check_format(format, subtype):
        known = ", ".join(sf.available_subtypes(format))
        raise OutputError(
            f"cannot write {target}: {subtype!r} is not a {format} subtype (use one of {known})"
        )
    return format, subtype


def _encoder_error(err: BaseException) -> str:
    reason = getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__
    return re.sub(r"^Error opening <[^>]*>: (Error : )?", "", reason)


def check_encodable(format: str, subtype: str, sample_rate: int, channels: int = 1) -> None:
    """Raise OutputError if libsndfile refuses to encode ``format``/``subtype`` at this rate.

    Encodes a few samples in memory, so limits such as Opus' fixed sample rates show before
    a render rather than after it.
    """
    try:
        sf.write(
            io.BytesIO(),
            np.zeros((16, channels), np.float32),
            int(sample_rate),
            format=format,
            subtype=subtype,
        )
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise OutputError(
            f"cannot write {format}/{subtype} at {sample_rate} Hz: {_encoder_error(err)}"
        ) from err


def write_audio_atomic(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Write ``audio`` (``[n]`` or ``[n, channels]``) to ``path``, atomically.

    The format is ``format``, or the one ``path``'s extension names (see :func:`output_format`;
    an unknown extension is refused). The data goes to a temporary file in the same folder,
    is synced to disk, and then replaces ``path`` in one rename, so a reader (Pd's soundfiler,
    say) sees either the old file or the complete new one, and a failed write leaves the old
    file as it was. Parent folders are created. Integer and lossy subtypes clip to [-1, 1];
    ``FLOAT`` and ``DOUBLE`` keep values as they are.

    Raises OutputError if the format is not supported, the audio has NaN or infinite samples,
    or the file cannot be written. Returns the path written.
    """
    target = Path(path)
    format, subtype = output_format(target, format, subtype)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise OutputError(f"cannot write {target}: audio must be [n] or [n, channels]")
    if not np.all(np.isfinite(data)):
        raise OutputError(f"cannot write {target}: the audio contains NaN or infinite samples")
    if subtype not in ("FLOAT", "DOUBLE"):
        # libsndfile does not clip by default: out-of-range floats would wrap around.
        data = np.clip(data, -1.0, 1.0)

    blocker = file_in_the_way(target.parent)
    if blocker is not None:
        # mkdir would say "File exists" or "Not a directory", which names neither path.
        raise OutputError(f"cannot write {target}: {blocker} is not a folder")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # os.open applies the umask, so the final file gets the usual permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            sf.write(handle, data, int(sample_rate), subtype=subtype, format=format)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except (OSError, sf.LibsndfileError, RuntimeError, ValueError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {_encoder_error(err)}") from err
    return target


def write_wav_atomic(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    subtype: str = "FLOAT",
) -> Path:
    """Write ``audio`` to ``path`` as a WAV file whatever its extension, atomically.

    :func:`write_audio_atomic` with ``format="WAV"``; ``subtype`` is a WAV subtype
    (``FLOAT``, ``PCM_16``, ``PCM_24``, ...). Raises OutputError as it does.
    """
    return write_audio_atomic(path, audio, sample_rate, format="WAV", subtype=subtype)


# --------------------------------------------------------------------------------------
# Blocks: reading, resampling and writing long audio a piece at a time
# --------------------------------------------------------------------------------------


class BlockResampler:
    """soxr's streaming resampler (the same VHQ filter as :func:`resample`), mono float32.

    Blocks pushed through :meth:`push` and then :meth:`flush`, joined, equal
    :func:`resample` of the whole signal (soxr's one-shot and streaming paths agree sample
    for sample). Equal rates pass blocks through unchanged.
    """

    def __init__(self, sr_in: float, sr_out: float) -> None:
        if sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"sample rates must be positive, got {sr_in} and {sr_out}")
        self._stream = None
        if sr_in != sr_out:
            self._stream = soxr.ResampleStream(
                sr_in, sr_out, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def push(self, block: np.ndarray) -> np.ndarray:
        """The output now available for the next input samples (may be empty)."""
        x = np.ascontiguousarray(block, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return x
        return np.asarray(self._stream.resample_chunk(x, last=False), np.float32)

    def flush(self) -> np.ndarray:
        """The output still held back at the end of the signal."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        out = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        return np.asarray(out, np.float32)


def iter_audio_blocks(
    path: str | os.PathLike[str], block_frames: int, *, warn: bool = True
) -> Iterator[tuple[np.ndarray, int]]:
    """``(frames [n, channels] float32, sample_rate)`` of a file, ``block_frames`` at a time.

    The errors of :func:`read_audio`, found as the file is read (an unreadable file before
    the first block); a truncated file warns at the start (``warn``) and is read as far as
    it goes. Never holds more than one block.
    """
    p = _check_path(path)
    if _size(p) == 0:
        raise InputError(f"{p} is empty (0 bytes)")
    size = max(1, int(block_frames))
    count = 0
    try:
        with sf.SoundFile(str(p)) as handle:
            rate = int(handle.samplerate)
            declared = _declared(str(p))
            if warn and handle.frames:
                message = _truncation_warning(p, declared, handle.frames, rate)
                if message is not None:
                    warnings.warn(AudioWarning(message), stacklevel=2)
            while True:
                block = handle.read(size, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                count += len(block)
                yield block, rate
    except _DECODE_ERRORS as err:
        raise _not_readable(p, err) from err
    except OSError as err:
        raise InputError(f"cannot read {p}: {err.strerror or err}") from err
    if count == 0:
        _check_frames(p, declared, 0, rate)  # raises: empty, or promised audio is missing


def iter_mono_blocks(
    path: str | os.PathLike[str],
    sample_rate: int,
    block_frames: int,
    *,
    min_samples: int = 1,
    warn: bool = True,
) -> Iterator[np.ndarray]:
    """:func:`load_audio` of ``path`` as consecutive mono float32 blocks at ``sample_rate``.

    Joined, the blocks equal ``load_audio(path, sample_rate)``: channels averaged the same
    way, rates converted with :class:`BlockResampler`. ``block_frames`` frames are read at a
    time (at the file's rate). The same checks raise the same InputErrors, each as soon as
    it can be known: NaN or infinite samples at their block, silence and a result shorter
    than ``min_samples`` after the last block (a caller that must not start work on a bad
    file reads the blocks once first).
    """
    name = Path(path)
    resampler: BlockResampler | None = None
    audible = any_frames = False
    produced = 0
    for frames, file_rate in iter_audio_blocks(path, block_frames, warn=warn):
        if resampler is None:
            resampler = BlockResampler(file_rate, sample_rate)
        if not np.all(np.isfinite(frames)):
            raise InputError(f"{name} contains NaN or infinite samples")
        mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
        audible = audible or bool(np.any(mono))
        any_frames = any_frames or bool(np.any(frames))
        out = resampler.push(mono)
        produced += len(out)
        if len(out):
            yield out
    if not audible:
        mixed = " after mixing to mono" if any_frames else ""
        raise InputError(f"{name} is silent (all samples are zero{mixed})")
    assert resampler is not None
    out = resampler.flush()
    produced += len(out)
    if produced < min_samples:
        raise InputError(
            f"{name} is too short: {produced} samples at {sample_rate} Hz, "
            f"need at least {min_samples} (one frame)"
        )
    if len(out):
        yield out


def temporary_path(target: Path, tag: str = "") -> Path:
    """A fresh hidden name beside ``target`` for a file that will replace it."""
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{tag}.tmp")


class BlockWriter:
    """Writes audio block by block to a new file at ``path`` (``format``/``subtype`` as for
    :func:`write_audio_atomic`, which also names the errors); keeps the peak and the count.

    Blocks with NaN or infinite samples are refused; integer and lossy subtypes are clipped
    to [-1, 1] as :func:`write_audio_atomic` does. :meth:`close` syncs the file to disk.
    The file is created exclusively (never over an existing one); on an error it is removed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        format: str,
        subtype: str,
        *,
        shown_as: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.shown_as = Path(shown_as) if shown_as is not None else self.path
        self.sample_rate = int(sample_rate)
        self.clip = subtype not in ("FLOAT", "DOUBLE")
        self.frames = 0
        self.peak = 0.0
        self._handle = None
        self._sound = None
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
            self._handle = os.fdopen(fd, "wb")
            self._sound = sf.SoundFile(
                self._handle, "w", self.sample_rate, 1, subtype=subtype, format=format
            )
        except (OSError, sf.LibsndfileError, RuntimeError, ValueError) as err:
            self.abort()
            raise OutputError(f"cannot write {self.shown_as}: {_encoder_error(err)}") from err

    def write(self, block: np.ndarray) -> None:
        """Append mono samples."""
        data = np.asarray(block, dtype=np.float32).reshape(-1)
        if not len(data):
            return
        if not np.all(np.isfinite(data)):
            self.abort()
            raise OutputError(
                f"cannot write {self.shown_as}: the audio contains NaN or infinite samples"
            )
        self.peak = max(self.peak, float(np.max(np.abs(data))))
        if self.clip:
            data = np.clip(data, -1.0, 1.0)
        try:
            self._sound.write(data)
        except (OSError, sf.LibsndfileError, RuntimeError, ValueError) as err:
            self.abort()
            raise OutputError(f"cannot write {self.shown_as}: {_encoder_error(err)}") from err
        self.frames += len(data)

    def close(self) -> Path:
        """Finish the file and sync it to disk; returns its path."""
        try:
            self._sound.close()
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except (OSError, sf.LibsndfileError, RuntimeError, ValueError) as err:
            self.abort()
            raise OutputError(f"cannot write {self.shown_as}: {_encoder_error(err)}") from err
        return self.path

    def abort(self) -> None:
        """Close and remove the file (after an error, or when its result is not wanted)."""
        for thing in (self._sound, self._handle):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def read_file_blocks(path: str | os.PathLike[str], block_frames: int) -> Iterator[np.ndarray]:
    """The first channel of an audio file as float32 blocks of ``block_frames`` (for files
    this program wrote; see :func:`iter_audio_blocks` for inputs)."""
    with sf.SoundFile(str(path)) as handle:
        while True:
            block = handle.read(max(1, int(block_frames)), dtype="float32", always_2d=True)
            if len(block) == 0:
                return
            yield block[:, 0]


def write_blocks_atomic(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """:func:`write_audio_atomic` for mono audio given as consecutive blocks: the blocks go
    to a temporary file in ``path``'s folder, synced, then renamed over ``path``; on any
    error (or an exception from ``blocks``) the temporary file is removed and ``path`` is
    left as it was. Returns the path written."""
    target = Path(path)
    format, subtype = output_format(target, format, subtype)
    blocker = file_in_the_way(target.parent)
    if blocker is not None:
        raise OutputError(f"cannot write {target}: {blocker} is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {_encoder_error(err)}") from err
    writer = BlockWriter(temporary_path(target), sample_rate, format, subtype, shown_as=target)
    try:
        for block in blocks:
            writer.write(block)
        writer.close()
        os.replace(writer.path, target)
    except OSError as err:
        writer.abort()
        raise OutputError(f"cannot write {target}: {_encoder_error(err)}") from err
    except BaseException:
        writer.abort()
        raise
    return target
