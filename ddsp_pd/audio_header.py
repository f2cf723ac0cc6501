"""How many sample frames a WAV or AIFF header says its file holds.

libsndfile quietly clamps a file's frame count to the data that is actually there, so a file
cut short (an interrupted copy or download) reads as a shorter, valid clip. Comparing the count
the header declares with what could be read tells the two apart. Only the header chunks are
read; the audio data is skipped with seeks.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

# A header with more chunks than this before its data is not worth walking.
_MAX_CHUNKS = 256

# WAVE_FORMAT_PCM, _IEEE_FLOAT, _ALAW, _MULAW, _EXTENSIBLE: one block is one sample frame.
_FRAME_PER_BLOCK_TAGS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})
# Streaming writers put this in the data size when the length is not known yet.
_UNKNOWN_SIZE = 0xFFFFFFFF


def declared_frames(stream: BinaryIO) -> int | None:
    """Sample frames the header of a WAV (RIFF/RIFX) or AIFF/AIFF-C file declares.

    ``stream`` must be seekable; it is read from the start and left at an unspecified position.
    Returns None for other formats, for headers that do not say (a streaming WAV's unknown
    size, compressed WAV without a ``fact`` chunk), and for headers too damaged to parse.
    """
    stream.seek(0)
    magic = stream.read(12)
    if len(magic) < 12:
        return None
    if magic[:4] in (b"RIFF", b"RIFX") and magic[8:12] == b"WAVE":
        return _wav_frames(stream, "<" if magic[:4] == b"RIFF" else ">")
    if magic[:4] == b"FORM" and magic[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_frames(stream)
    return None


def _chunks(stream: BinaryIO, order: str):
    """Yield ``(chunk id, size, start of body)``; the caller may read the body before the next."""
    position = stream.tell()
    for _ in range(_MAX_CHUNKS):
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return
        chunk_id, size = header[:4], struct.unpack(f"{order}I", header[4:])[0]
        yield chunk_id, size, position + 8
        # Chunks are padded to an even length.
        position += 8 + size + (size & 1)


def _wav_frames(stream: BinaryIO, order: str) -> int | None:
    tag = block_align = fact_frames = None
    for chunk_id, size, body in _chunks(stream, order):
        stream.seek(body)
        if chunk_id == b"fmt " and size >= 14:
            fields = _read(stream, f"{order}HHIIH")
            if fields is None:
                return None
            tag, _channels, _rate, _byte_rate, block_align = fields
        elif chunk_id == b"fact" and size >= 4:
            fields = _read(stream, f"{order}I")
            fact_frames = None if fields is None else fields[0]
        elif chunk_id == b"data":
            if tag is None or size == _UNKNOWN_SIZE:
                return None
            if tag in _FRAME_PER_BLOCK_TAGS and block_align:
                return size // block_align
            return fact_frames
    return None


def _aiff_frames(stream: BinaryIO) -> int | None:
    for chunk_id, size, body in _chunks(stream, ">"):
        if chunk_id == b"COMM" and size >= 6:
            stream.seek(body)
            fields = _read(stream, ">hI")
            return None if fields is None else fields[1]
    return None


def _read(stream: BinaryIO, layout: str) -> tuple[int, ...] | None:
    raw = stream.read(struct.calcsize(layout))
    return struct.unpack(layout, raw) if len(raw) == struct.calcsize(layout) else None
