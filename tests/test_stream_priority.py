"""Real-time scheduling requests (ddsp_pd.stream.priority) and the real-time file run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from ddsp_pd.stream.engine import StreamEngine
from ddsp_pd.stream.models import open_live_model
from ddsp_pd.stream.priority import REALTIME_PRIORITY, request_realtime
from ddsp_pd.stream.runner import run_file

DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"


def _in_thread(fn):  # a fresh thread, so that the test runner's own policy never changes
    result = []
    thread = threading.Thread(target=lambda: result.append((fn(), os.sched_getscheduler(0))))
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="no sched_setscheduler")
def test_granted_or_refused_the_policy_matches_the_answer() -> None:
    granted, policy = _in_thread(request_realtime)
    assert policy == (os.SCHED_FIFO if granted else os.SCHED_OTHER)
    if granted:
        assert 1 <= REALTIME_PRIORITY <= 99


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="no sched_setscheduler")
def test_the_variable_turns_the_request_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDSP_PD_NO_REALTIME", "1")
    granted, policy = _in_thread(request_realtime)
    assert not granted and policy == os.SCHED_OTHER


def test_an_impossible_priority_is_refused_quietly() -> None:
    granted, _ = _in_thread(lambda: request_realtime(1000))
    assert granted is False


def test_realtime_file_run_hands_back_an_error_of_the_clock_thread() -> None:
    engine = StreamEngine(open_live_model(DEFAULT), 16000)

    def on_block(k: int, t: float) -> None:
        if k == 3:
            raise RuntimeError("from the patch")

    with pytest.raises(RuntimeError, match="from the patch"):
        run_file(engine, np.zeros(4000, np.float32), 256, realtime=True, on_block=on_block)


def test_realtime_file_run_equals_the_fast_run_without_dropouts() -> None:
    model = open_live_model(DEFAULT)
    t = np.arange(16000) / 16000.0
    x = (0.3 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    fast = run_file(StreamEngine(model, 16000), x, 512, buffer_blocks=8)
    paced = run_file(StreamEngine(model, 16000), x, 512, buffer_blocks=8, realtime=True)
    assert paced.dropouts == 0 and paced.seconds_wall >= 0.9 * paced.seconds_audio
    np.testing.assert_allclose(paced.audio, fast.audio, rtol=0, atol=1e-6)


def test_the_worker_is_set_up_before_the_first_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's set-up (scheduling, the BLAS limit: 31 ms on first use) is not paid
    by the stream's first blocks: a slow one costs no dropout at the start."""
    import time

    from ddsp_pd.stream import runner as runner_module

    def slow_request() -> bool:
        time.sleep(0.15)  # ten blocks of 256 at 16 kHz, more than the slack
        return False

    monkeypatch.setattr(runner_module, "request_realtime", slow_request)
    engine = StreamEngine(open_live_model(DEFAULT), 16000)
    engine.warm_up()
    runner = runner_module.LiveRunner(engine, 256, buffer_blocks=2)
    started = time.perf_counter()
    with runner:
        assert time.perf_counter() - started >= 0.14  # start() waited for the set-up
        x = np.zeros(256, np.float32)
        for _ in range(runner.buffer_blocks):
            runner.callback(x)  # the slack's silence
        time.sleep(0.05)  # the worker has had time for those blocks
        runner.callback(x)
    assert engine.stats.dropouts == 0
