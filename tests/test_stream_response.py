"""The model response (ddsp_pd.stream.response): what a click measurement adds to the
engine's algorithmic latency, which the server reports to [ddsp.live~]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddsp_pd.controls import ControlSettings
from ddsp_pd.stream.engine import EngineSettings, StreamEngine
from ddsp_pd.stream.models import open_live_model
from ddsp_pd.stream.response import click_lag, click_train, model_response_samples
from ddsp_pd.stream.runner import run_file

DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
RATE = 48000


def test_click_lag_finds_a_known_delay() -> None:
    clicks = click_train(RATE, seconds=2.0, period=0.2)
    rng = np.random.default_rng(3)
    answer = np.zeros(clicks.size + 4000, np.float32)
    answer[np.flatnonzero(clicks) + 777] = 1.0
    # A decaying burst after each click, plus noise: the peak is the burst's start.
    answer = np.convolve(answer, np.exp(-np.arange(300) / 40.0))[: answer.size]
    answer += 0.05 * rng.standard_normal(answer.size)
    assert click_lag(clicks, answer, 2000) == 777


def test_click_lag_of_silence_is_zero() -> None:
    clicks = click_train(RATE, seconds=1.0)
    assert click_lag(clicks, np.zeros(10, np.float32), 2000) == 0


def test_default_model_response_matches_a_live_click_run() -> None:
    """The measured response is what a click train through the live path shows beyond the
    engine's latency (within one model frame), and a plausible few milliseconds."""
    model = open_live_model(DEFAULT)
    settings = EngineSettings(controls=ControlSettings(adjust=False))
    response = model_response_samples(model, RATE, settings)
    assert 0.001 * RATE <= response <= 0.02 * RATE
    clicks = click_train(RATE, seconds=3.0, period=0.25)
    engine = StreamEngine(model, RATE, settings)
    run = run_file(engine, clicks, 256)
    lag = click_lag(clicks, run.audio, run.latency_samples + int(0.1 * RATE))
    frame = RATE // 250
    assert abs((lag - run.latency_samples) - response) <= frame


def test_midi_mode_has_no_response_term() -> None:
    model = open_live_model(DEFAULT)
    assert model_response_samples(model, RATE, EngineSettings(mode="midi")) == 0


@pytest.mark.parametrize("rate", [16000, 44100])
def test_response_scales_with_the_host_rate(rate: int) -> None:
    model = open_live_model(DEFAULT)
    settings = EngineSettings(controls=ControlSettings(adjust=False))
    at_48k = model_response_samples(model, RATE, settings) / RATE
    other = model_response_samples(model, rate, settings) / rate
    assert abs(at_48k - other) <= 1.0 / 250  # one frame
