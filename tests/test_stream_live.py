"""``ddsp-pd live``: the runner (overruns, errors), the CLI, --file mode, OSC notes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from test_stream_midi import MELODY, pitch_accuracy, track, write_melody

from ddsp_pd.cli import main
from ddsp_pd.stream.engine import EngineStats
from ddsp_pd.stream.runner import LiveRunner, run_file

ROOT = Path(__file__).resolve().parents[1]
_CLI = [sys.executable, "-c", "from ddsp_pd.cli import main; main()"]


class _EchoEngine:
    """An engine that returns its input, slowly for the blocks listed in ``slow`` and with
    an exception for those in ``broken``."""

    host_rate = 16000
    latency_samples = 0

    def __init__(self, slow=(), broken=(), delay=0.05):
        self.stats = EngineStats()
        self.slow, self.broken, self.delay = set(slow), set(broken), delay
        self.calls = 0

    def process(self, block):
        k = self.calls
        self.calls += 1
        if k in self.slow:
            time.sleep(self.delay)
        if k in self.broken:
            raise RuntimeError("boom")
        self.stats.busy_seconds += 1e-4
        return np.asarray(block, np.float32).copy()


def _paced(runner: LiveRunner, blocks: list[np.ndarray], period: float) -> list[np.ndarray]:
    out = []
    start = time.perf_counter()
    for k, block in enumerate(blocks):
        delay = start + k * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        out.append(runner.callback(block))
    return out


def test_a_late_worker_costs_silence_and_a_count_never_the_latency():
    block, n = 64, 60
    blocks = [np.full(block, k + 1, np.float32) for k in range(n)]
    engine = _EchoEngine(slow={10}, delay=0.05)
    with LiveRunner(engine, block, buffer_blocks=2, limit_threads=False) as runner:
        out = _paced(runner, blocks, 0.004)
        runner.wait_idle(2.0)
    values = [float(o[0]) for o in out]
    assert runner.dropouts >= 1
    assert values[:2] == [0.0, 0.0]  # the slack
    assert values.count(0.0) == 2 + runner.dropouts  # silence only for the late blocks
    # Long after the hiccup, block k plays what went in 2 blocks earlier again (every block
    # of the last 20 that plays; a stall of the host may still cost one of them).
    tail = range(n - 20, n)
    playing = [k for k in tail if values[k] != 0.0]
    assert [values[k] for k in playing] == [float(k - 1) for k in playing]
    assert len(playing) >= 18, [values[k] for k in tail]
    # The callbacks came on time, so these are the worker's, not a burst's (a host that
    # wakes the pacing thread late may add a burst dropout, never all of them).
    assert runner.burst_dropouts < runner.dropouts


def test_a_late_callback_that_catches_up_counts_burst_dropouts():
    """A callback woken late that then catches up hands in blocks faster than any worker
    turns them round: those dropouts are counted as burst dropouts."""
    block, period = 64, 0.004
    # 2 ms per block: the worker cannot keep up with callbacks that come microseconds apart.
    engine = _EchoEngine(slow=range(200), delay=0.002)
    with LiveRunner(engine, block, buffer_blocks=2, limit_threads=False) as runner:
        _paced(runner, [np.zeros(block, np.float32)] * 10, period)
        runner.wait_idle(2.0)
        before = runner.dropouts
        for _ in range(6):  # the late callback's catch-up, back to back
            runner.callback(np.zeros(block, np.float32))
        burst = runner.dropouts - before
        runner.wait_idle(2.0)
    assert burst >= 3
    assert runner.burst_dropouts >= burst


def test_a_growing_slack_keeps_every_block_and_covers_the_next_stall():
    """With --max-buffer the late blocks are played, one block later each, and the slack
    they leave covers the next stall of the same length: no dropout the second time."""
    block, n, period = 64, 120, 0.004
    blocks = [np.full(block, k + 1, np.float32) for k in range(n)]
    engine = _EchoEngine(slow={10, 70}, delay=0.05)  # two 50 ms stalls, 12.5 blocks each
    with LiveRunner(engine, block, buffer_blocks=2, limit_threads=False,
                    max_buffer_blocks=32) as runner:  # fmt: skip
        out = _paced(runner, blocks[:60], period)
        runner.wait_idle(2.0)
        first, grown = runner.dropouts, runner.buffer_blocks
        out += _paced(runner, blocks[60:], period)
        runner.wait_idle(2.0)
    assert first >= 8  # the first stall costs its dropouts ...
    assert grown == 2 + first  # ... and the slack grew by one block for each
    # ... the second costs none (a host that stalls the pacing thread may add one)
    assert runner.dropouts - first <= 1
    assert runner.latency_samples == runner.buffer_blocks * block
    values = [float(o[0]) for o in out]
    heard = [v for v in values if v != 0.0]
    assert heard == [float(k) for k in range(1, len(heard) + 1)]  # in order, none lost
    assert len(heard) == n - runner.buffer_blocks


def test_a_growing_slack_stops_at_its_limit_and_then_drops_late_blocks():
    block, n, period = 64, 80, 0.004
    blocks = [np.full(block, k + 1, np.float32) for k in range(n)]
    engine = _EchoEngine(slow={10}, delay=0.05)
    with LiveRunner(engine, block, buffer_blocks=2, limit_threads=False,
                    max_buffer_blocks=4) as runner:  # fmt: skip
        out = _paced(runner, blocks, period)
        runner.wait_idle(2.0)
    assert runner.buffer_blocks == 4 and runner.latency_samples == 4 * block
    assert runner.dropouts > 2  # two of them grew the slack, the rest were dropped
    values = [float(o[0]) for o in out]
    tail = range(n - 20, n)
    playing = [k for k in tail if values[k] != 0.0]
    assert [values[k] for k in playing] == [float(k - 3) for k in playing]  # 4 blocks late
    assert len(playing) >= 18, [values[k] for k in tail]


def test_a_fixed_slack_does_not_grow():
    engine = _EchoEngine(slow={10}, delay=0.05)
    blocks = [np.full(64, k + 1, np.float32) for k in range(40)]
    with LiveRunner(engine, 64, buffer_blocks=2, limit_threads=False) as runner:
        _paced(runner, blocks, 0.004)
        runner.wait_idle(2.0)
    assert runner.dropouts >= 8
    assert runner.buffer_blocks == 2 == runner.max_buffer_blocks


def test_a_file_run_with_a_growing_slack_keeps_the_end_of_the_input():
    engine = _EchoEngine(slow={5}, delay=0.05)
    x = np.arange(1, 64 * 60 + 1, dtype=np.float32)
    run = run_file(engine, x, 64, buffer_blocks=2, realtime=True, max_buffer_blocks=40)
    assert run.grown_blocks >= 8 and run.dropouts >= run.grown_blocks
    assert run.latency_samples == (2 + run.grown_blocks) * 64
    # Every input sample comes out once, in order: nothing was dropped, the tail is there.
    heard = run.audio[run.audio != 0.0]
    np.testing.assert_array_equal(heard, x)


def test_an_engine_error_plays_silence_and_the_stream_goes_on():
    block = 64
    engine = _EchoEngine(broken={3})
    blocks = [np.full(block, k + 1, np.float32) for k in range(12)]
    with LiveRunner(engine, block, buffer_blocks=1, limit_threads=False) as runner:
        out = []
        for b in blocks:
            out.append(runner.callback(b))
            runner.wait_idle()
    assert runner.errors == 1 and "boom" in runner.last_error
    values = [float(o[0]) for o in out]
    assert values == [0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]


def test_a_full_input_queue_drops_blocks_and_counts_overruns():
    engine = _EchoEngine(slow={0}, delay=0.5)
    runner = LiveRunner(engine, 32, buffer_blocks=1, limit_threads=False).start()
    try:
        for _ in range(60):  # far faster than the stuck worker
            runner.callback(np.zeros(32, np.float32))
        assert runner.overruns > 0
        assert runner.dropouts > 0
    finally:
        runner.stop()


def test_after_a_stall_that_overflows_the_queue_the_stream_plays_again():
    """A worker stuck long enough for input blocks to be dropped (a fresh install compiling
    its kernels) must come back with the same slack, not play silence for ever."""
    block, n = 32, 220
    blocks = [np.full(block, k + 1, np.float32) for k in range(n)]
    engine = _EchoEngine(slow={0}, delay=0.3)  # 0.3 s at 2 ms per block: far over the queue
    with LiveRunner(engine, block, buffer_blocks=2, limit_threads=False) as runner:
        out = _paced(runner, blocks, 0.002)
        runner.wait_idle(2.0)
    assert runner.overruns > 0
    values = [float(o[0]) for o in out]
    # Long after the stall, block k plays what went in 2 blocks earlier again: every block
    # of the last 50 that plays at all has that slack, and nearly all play (a host that
    # stalls the pacing thread for more than the 4 ms of slack may still cost one silence).
    tail = range(n - 50, n)
    playing = [k for k in tail if values[k] != 0.0]
    assert [values[k] for k in playing] == [float(k - 1) for k in playing]
    assert len(playing) >= 45, [values[k] for k in tail]


def test_file_mode_through_the_runner_has_the_runner_latency():
    engine = _EchoEngine()
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    run = run_file(engine, x, 100, buffer_blocks=3)
    assert run.latency_samples == 300 and run.dropouts == 0
    assert run.audio.size == x.size + 300
    np.testing.assert_array_equal(run.audio[300:], x)


# --------------------------------------------------------------------- the command


def test_live_help_names_every_option():
    result = CliRunner().invoke(main, ["live", "--help"])
    assert result.exit_code == 0
    for option in ("--list-devices", "--input-device", "--output-device", "--sample-rate",
                   "--block", "--checkpoint", "--port", "--file", "--output", "--realtime",
                   "--mode", "--octave", "--loudness", "--confidence", "--adjust",
                   "--adjust-mode", "--quiet", "--autotune", "--note-threshold", "--seed",
                   "--notes", "--buffer", "--max-buffer", "--noise-phase",
                   "--frames"):  # fmt: skip
        assert option in result.output, option


@pytest.fixture(scope="module")
def tone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("live") / "tone.wav"
    t = np.arange(int(1.2 * 44100)) / 44100
    sf.write(path, 0.3 * np.sin(2 * np.pi * 330 * t) * np.minimum(1, t / 0.05), 44100)
    return path


def test_dropouts_come_with_what_to_change():
    from ddsp_pd.commands.live import dropout_hint

    assert dropout_hint(0, 0.9, 2) is None
    stalled = dropout_hint(7, 0.1, 2)
    assert "7 blocks came too late" in stalled and "--buffer 4" in stalled
    assert "--max-buffer 4" in stalled
    overloaded = dropout_hint(3, 0.95, 2)
    assert "95%" in overloaded and "--precision fast" in overloaded and "--buffer" not in overloaded
    bursts = dropout_hint(4, 0.1, 2, burst=4)
    assert "bursts of late callbacks" in bursts and "--buffer 4" in bursts
    assert "bursts" not in dropout_hint(4, 0.1, 2, burst=3)


def test_a_file_run_with_dropouts_says_what_to_change(tone_file, tmp_path, monkeypatch):
    import ddsp_pd.stream.runner as runner_module
    from ddsp_pd.stream.runner import FileRun

    def dropping(engine, audio, block, buffer_blocks=None, realtime=False, on_block=None,
                 max_buffer_blocks=None, on_start=None):
        return FileRun(np.zeros(audio.size, np.float32), engine.host_rate, 1.0, 1.0, 0.1,
                       0, dropouts=5, overruns=0, errors=0)  # fmt: skip

    monkeypatch.setattr(runner_module, "run_file", dropping)
    out = tmp_path / "out.wav"
    args = ["live", "--file", str(tone_file), "-o", str(out), "--block", "256", "--buffer", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "dropouts 5" in result.output
    assert "5 blocks came too late" in result.output and "--buffer 6" in result.output


def test_a_file_run_whose_slack_grew_says_so(tone_file, tmp_path, monkeypatch):
    import ddsp_pd.stream.runner as runner_module
    from ddsp_pd.stream.runner import FileRun

    seen = {}

    def growing(engine, audio, block, buffer_blocks=None, realtime=False, on_block=None,
                max_buffer_blocks=None, on_start=None):  # fmt: skip
        seen["max"] = max_buffer_blocks
        return FileRun(np.zeros(audio.size, np.float32), engine.host_rate, 1.0, 1.0, 0.1,
                       5 * 256, dropouts=3, overruns=0, errors=0, grown_blocks=3)  # fmt: skip

    monkeypatch.setattr(runner_module, "run_file", growing)
    out = tmp_path / "out.wav"
    args = ["live", "--file", str(tone_file), "-o", str(out), "--block", "256", "--buffer", "2",
            "--max-buffer", "6"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen["max"] == 6
    assert "the slack grew from 2 to 5 blocks" in result.output
    assert "--buffer 10" in result.output  # the hint counts the slack it ended with


def test_a_max_buffer_below_the_buffer_is_a_usage_error(tone_file, tmp_path):
    args = ["live", "--file", str(tone_file), "-o", str(tmp_path / "o.wav"), "--buffer", "4",
            "--max-buffer", "2"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--max-buffer 2 is below --buffer 4" in result.output


def test_live_file_mode_writes_what_a_listener_hears(tone_file, tmp_path):
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(
        main, ["live", "--file", str(tone_file), "-o", str(out), "--block", "100"]
    )
    assert result.exit_code == 0, result.output
    assert "real-time factor" in result.output and "dropouts 0" in result.output
    assert "came too late" not in result.output
    audio, rate = sf.read(out)
    assert rate == 44100
    assert audio.size > 1.2 * 44100 and np.max(np.abs(audio)) > 1e-3


def test_live_noise_phase_linear_is_the_filter_delay_later(tone_file, tmp_path):
    latency = {}
    for phase in ("minimum", "linear"):
        out = tmp_path / f"{phase}.wav"
        result = CliRunner().invoke(
            main, ["live", "--file", str(tone_file), "-o", str(out), "--noise-phase", phase]
        )
        assert result.exit_code == 0, result.output
        latency[phase] = float(re.search(r"latency ([0-9.]+) ms", result.output).group(1))
    assert latency["linear"] - latency["minimum"] == pytest.approx(62 / 16.0, abs=0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "missing.wav", "-o", "x.wav"], "missing.wav"),
        (["--file", "{tone}", "-o", "x.wav", "-c", "/no/such/model"], "checkpoint"),
        (["--file", "{tone}"], "--file and --output go together"),
        (["--output-device", "no-such-device-here", "--duration", "1"], "device"),
        (["--file", "{tone}", "-o", "x.wav", "--octave", "9"], "octave"),
        (["--file", "{tone}", "-o", "{tone}"], "over the input"),
    ],
)
def test_bad_input_gets_one_line(tone_file, tmp_path, args, message):
    args = [a.replace("{tone}", str(tone_file)) for a in args]
    env = dict(os.environ, JACK_NO_START_SERVER="1")
    result = subprocess.run(
        [*_CLI, "live", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_render_of_a_midi_file_from_the_command_line(tmp_path):
    notes = write_melody(tmp_path / "m.mid")
    out = tmp_path / "m.wav"
    result = CliRunner().invoke(main, ["render", str(tmp_path / "m.mid"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 16000
    assert pitch_accuracy(audio, notes) >= 0.95


def test_live_file_mode_plays_a_midi_file_through_the_note_path(tmp_path):
    notes = write_melody(tmp_path / "m.mid")
    silence = tmp_path / "clock.wav"
    sf.write(silence, np.zeros(int((notes[-1][1] + 0.5) * 16000)), 16000)
    out = tmp_path / "notes.wav"
    result = CliRunner().invoke(
        main,
        ["live", "--file", str(silence), "-o", str(out), "--mode", "midi",
         "--notes", str(tmp_path / "m.mid")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    audio, _ = sf.read(out, dtype="float32")
    accuracy = pitch_accuracy(audio, notes, offset_s=_latency_s(result.output))
    print(f"live --notes: {accuracy:.3f} of note frames within 30 cents")
    assert accuracy >= 0.95


def _latency_s(output: str) -> float:
    line = next(ln for ln in output.splitlines() if "real-time factor" in ln)
    return float(line.split("latency ")[1].split(" ms")[0]) / 1000.0


def _osc(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_osc_notes_in_realtime_file_mode_play_the_notes(tmp_path):
    notes = write_melody(tmp_path / "m.mid")[:4]  # 2.6 s of notes in real time
    lead = 0.5  # seconds of silence before the notes, so they start after the stream
    silence = tmp_path / "clock.wav"
    sf.write(silence, np.zeros(int((notes[-1][1] + lead + 0.6) * 16000)), 16000)
    out = tmp_path / "osc.wav"
    port = _free_port()
    proc = subprocess.Popen(
        [*_CLI, "live", "--file", str(silence), "-o", str(out),
         "--mode", "midi", "--realtime", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(0.2)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while not ready and time.monotonic() < deadline:  # until the server answers
            client.sendto(_osc("/ddsp/hello", client.getsockname()[1]), ("127.0.0.1", port))
            try:
                data, _ = client.recvfrom(65536)
                ready = OscPacket(data).messages[0].message.address == "/ddsp/ready"
            except (TimeoutError, OSError):
                pass
        assert ready, "no /ddsp/ready from ddsp-pd live"
        started = time.monotonic()
        stats = threading.Event()
        reported: list[float] = []

        def listen():
            while not stats.is_set() and time.monotonic() - started < 20:
                try:
                    data, _ = client.recvfrom(65536)
                except (TimeoutError, OSError):
                    continue
                for m in OscPacket(data).messages:
                    if m.message.address == "/ddsp/live/stats":
                        reported.append(float(m.message.params[1]))
                        stats.set()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        client.sendto(_osc("/ddsp/adsr", 0.02, 0.1, 0.8, 0.2), ("127.0.0.1", port))
        for start, end, note in notes:
            for when, velocity in ((start, 100), (end, 0)):
                delay = started + lead + when - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                client.sendto(_osc("/ddsp/note", note, velocity), ("127.0.0.1", port))
        _, err = proc.communicate(timeout=60)
        listener.join(2.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()
    assert proc.returncode == 0, err
    assert stats.is_set(), "no /ddsp/live/stats arrived"
    # The stats' latency is the one the summary prints: the engine's plus the runner's slack.
    summary = float(re.search(r"latency ([0-9.]+) ms, dropouts", err).group(1))
    assert abs(reported[0] - summary) < 0.05, (reported, summary)
    audio, _ = sf.read(out, dtype="float32")
    # The stream's clock and the sender's differ by the start-up: take the best alignment.
    f0 = track(audio)
    best = max(pitch_accuracy(None, notes, lead + o, f0=f0) for o in np.arange(-0.3, 0.6, 0.004))
    print(f"/ddsp/note over OSC: {best:.3f} of note frames within 30 cents")
    assert best >= 0.95, best
    assert len(MELODY) > len(notes)
