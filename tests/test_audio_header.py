"""The frame count a WAV or AIFF header declares, read without decoding."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from ddsp_pd.audio_header import declared_frames


def _encoded(fmt: str, subtype: str, frames: int = 1000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    audio = np.zeros((frames, channels), np.float32)
    sf.write(buffer, audio, 16000, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype", "channels"),
    [
        ("WAV", "PCM_16", 1),
        ("WAV", "PCM_24", 2),
        ("WAV", "FLOAT", 1),  # has fact and PEAK chunks before data
        ("WAV", "ULAW", 1),
        ("WAVEX", "PCM_16", 2),
        ("AIFF", "PCM_16", 2),
        ("AIFF", "FLOAT", 1),  # AIFF-C
    ],
)
def test_declared_frames_of_complete_files(fmt, subtype, channels):
    data = _encoded(fmt, subtype, frames=1234, channels=channels)
    assert declared_frames(io.BytesIO(data)) == 1234
    # Cutting the data off does not change what the header declares.
    assert declared_frames(io.BytesIO(data[:200])) == 1234


def test_compressed_wav_uses_its_fact_chunk():
    data = _encoded("WAV", "IMA_ADPCM", frames=2000)
    got = declared_frames(io.BytesIO(data))
    # ADPCM encodes whole blocks; the fact chunk counts the frames written.
    assert got is not None and 2000 <= got < 2000 + 1024


def test_other_formats_and_damaged_headers_say_nothing():
    assert declared_frames(io.BytesIO(_encoded("FLAC", "PCM_16"))) is None
    assert declared_frames(io.BytesIO(b"")) is None
    assert declared_frames(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVE")) is None
    assert declared_frames(io.BytesIO(b"not audio at all, not at all")) is None
    wav = _encoded("WAV", "PCM_16")
    assert declared_frames(io.BytesIO(wav[:30])) is None  # cut inside the fmt chunk


def test_streaming_wav_with_unknown_size_says_nothing():
    data = bytearray(_encoded("WAV", "PCM_16"))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    assert declared_frames(io.BytesIO(bytes(data))) is None
