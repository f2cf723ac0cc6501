"""``ddsp-pd live`` on a real (virtual) audio device: a JACK dummy server.

The test starts its own ``jackd -d dummy`` under a unique server name, runs ``ddsp-pd live``
against it (PortAudio's JACK host API), plays a known tone into the stream's input from a
second JACK client and records what comes out. CI installs ``jackd2`` (scripts/setup.sh)
and must not skip this (``DDSP_PD_REQUIRE_FIXTURES=1``); elsewhere it skips without jackd.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from conftest import REQUIRE_FIXTURES

from ddsp_pd.pitch import get_tracker
from ddsp_pd.stream.resample import StreamResampler

RATE = 48000
TONE_HZ = 330.0
_CLI = [sys.executable, "-c", "from ddsp_pd.cli import main; main()"]

if shutil.which("jackd") is None:
    if REQUIRE_FIXTURES:
        raise RuntimeError("CI: jackd (Debian jackd2) is missing; scripts/setup.sh installs it")
    pytest.skip("jackd not installed (apt-get install jackd2)", allow_module_level=True)
jack = pytest.importorskip("jack")


@pytest.fixture(scope="module")
def jack_server():
    name = f"ddsp-test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_DEFAULT_SERVER=name)
    proc = subprocess.Popen(
        ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", str(RATE), "-p", "256"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            probe = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10)
            if probe.returncode == 0 and b"system:playback_1" in probe.stdout:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jackd did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.2)
        yield name, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cli(env, *args, timeout=60):
    return subprocess.run([*_CLI, "live", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_devices_are_listed_and_a_refused_rate_is_one_line(jack_server):
    _, env = jack_server
    listed = _cli(env, "--list-devices")
    assert listed.returncode == 0 and "system (JACK Audio Connection Kit)" in listed.stdout
    refused = _cli(env, "--sample-rate", "44100", "--duration", "1", "--port", "0")
    assert refused.returncode != 0
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "refuses 44100 Hz" in errors[0], refused.stderr
    unknown = _cli(env, "--input-device", "no-such-device", "--duration", "1", "--port", "0")
    assert unknown.returncode != 0 and "no audio device named like" in unknown.stderr


def test_a_tone_played_into_the_stream_comes_out_as_the_model_playing_it(jack_server):
    name, env = jack_server
    proc = subprocess.Popen(
        # --max-buffer: the growing slack on a real device too (a dropout on this shared
        # machine then costs no block of the tone).
        [*_CLI, "live", "--block", "256", "--duration", "60", "--port", "0", "--no-adjust",
         "--max-buffer", "6"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = jack.Client("ddsp-test-player", servername=name, no_start_server=True)
    out_port = client.outports.register("tone")
    in_port = client.inports.register("heard")
    recorded: list[np.ndarray] = []
    phase = [0]

    @client.set_process_callback
    def process(frames: int) -> None:
        n = np.arange(phase[0], phase[0] + frames)
        phase[0] += frames
        out_port.get_array()[:] = 0.3 * np.sin(2 * np.pi * TONE_HZ * n / client.samplerate)
        recorded.append(in_port.get_array().copy())

    try:
        with client:
            deadline = time.monotonic() + 45
            while not any(p.name == "PortAudio:in_0" for p in client.get_ports("PortAudio")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ddsp-pd live did not open its stream: {proc.stderr.read()}")
                time.sleep(0.1)
            for port in client.get_all_connections("PortAudio:in_0"):
                client.disconnect(port, "PortAudio:in_0")  # the dummy capture is silence
            client.connect(out_port, "PortAudio:in_0")
            client.connect("PortAudio:out_0", in_port)
            recorded.clear()
            # Wait for the model's answer (a fresh clone compiles its kernels first), then
            # keep recording for 3 s of it.
            onset = None
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                time.sleep(0.25)
                if onset is None:
                    chunks = list(recorded)
                    loud = [i for i, c in enumerate(chunks) if np.sqrt(np.mean(c**2)) > 1e-3]
                    if loud:
                        onset, heard_since = loud[0], time.monotonic()
                elif time.monotonic() - heard_since > 3.0:
                    break
        proc.terminate()  # ddsp-pd live stops cleanly on SIGTERM, as on Ctrl-C
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "real-time factor" in err and "dropouts" in err
    grew = re.search(r"the slack grew from 2 to (\d+) blocks", err)
    assert grew is None or int(grew.group(1)) <= 6, err
    assert re.search(r"its answer to an attack peaks \d+\.\d ms later", err), err
    assert onset is not None, f"nothing came out of the stream in 40 s: {err}"
    audio = np.concatenate(recorded[onset:]).astype(np.float32)
    assert audio.size > 2 * RATE
    heard = audio[RATE // 2 :]  # after the model has settled on the tone
    assert np.sqrt(np.mean(heard**2)) > 1e-3
    at_16k = StreamResampler(RATE, 16000).process(heard)
    f0, conf = get_tracker("praat").track(at_16k, 16000, 250.0, at_16k.size // 64)
    voiced = conf > 0.5
    assert voiced.mean() > 0.5
    cents = 1200 * np.log2(np.median(f0[voiced]) / TONE_HZ)
    assert abs(cents) < 50, cents
