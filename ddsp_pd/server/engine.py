"""What the server needs of :class:`ddsp_pd.transfer.Engine`, and the conversions around it.

The engine is injected, so tests can serve with a fast stand-in. The server touches the
engine's results only through the small functions here, which read the attributes of
``transfer.LoadedModel``, ``transfer.RenderResult``, ``features.Features`` and
``controls.AdjustedControls``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ddsp_pd.server.state import ModelInfo, RenderParams

#: Share of the model stage that decoding and synthesis take (resampling and
#: normalising the rest), so the fraction never reaches 1 before the stage ends.
DECODE_SHARE = 0.95

ProgressFn = Callable[[str, float], None]
StopFn = Callable[[], bool]
SettingsFactory = Callable[[RenderParams], Any]


class RenderEngine(Protocol):
    """The part of :class:`ddsp_pd.transfer.Engine` the server uses."""

    def load_model(self, checkpoint: str | Path | None) -> Any:
        """Load (once) and return the model of a checkpoint path or name."""
        ...

    def features_for(self, input_path: str | Path, loaded: Any) -> tuple[Any, int]:
        """Frame features of an audio file for this model, and the file's own rate."""
        ...

    def adjust(self, features: Any, loaded: Any, settings: Any) -> Any:
        """Apply the controls to frame features."""
        ...

    def render(
        self,
        loaded: Any,
        settings: Any,
        *,
        input_path: str | Path | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> Any:
        """Render one input with the loaded model."""
        ...


def transfer_settings(params: RenderParams) -> Any:
    """Build :class:`ddsp_pd.transfer.RenderSettings` from the server's snapshot."""
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.transfer import RenderSettings

    controls = ControlSettings(
        octave=params.octave,
        loudness_db=params.loudness,
        confidence=params.confidence,
        adjust=params.adjust,
        quiet=params.quiet,
        autotune=params.autotune,
        note_threshold=params.note_threshold,
    )
    return RenderSettings(
        controls=controls,
        sample_rate=params.samplerate,
        normalize=params.normalize,
        seed=params.seed,
    )


def checkpoint_name(path: Path) -> str:
    """The name ``/ddsp/checkpoints`` lists for a checkpoint path (the catalog's rule: a
    folder's name, a zip's or a .tflite's stem), so a client can send it back to
    ``/ddsp/checkpoint``."""
    return path.stem if path.suffix.lower() in (".zip", ".tflite") else path.name


def model_info(loaded: Any, path: Path) -> ModelInfo:
    """Name, era and rates of a loaded model (``transfer.LoadedModel``) found at ``path``.

    The era is the model kind's: a checkpoint's ddsp era (``"2.x"``, ``"vst"``, ...) or
    ``"tflite"`` for a DDSP-VST plugin model.
    """
    model = loaded.model
    return ModelInfo(
        name=checkpoint_name(path) or str(loaded.name),
        path=path,
        era=str(_model_attr(model, "era")),
        sample_rate=int(_model_attr(model, "sample_rate")),
        frame_rate=float(_model_attr(model, "frame_rate")),
    )


def _model_attr(model: Any, name: str) -> Any:
    """A model's attribute, or its config's (stand-in engines give only a config)."""
    return getattr(model, name) if hasattr(model, name) else getattr(model.config, name)


def _level(curves: Any) -> Any:
    """The level curve (loudness or power) of features or adjusted controls."""
    return curves.level_db if hasattr(curves, "level_db") else curves.loudness_db


def adjusted_args(adjusted: Any) -> tuple[int, str, int, float, float]:
    """``/ddsp/adjusted`` arguments: ran, reason, notes, octave, tuning (0 when not run)."""
    report = adjusted.report
    tuning = report.tuning_factor
    return (
        int(bool(report.adjust_ran)),
        str(report.reason),
        int(report.note_segments),
        float(report.auto_octave),
        float(tuning) if tuning is not None else 0.0,
    )


def feature_channels(features: Any, adjusted: Any) -> np.ndarray:
    """The six curves of the features file, ``[n_frames, 6]`` float32 (see docs/osc.md);
    the level columns are loudness, or power for power models."""
    columns = [
        features.f0_hz,
        features.f0_confidence,
        _level(features),
        adjusted.f0_hz,
        _level(adjusted),
        np.asarray(adjusted.mask_on, dtype=np.float32),
    ]
    n = min(len(c) for c in columns)
    return np.stack([np.asarray(c, dtype=np.float32)[:n] for c in columns], axis=1)


class ModelStageTicker:
    """Progress inside the model stage, told by the engine's own polling.

    The engine reports only the start and the end of its model stage, but for long clips it
    renders block by block (``render_blocks``) and polls ``should_stop()`` after each block.
    Wrapped here, each poll inside the model stage is one more block done, so the fraction
    ``blocks * block_frames / n_frames`` (at most :data:`DECODE_SHARE`) is reported. Renders
    that the engine does in one go poll once or twice and report nothing in between.
    """

    def __init__(
        self, progress: ProgressFn, should_stop: StopFn, n_frames: int, block_frames: int
    ) -> None:
        self._progress = progress
        self._should_stop = should_stop
        self._n_frames = max(1, int(n_frames))
        self._block = max(1, int(block_frames))
        self._in_model = False
        self._blocks = 0

    def progress(self, stage: str, fraction: float) -> None:
        """Forward a stage report; note whether the model stage is running."""
        self._in_model = stage == "model" and fraction < 1.0
        self._blocks = 0
        self._progress(stage, fraction)

    def should_stop(self) -> bool:
        """Forward the poll; inside the model stage, report one more block done."""
        if self._in_model:
            self._blocks += 1
            done = min(DECODE_SHARE, self._blocks * self._block / self._n_frames)
            self._progress("model", done)
        return self._should_stop()


def _block_rendered_frames(engine: Any, input_path: Any, frame_rate: float) -> int | None:
    """The clip's frames when the engine renders it block by block, else None."""
    from ddsp_pd import transfer

    threshold = getattr(transfer, "LONG_RENDER_FRAMES", None)
    if threshold is None or not isinstance(engine, transfer.Engine) or not input_path:
        return None
    try:
        import soundfile as sf

        n_frames = int(float(sf.info(str(input_path)).duration) * frame_rate)
    except Exception:
        return None  # the engine's own render reports the problem
    return n_frames if n_frames > threshold else None


def render_with_progress(
    engine: RenderEngine,
    loaded: Any,
    settings: Any,
    *,
    input_path: str | Path,
    frame_rate: float,
    progress: ProgressFn,
    should_stop: StopFn,
) -> Any:
    """``engine.render`` of an input file, with ``/ddsp/progress model FRACTION`` after each
    block of the decoder when the engine renders the clip block by block (long clips)."""
    n_frames = _block_rendered_frames(engine, input_path, frame_rate)
    if n_frames is not None:
        from ddsp_pd.inference.model import STREAM_BLOCK_FRAMES

        ticker = ModelStageTicker(progress, should_stop, n_frames, STREAM_BLOCK_FRAMES)
        progress, should_stop = ticker.progress, ticker.should_stop
    return engine.render(
        loaded, settings, input_path=input_path, progress=progress, should_stop=should_stop
    )


def render_long_input(
    engine: RenderEngine,
    loaded: Any,
    settings: Any,
    *,
    input_path: str | Path,
    output: Path,
    progress: ProgressFn,
    should_stop: StopFn,
) -> Any | None:
    """Render a long input file straight into ``output`` (a 32-bit float WAV), block by
    block, so the server's memory stays flat however long the input is.

    Returns the :class:`ddsp_pd.longform.FileRenderResult`, or None when the input is short
    enough for the in-memory path (or the engine is not ddsp-pd's own), which the caller
    then takes. A failed or cancelled render leaves no file behind.
    """
    from ddsp_pd import longform, transfer

    if not isinstance(engine, transfer.Engine):
        return None
    try:
        seconds = longform.input_seconds(loaded.model, input_path)
    except Exception:
        return None  # the in-memory path reports the problem in its own words
    # Read at call time, so a test can lower the threshold.
    threshold = longform.LONG_INPUT_SECONDS
    if not longform.use_blocks(seconds, threshold):
        return None
    # The block-wise render polls should_stop after each block of the model: the ticker
    # turns those polls into /ddsp/progress model FRACTION.
    n_frames = int(seconds * float(loaded.model.frame_rate))
    block = longform.LongOptions().model_block_frames
    ticker = ModelStageTicker(progress, should_stop, n_frames, block)
    return longform.render_file(
        engine,
        loaded,
        settings,
        output,
        "WAV",
        "FLOAT",
        input_path=input_path,
        progress=ticker.progress,
        should_stop=ticker.should_stop,
        threshold=threshold,
    )
