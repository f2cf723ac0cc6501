"""Render an input of any length to a file, in bounded memory for long ones.

:func:`render_file` is the one place that chooses: inputs up to :data:`LONG_INPUT_SECONDS`
render in memory (:meth:`ddsp_pd.transfer.Engine.render`, then one atomic write), longer ones
go through :func:`render_file_blockwise`, whose memory does not grow with the input:

1. features block by block (:func:`ddsp_pd.blockwise_features.file_features`: the file is read
   twice in blocks, resampled with soxr's streaming resampler); the frame-rate curves of an
   hour are small (900,000 frames) and stay in memory, and the controls are applied to them
   whole, as for a short clip;
2. the model renders in blocks with its state carried across them (the model's
   ``render_blocks``, the same seam for every model kind), each piece resampled to the output
   rate in a stream and appended to a float32 WAV beside the output, keeping the peak;
3. the normalisation gain follows from that peak: a third pass reads the temporary file in
   blocks, scales them and writes the output's format, and one ``os.replace`` puts it in
   place (a float WAV needing no gain is renamed as it is).

The file written equals the in-memory render of the same input (to float rounding: the model's
blocks and the streaming resampler join exactly, see tests/test_long_render.py); f0 follows the
margin stated in :mod:`ddsp_pd.blockwise_features`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ddsp_pd.audio_io import (
    BlockResampler,
    BlockWriter,
    probe_audio,
    read_file_blocks,
    temporary_path,
    write_audio_atomic,
    write_blocks_atomic,
)
from ddsp_pd.blockwise_features import READ_BLOCK_FRAMES, BlockOptions, file_features
from ddsp_pd.errors import CancelledError, InputError, OutputError
from ddsp_pd.features import LONG_INPUT_SECONDS as FEATURES_LONG_SECONDS
from ddsp_pd.features import Features, load_features_npz
from ddsp_pd.output_path import file_in_the_way

__all__ = [
    "LONG_INPUT_SECONDS",
    "FileRenderResult",
    "LongOptions",
    "input_seconds",
    "render_file",
    "render_file_blockwise",
    "use_blocks",
]

#: Inputs longer than this render block by block (the in-memory path is as fast up to here
#: and its memory, about 350 MB at 2 minutes, is still small); the feature cache's limit.
LONG_INPUT_SECONDS = FEATURES_LONG_SECONDS
#: Model frames decoded per block (16 s at 250 frames/s).
MODEL_BLOCK_FRAMES = 4000
#: Samples per block when the temporary file is scaled into the output.
WRITE_BLOCK_FRAMES = 1 << 18

ProgressFn = Callable[[str, float], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class LongOptions:
    """Block sizes of the block-wise path (tests make them small to create many seams)."""

    model_block_frames: int = MODEL_BLOCK_FRAMES
    read_frames: int = READ_BLOCK_FRAMES
    write_frames: int = WRITE_BLOCK_FRAMES
    features: BlockOptions = field(default_factory=BlockOptions)


@dataclass
class FileRenderResult:
    """A render written to ``path``: its rate and length, what went into it, and the gain."""

    path: Path
    sample_rate: int
    frames: int
    features: Features
    adjusted: Any
    gain_db: float
    blockwise: bool
    controls: Any = None

    @property
    def seconds(self) -> float:
        """Duration of the written audio."""
        return self.frames / self.sample_rate


def _check(should_stop: StopFn | None) -> None:
    if should_stop is not None and should_stop():
        raise CancelledError("render cancelled")


def input_seconds(
    model: Any, input_path: str | Path | None = None, features: Features | None = None
) -> float:
    """Length of an input in seconds: from an audio file's header, or from features."""
    if input_path is not None:
        info = probe_audio(input_path)
        return info.frames / info.sample_rate
    if features is None:
        raise InputError("give exactly one of an input audio file or a features file")
    return features.n_frames / float(model.frame_rate)


def use_blocks(seconds: float, threshold: float = LONG_INPUT_SECONDS) -> bool:
    """Whether an input of ``seconds`` renders block by block."""
    return seconds > threshold


def render_file(
    engine: Any,
    loaded: Any,
    settings: Any,
    output: str | Path,
    fmt: str,
    subtype: str,
    *,
    input_path: str | Path | None = None,
    features_path: str | Path | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    keep_controls: bool = False,
    threshold: float | None = None,
    options: LongOptions | None = None,
) -> FileRenderResult:
    """Render one input (an audio file or a features ``.npz``) with ``loaded`` into
    ``output`` (``fmt``/``subtype`` as :func:`ddsp_pd.audio_io.output_format` gives them).

    Chooses the path by the input's length (:func:`use_blocks` with ``threshold``,
    :data:`LONG_INPUT_SECONDS` when None); both report the stages
    ``features``, ``controls``, ``model`` and ``write`` through ``progress``, poll
    ``should_stop`` and write atomically. ``keep_controls`` keeps the synthesizer
    controls (for every frame: they grow with the input) in the result.
    """
    if (input_path is None) == (features_path is None):
        raise InputError("give exactly one of an input audio file or a features file")
    features = None
    if features_path is not None:
        model = loaded.model
        features = load_features_npz(Path(features_path), model.frame_rate, model.level)
    limit = LONG_INPUT_SECONDS if threshold is None else threshold
    if use_blocks(input_seconds(loaded.model, input_path, features), limit):
        return render_file_blockwise(
            engine,
            loaded,
            settings,
            output,
            fmt,
            subtype,
            input_path=input_path,
            features=features,
            progress=progress,
            should_stop=should_stop,
            keep_controls=keep_controls,
            options=options,
        )
    extra = {"keep_controls": True} if keep_controls else {}
    result = engine.render(
        loaded,
        settings,
        input_path=input_path,
        features_path=features_path,
        progress=progress,
        should_stop=should_stop,
        **extra,
    )
    (progress or (lambda stage, fraction: None))("write", 0.0)
    path = write_audio_atomic(output, result.audio, result.sample_rate, fmt, subtype)
    return FileRenderResult(
        path,
        result.sample_rate,
        len(result.audio),
        result.features,
        result.adjusted,
        result.gain_db,
        False,
        getattr(result, "controls", None),
    )


def _block_features(
    engine: Any, loaded: Any, input_path: str | Path, options: LongOptions
) -> Features:
    """The model's features of an audio file, block by block (what ``features_for`` gives
    for a short clip: loudness or power, as the model's level says)."""
    model = loaded.model
    config = getattr(model, "config", None)
    return file_features(
        input_path,
        int(model.sample_rate),
        int(model.hop),
        config.loudness_version if config is not None else "power",
        engine.tracker_name,
        level=model.level,
        power_frame_size=model.power_frame_size,
        read_frames=options.read_frames,
        options=options.features,
    )


def _gain(peak: float, normalize: bool) -> tuple[float, float]:
    """``(factor, dB)`` of peak normalisation, as :func:`ddsp_pd.transfer.normalize_peak`
    computes them (silence is left alone)."""
    from ddsp_pd.transfer import NORMALIZE_PEAK_DB

    if not normalize or peak <= 1e-9:
        return 1.0, 0.0
    gain = 10.0 ** (NORMALIZE_PEAK_DB / 20.0) / peak
    return gain, float(20.0 * np.log10(gain))


def _scaled(blocks: Iterator[np.ndarray], gain: float) -> Iterator[np.ndarray]:
    for block in blocks:
        # float32 times a Python float stays float32, as in normalize_peak.
        yield (block * gain).astype(np.float32) if gain != 1.0 else block


def render_file_blockwise(
    engine: Any,
    loaded: Any,
    settings: Any,
    output: str | Path,
    fmt: str,
    subtype: str,
    *,
    input_path: str | Path | None = None,
    features: Features | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    keep_controls: bool = False,
    options: LongOptions | None = None,
) -> FileRenderResult:
    """The block-wise render of an audio file (``input_path``) or of ``features`` into
    ``output`` (see the module docstring); memory stays that of a few blocks plus the
    frame-rate curves. Errors are those of the in-memory path; a failed or cancelled
    render leaves no file behind and ``output`` as it was."""
    settings.validate()
    options = options or LongOptions()
    report = progress or (lambda stage, fraction: None)
    model = loaded.model
    target = Path(output)
    report("features", 0.0)
    if input_path is not None:
        features = _block_features(engine, loaded, input_path, options)
        input_rate = int(sf.info(str(input_path)).samplerate)
    elif features is not None:
        input_rate = int(model.sample_rate)
    else:
        raise InputError("give exactly one of an input audio file or a features file")
    _check(should_stop)
    report("controls", 0.0)
    adjusted = engine.adjust(features, loaded, settings)
    _check(should_stop)
    report("model", 0.0)
    out_rate = int(settings.sample_rate or input_rate)
    blocker = file_in_the_way(target.parent)
    if blocker is not None:
        raise OutputError(f"cannot write {target}: {blocker} is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from err
    n_frames = len(adjusted.f0_hz)
    kept: list[Any] = []
    extra = {"on_controls": kept.append} if keep_controls else {}
    raw = BlockWriter(temporary_path(target, ".raw"), out_rate, "WAV", "FLOAT", shown_as=target)
    try:
        resampler = BlockResampler(int(model.sample_rate), out_rate)
        pieces = model.render_blocks(
            adjusted.f0_hz,
            adjusted.level_db,
            seed=settings.seed,
            block_frames=options.model_block_frames,
            kernels=engine.kernels_for(n_frames),
            **extra,
        )
        for piece in pieces:
            raw.write(resampler.push(piece))
            _check(should_stop)
        raw.write(resampler.flush())
        raw.close()
        report("model", 1.0)
        report("write", 0.0)
        gain, gain_db = _gain(raw.peak, settings.normalize)
        if gain == 1.0 and (fmt, subtype) == ("WAV", "FLOAT"):
            os.replace(raw.path, target)
        else:
            blocks = _scaled(read_file_blocks(raw.path, options.write_frames), gain)
            write_blocks_atomic(target, blocks, out_rate, fmt, subtype)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from err
    finally:
        raw.abort()  # the temporary file, unless it became the output
    controls = None
    if kept:
        from ddsp_pd.kinds.controls import SynthControls

        controls = SynthControls.concatenate(kept)
    return FileRenderResult(
        target, out_rate, raw.frames, features, adjusted, gain_db, True, controls
    )
