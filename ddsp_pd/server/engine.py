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
    folder's name, a zip's stem), so a client can send it back to ``/ddsp/checkpoint``."""
    return path.stem if path.suffix.lower() == ".zip" else path.name


def model_info(loaded: Any, path: Path) -> ModelInfo:
    """Name, era and rates of a loaded model (``transfer.LoadedModel``) found at ``path``."""
    config = loaded.model.config
    return ModelInfo(
        name=checkpoint_name(path) or str(loaded.name),
        path=path,
        era=str(config.era),
        sample_rate=int(config.sample_rate),
        frame_rate=float(config.frame_rate),
    )


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
    """The six curves of the features file, ``[n_frames, 6]`` float32 (see docs/osc.md)."""
    columns = [
        features.f0_hz,
        features.f0_confidence,
        features.loudness_db,
        adjusted.f0_hz,
        adjusted.loudness_db,
        np.asarray(adjusted.mask_on, dtype=np.float32),
    ]
    n = min(len(c) for c in columns)
    return np.stack([np.asarray(c, dtype=np.float32)[:n] for c in columns], axis=1)
