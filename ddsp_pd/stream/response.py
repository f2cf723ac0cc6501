"""How long after the engine's algorithmic latency the model's answer to a sound peaks.

The algorithmic latency (:meth:`StreamEngine.describe_latency`) is when the first sample
that a frame's input can influence comes out. A model answers an attack with a burst that
builds up over a few frames (the GRU, the frame-rate amplitude envelopes), so what a
listener hears, and what a cross-correlation of clicks in with the sound out measures,
peaks some milliseconds later: about 7.6 ms for the shipped default at 48 kHz. A front end
that reports latency to a person adds this *model response* to the algorithmic latency.

It is measured, not derived: a fresh engine on the same model and settings (auto-adjust
off) is fed a click train offline at three positions in the frame grid, and the lag at
which the output's magnitude, summed at the clicks, is largest is averaged over them. The
stream being reported on is not touched.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ddsp_pd.stream.engine import EngineSettings, StreamEngine
from ddsp_pd.stream.models import LiveModel

__all__ = ["click_lag", "click_train", "model_response_samples"]

#: Seconds of clicks fed in, and their spacing (long enough for a model's answer to end).
CLICK_SECONDS, CLICK_PERIOD = 1.6, 0.2
#: Lags searched, in seconds after the algorithmic latency.
MAX_RESPONSE_SECONDS = 0.1


def click_train(rate: int, seconds: float = CLICK_SECONDS, period: float = CLICK_PERIOD,
                first: float = 0.25, level: float = 0.9) -> np.ndarray:  # fmt: skip
    """Clicks of ``level`` every ``period`` seconds from ``first`` on, at ``rate``."""
    x = np.zeros(int(seconds * rate), np.float32)
    x[int(first * rate) :: max(1, int(period * rate))] = level
    return x


def click_lag(clicks: np.ndarray, output: np.ndarray, max_lag: int) -> int:
    """The lag in 0..``max_lag`` samples at which ``|output|`` summed at the clicks of
    ``clicks`` is largest (the first click is left out: it also meets the start)."""
    spikes = np.flatnonzero(clicks)[1:]
    spikes = spikes[spikes + max_lag < output.size]
    if spikes.size == 0:
        return 0
    magnitude = np.abs(np.asarray(output, np.float64))
    index = spikes[:, None] + np.arange(max_lag + 1)[None, :]
    return int(np.argmax(magnitude[index].sum(axis=0)))


def model_response_samples(model: LiveModel, rate: int, settings: EngineSettings,
                           block: int = 1024) -> int:  # fmt: skip
    """The model response (module notes) in samples at ``rate``, for streams of ``model``
    with ``settings``: 0 in MIDI mode (notes, not sounds, start the answer there) or when
    the model stays silent."""
    if settings.mode == "midi":
        return 0
    # Auto-adjust would move the register and level on the clicks' first frames; the
    # response is the model's, so it is measured with the controls as they are set.
    settings = dataclasses.replace(
        settings, controls=dataclasses.replace(settings.controls, adjust=False)
    )
    clicks = click_train(rate)
    frame = max(1, round(rate / model.frame_rate))
    lags = []
    for phase in (0, frame // 3, 2 * frame // 3):
        engine = StreamEngine(model, rate, settings)
        x = np.concatenate([np.zeros(phase, np.float32), clicks])
        reach = engine.latency_samples + int(MAX_RESPONSE_SECONDS * rate)
        x = np.concatenate([x, np.zeros(reach + (-(x.size + reach) % block), np.float32)])
        y = np.concatenate([engine.process(x[i : i + block]) for i in range(0, x.size, block)])
        y = y[phase:]
        if not np.any(y):
            continue
        lag = click_lag(clicks, y, reach)
        lags.append(max(0, lag - engine.latency_samples))
    return round(float(np.mean(lags))) if lags else 0
