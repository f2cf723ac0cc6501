"""A WAV that Pd can show for every input: the file itself, or a copy the server decodes.

Pd's ``[soundfiler]`` reads 16/24/32-bit PCM and 32-bit float WAV and AIFF only; the server
accepts anything libsndfile decodes (FLAC, MP3, Ogg, ...). For those, the server writes
what it analyses (the input mixed to mono, at the file's own rate) as a 32-bit float WAV in
its output folder once per input file, so the patch can draw and play it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ddsp_pd.errors import InputError

log = logging.getLogger(__name__)

#: The output folder's writer: ``write(kind, audio, sample_rate) -> path``.
Writer = Callable[[str, np.ndarray, int], Path]

#: Containers and sample formats Pd's [soundfiler] reads (Pd 0.51 and newer).
PD_FORMATS = frozenset({"WAV", "WAVEX", "AIFF"})
PD_SUBTYPES = frozenset({"PCM_16", "PCM_24", "PCM_32", "FLOAT"})


@dataclass(frozen=True)
class ShownInput:
    """What ``/ddsp/input_wav`` reports: a WAV file Pd reads, its frames and rate."""

    path: Path
    frames: int
    sample_rate: int


def pd_readable(path: str | os.PathLike[str]) -> ShownInput | None:
    """The input itself if Pd's ``[soundfiler]`` can read it, else None (header only)."""
    try:
        info = sf.info(str(path))
    except (OSError, RuntimeError, sf.LibsndfileError):
        return None
    if info.format in PD_FORMATS and info.subtype in PD_SUBTYPES and info.frames > 0:
        return ShownInput(Path(path), int(info.frames), int(info.samplerate))
    return None


def mono_mix(audio: np.ndarray) -> np.ndarray:
    """``[n, channels]`` float32 to ``[n]``: the channels averaged, as the analysis does."""
    if audio.ndim == 1:
        return audio.astype(np.float32, copy=False)
    if audio.shape[1] == 1:
        return audio[:, 0].astype(np.float32, copy=False)
    return audio.mean(axis=1, dtype=np.float32)


class InputCopies:
    """Remembers the WAV copy made of each input file (by path, size and modification time),
    so that asking for the features again does not decode the file again."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, int, int], ShownInput] = {}
        self._lock = threading.Lock()

    def shown(self, path: Path, write: Writer) -> ShownInput:
        """The WAV Pd should read for input ``path``: the file itself when Pd reads it, else a
        copy made with ``write(kind, audio, rate) -> Path`` (the output folder's writer).

        Raises:
            InputError: the input cannot be decoded.
        """
        itself = pd_readable(path)
        if itself is not None:
            return itself
        try:
            stat = path.stat()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._made.get(key)
        if known is not None and known.path.is_file():
            return known
        from ddsp_pd.audio_io import read_audio  # soxr and friends only once needed

        audio, rate = read_audio(path)
        mono = mono_mix(audio)
        if not np.all(np.isfinite(mono)):
            raise InputError(f"{path} contains NaN or infinite samples")
        written = write("input", mono, rate)
        made = ShownInput(Path(written), len(mono), int(rate))
        with self._lock:
            self._made = {k: v for k, v in self._made.items() if k[0] != key[0]}
            self._made[key] = made
        log.info("wrote a WAV copy of %s for Pd (%d frames at %d Hz)", path.name, len(mono), rate)
        return made
