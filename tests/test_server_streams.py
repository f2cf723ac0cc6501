"""Live streams of ``ddsp-pd serve`` (docs/osc.md, "Streams"): a real service with the
shipped default model, driven over real UDP by python sockets.

The client sends in lockstep (one block, then wait for its audio), so what the server sees
arrives in a known order and every result is exact: the audio of a stream equals a
:class:`StreamEngine` run here on the same input, with silence where a block was lost.
"""

from __future__ import annotations

import contextlib
import gc
import math
import queue
import re
import shutil
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from ddsp_pd.controls import ControlSettings
from ddsp_pd.server.app import OscService, ServerConfig
from ddsp_pd.server.streams import decode_block
from ddsp_pd.stream.engine import EngineSettings, StreamEngine
from ddsp_pd.stream.models import LiveModel, open_live_model
from ddsp_pd.stream.pitch import yin_frames
from ddsp_pd.stream.response import model_response_samples
from tests.test_server_support import REPLY_TIMEOUT, OscClient, Reply

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
RATE = 48000
BLOCK = 256
#: What the server's controls are at start (docs/osc.md), as the engine takes them.
SERVER_DEFAULTS = ControlSettings(
    octave=0.0, loudness_db=0.0, confidence=0.2, adjust=True, quiet=20.0, autotune=0.0,
    note_threshold=1.0,
)  # fmt: skip
#: Opening the first stream may compile kernels.
OPEN_TIMEOUT = 120.0


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def render_engine() -> Any:
    """One render engine for every service here, so the checkpoint is loaded once."""
    from ddsp_pd.transfer import Engine

    return Engine(checkpoint_dirs=[CHECKPOINTS], warm_up=True)


@pytest.fixture(scope="module")
def live_model() -> LiveModel:
    """The default model opened here, independently of the server, for direct runs."""
    return open_live_model(CHECKPOINTS / "default")


@contextlib.contextmanager
def serving(engine: Any, tmp: Path, **config: Any) -> Iterator[OscService]:
    cfg = ServerConfig(
        port=0, host="127.0.0.1", output_dir=tmp / "out", checkpoint_dirs=[CHECKPOINTS], **config
    )
    service = OscService(engine, cfg)
    try:
        service.preload("default")
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def service(render_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OscService]:
    with serving(render_engine, tmp_path_factory.mktemp("streams")) as svc:
        yield svc


@pytest.fixture
def client(service: OscService) -> Iterator[StreamClient]:
    c = StreamClient(("127.0.0.1", service.address[1]))
    try:
        yield c
        # The next test starts with no stream of this one open.
        for ident in sorted(c.opened):
            if service.streams.get(c.address, ident) is not None:
                c.request("/ddsp/stream/close", float(ident), reply="/ddsp/stream/closed")
        assert service.streams.wait_idle()
    finally:
        c.close()


# --- the client ---------------------------------------------------------------------------------
def block_message(ident: float, seq: float, samples: Any, tags: str | None = None) -> bytes:
    """``/ddsp/stream/block`` with float arguments, as Pd sends it (or ``tags`` per argument)."""
    builder = OscMessageBuilder(address="/ddsp/stream/block")
    args = [ident, seq, *samples]
    for index, value in enumerate(args):
        tag = tags[index] if tags is not None else "f"
        if tag == "s":
            builder.add_arg(str(value), OscMessageBuilder.ARG_TYPE_STRING)
        elif tag == "i":
            builder.add_arg(int(value), OscMessageBuilder.ARG_TYPE_INT)
        else:
            builder.add_arg(float(value), OscMessageBuilder.ARG_TYPE_FLOAT)
    return builder.build().dgram


class StreamClient(OscClient):
    """An OSC client that opens streams and sends blocks in lockstep."""

    def __init__(self, server: tuple[str, int]) -> None:
        super().__init__(server)
        self.opened: set[int] = set()

    def open(self, ident: int, block: int = BLOCK, rate: int = RATE, mode: str = "audio") -> Reply:
        start = self.mark()
        self.send("/ddsp/stream/open", float(ident), float(block), float(rate), mode)
        self.opened.add(ident)
        return self.wait_for("/ddsp/stream/opened", start, OPEN_TIMEOUT, self._of(ident))

    @staticmethod
    def _of(ident: int, seq: int | None = None) -> Any:
        return lambda r: r.args[0] == ident and (seq is None or r.args[1] == seq)

    def send_block(self, ident: int, seq: int, samples: np.ndarray) -> None:
        self.send_raw(block_message(ident, seq, samples))

    def audio(self, ident: int, seq: int, since: int = 0) -> np.ndarray:
        """The audio reply of one SEQ (waits for it)."""
        reply = self.wait_for("/ddsp/stream/audio", since, REPLY_TIMEOUT, self._of(ident, seq))
        assert reply.types == "ii" + "f" * (len(reply.args) - 2)
        return np.asarray(reply.args[2:], np.float32)

    def exchange(self, ident: int, seq: int, samples: np.ndarray) -> np.ndarray:
        """Send one block, return its audio."""
        start = self.mark()
        self.send_block(ident, seq, samples)
        return self.audio(ident, seq, start)

    def audio_replies(self, ident: int, since: int = 0) -> list[int]:
        """The SEQs of the audio replies of a stream, in arrival order."""
        return [r.args[1] for r in self.since(since, "/ddsp/stream/audio") if r.args[0] == ident]

    def stats(self, ident: int, since: int = 0, blocks: int | None = None) -> dict[str, Any]:
        """The first ``/ddsp/stream/stats`` after ``since`` (that counts ``blocks``)."""

        def wanted(r: Reply) -> bool:
            return r.args[0] == ident and (blocks is None or r.args[1] == blocks)

        reply = self.wait_for("/ddsp/stream/stats", since, 5.0, wanted)
        names = ("id", "blocks", "lost", "late", "duplicates", "overruns", "rtf", "latency")
        return dict(zip(names, reply.args, strict=True))

    def error(self, since: int) -> Reply:
        return self.wait_for("/ddsp/error", since)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


# --- signals and reference runs -------------------------------------------------------------
def tone(seconds: float, freq: float = 220.0, rate: int = RATE) -> np.ndarray:
    """A sine with a fade in and out (a pitched input the analysis tracks)."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (0.4 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def blocks_of(x: np.ndarray, block: int = BLOCK) -> list[np.ndarray]:
    return [x[i : i + block] for i in range(0, len(x) - block + 1, block)]


def direct(
    model: LiveModel,
    blocks: list[np.ndarray],
    mode: str = "audio",
    before: dict[int, list[tuple[str, tuple[Any, ...]]]] | None = None,
    rate: int = RATE,
    controls: ControlSettings = SERVER_DEFAULTS,
) -> np.ndarray:
    """The engine's output for these blocks; ``before[k]``: engine calls made before block k."""
    engine = StreamEngine(model, rate, EngineSettings(controls=controls, mode=mode))
    out = []
    for k, x in enumerate(blocks):
        for name, args in (before or {}).get(k, []):
            getattr(engine, name)(*args)
        out.append(engine.process(x))
    return np.concatenate(out)


def f0_estimate(audio: np.ndarray, rate: int = RATE) -> float:
    """The median YIN f0 (Hz) of the voiced 2048-sample windows of ``audio``."""
    size, hop = 2048, 1024
    windows = np.stack([audio[i : i + size] for i in range(0, len(audio) - size + 1, hop)])
    f0, _ = yin_frames(windows, rate, 60.0, 1000.0)
    voiced = f0[f0 > 0]
    assert voiced.size >= len(f0) // 2, "the output is mostly unvoiced"
    return float(np.median(voiced))


def octaves_off(f0: float, reference: float) -> float:
    """How far ``f0`` is from ``reference`` shifted by whole octaves, in octaves."""
    octaves = math.log2(f0 / reference)
    return abs(octaves - round(octaves))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# --- the tests --------------------------------------------------------------------------------
def test_open_answers_latency_and_audio_equals_the_engine(
    client: StreamClient, live_model: LiveModel, service: OscService
) -> None:
    opened = client.open(11)
    settings = EngineSettings(controls=SERVER_DEFAULTS)
    reference = StreamEngine(live_model, RATE, settings)
    response = model_response_samples(live_model, RATE, settings)
    assert opened.args == [11, reference.latency_samples + response, BLOCK, RATE]
    assert opened.types == "iiii"
    blocks = blocks_of(tone(1.5))
    got = [client.exchange(11, k, x) for k, x in enumerate(blocks)]
    assert all(len(y) == BLOCK for y in got)
    out = np.concatenate(got)
    expected = direct(live_model, blocks)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    latency = opened.args[1]
    assert rms(out[latency + RATE // 4 : latency + RATE]) > 0.01  # the tone's transfer
    assert client.audio_replies(11) == list(range(len(blocks)))
    stats = client.stats(11, blocks=len(blocks))
    assert (stats["lost"], stats["late"], stats["duplicates"], stats["overruns"]) == (0, 0, 0, 0)
    assert stats["latency"] == latency and stats["rtf"] > 0
    assert service.streams.get(client.address, 11) is not None


def test_lost_blocks_are_concealed_with_silence(
    client: StreamClient, live_model: LiveModel
) -> None:
    client.open(12)
    blocks = blocks_of(tone(0.8))
    lost = {20, 21, 40}
    start = client.mark()
    out = {}
    for k, x in enumerate(blocks):
        if k in lost:
            continue
        mark = client.mark()
        client.send_block(12, k, x)
        out[k] = client.audio(12, k, mark)
    # The concealed SEQs are answered too, in order, before the block after them.
    assert client.audio_replies(12, start) == list(range(len(blocks)))
    for k in lost:
        out[k] = client.audio(12, k, start)
    heard = [x if k not in lost else np.zeros_like(x) for k, x in enumerate(blocks)]
    expected = direct(live_model, heard)
    np.testing.assert_allclose(np.concatenate([out[k] for k in range(len(blocks))]), expected,
                               rtol=0, atol=1e-5)  # fmt: skip
    stats = client.stats(12, start, blocks=len(blocks))
    assert stats["lost"] == 3 and stats["late"] == 0 and stats["duplicates"] == 0


def test_late_and_duplicated_blocks_are_dropped_and_counted(
    client: StreamClient, live_model: LiveModel
) -> None:
    client.open(13)
    blocks = blocks_of(tone(0.5))
    start = client.mark()
    for k in range(6):
        client.exchange(13, k, blocks[k])
    client.exchange(13, 7, blocks[7])  # 6 is concealed
    client.send_block(13, 6, blocks[6])  # late: dropped
    client.send_block(13, 7, blocks[7])  # duplicate
    client.send_block(13, 3, blocks[3])  # duplicate
    client.send_block(13, 6, blocks[6])  # late again: now a duplicate
    for k in range(8, 12):
        client.exchange(13, k, blocks[k])
    # One reply per SEQ: nothing for the dropped ones.
    assert client.audio_replies(13, start) == list(range(12))
    stats = client.stats(13, start, blocks=12)
    assert (stats["lost"], stats["late"], stats["duplicates"]) == (1, 1, 3)
    heard = [x if k != 6 else np.zeros_like(x) for k, x in enumerate(blocks[:12])]
    got = np.concatenate([client.audio(13, k, start) for k in range(12)])
    np.testing.assert_allclose(got, direct(live_model, heard), rtol=0, atol=1e-5)


def test_reordered_blocks(client: StreamClient, live_model: LiveModel) -> None:
    client.open(14)
    blocks = blocks_of(tone(0.3))
    start = client.mark()
    for k in range(4):
        client.exchange(14, k, blocks[k])
    client.exchange(14, 5, blocks[5])  # 5 before 4: 4 is concealed
    client.send_block(14, 4, blocks[4])  # then 4 is late
    client.exchange(14, 6, blocks[6])
    assert client.audio_replies(14, start) == list(range(7))
    stats = client.stats(14, start, blocks=7)
    assert (stats["lost"], stats["late"], stats["duplicates"]) == (1, 1, 0)
    heard = [x if k != 4 else np.zeros_like(x) for k, x in enumerate(blocks[:7])]
    got = np.concatenate([client.audio(14, k, start) for k in range(7)])
    np.testing.assert_allclose(got, direct(live_model, heard), rtol=0, atol=1e-5)


def test_two_streams_from_two_sockets_are_independent(
    client: StreamClient, service: OscService, live_model: LiveModel
) -> None:
    other = StreamClient(("127.0.0.1", service.address[1]))
    try:
        # The same ID from two sockets: two streams.
        client.open(15)
        other.open(15)
        assert service.streams.get(client.address, 15) is not service.streams.get(other.address, 15)
        a = blocks_of(tone(1.0, 220.0))
        b = blocks_of(tone(1.0, 330.0))
        out_a, out_b = [], []
        for k in range(len(a)):
            mark_a, mark_b = client.mark(), other.mark()
            client.send_block(15, k, a[k])
            other.send_block(15, k, b[k])
            out_a.append(client.audio(15, k, mark_a))
            out_b.append(other.audio(15, k, mark_b))
        np.testing.assert_allclose(np.concatenate(out_a), direct(live_model, a), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.concatenate(out_b), direct(live_model, b), atol=1e-5, rtol=0)
        # Each socket got only its own stream's audio.
        assert len(client.since(0, "/ddsp/stream/audio")) == len(a)
        assert len(other.since(0, "/ddsp/stream/audio")) == len(b)
        # Each follows its own input's pitch (auto-adjust may move it by whole octaves).
        late_a, late_b = np.concatenate(out_a)[RATE // 2 :], np.concatenate(out_b)[RATE // 2 :]
        assert octaves_off(f0_estimate(late_a), 220.0) < 0.04
        assert octaves_off(f0_estimate(late_b), 330.0) < 0.04
    finally:
        other.close()


def test_a_vanished_client_expires_and_its_stream_is_freed(
    render_engine: Any, tmp_path: Path
) -> None:
    with serving(render_engine, tmp_path, stream_expiry=0.5) as svc:
        c = StreamClient(("127.0.0.1", svc.address[1]))
        try:
            c.open(16)
            for k, x in enumerate(blocks_of(tone(0.2))):
                c.exchange(16, k, x)
            stream = svc.streams.get(c.address, 16)
            assert stream is not None
            engine = weakref.ref(stream.engine)
            del stream
            start = c.mark()
            # The client stops sending: the stream closes by itself.
            c.wait_for("/ddsp/stream/closed", start, where=lambda r: r.args == [16])
            assert len(svc.streams) == 0
            gc.collect()
            assert engine() is None
            mark = c.mark()
            c.send_block(16, 3, np.zeros(BLOCK, np.float32))
            assert c.error(mark).args[0] == "stream"
            c.ping()
        finally:
            c.close()


def test_close_frees_the_stream(client: StreamClient, service: OscService) -> None:
    client.open(17)
    client.exchange(17, 0, np.zeros(BLOCK, np.float32))
    stream = service.streams.get(client.address, 17)
    assert stream is not None
    engine = weakref.ref(stream.engine)
    del stream
    closed = client.request("/ddsp/stream/close", 17.0, reply="/ddsp/stream/closed")
    assert closed.args == [17]
    assert service.streams.get(client.address, 17) is None
    assert service.streams.wait_idle()
    gc.collect()
    assert engine() is None
    mark = client.mark()
    client.send("/ddsp/stream/close", 17.0)
    assert client.error(mark).args[0] == "stream"


def test_bad_requests_get_stream_errors_and_the_server_keeps_serving(
    client: StreamClient, live_model: LiveModel
) -> None:
    client.open(18)
    blocks = blocks_of(tone(0.3))
    start = client.mark()
    client.exchange(18, 0, blocks[0])
    bad = [
        block_message(18, 1, blocks[1][:-1]),  # one sample short
        block_message(18, 1, blocks[1], tags="ff" + "f" * 100 + "s" + "f" * 155),  # a symbol
        block_message(99, 1, blocks[1]),  # no such stream
        block_message(18, 1.5, blocks[1]),  # SEQ not whole
    ]
    messages = []
    for data in bad:
        mark = client.mark()
        client.send_raw(data)
        reply = client.error(mark)
        assert reply.args[0] == "stream"
        messages.append(reply.args[1])
        client.ping()
    assert "256" in messages[0] and "255" in messages[0]
    assert "sample 101" in messages[1]
    assert "99" in messages[2]
    for args in [(18.0, 31.0, 48000.0, "audio"), (18.0, 256.0, 4000.0, "audio"),
                 (18.0, 256.0, 48000.0, "video"), (0.0, 256.0, 48000.0, "audio"),
                 (18.0, 256.0)]:  # fmt: skip
        mark = client.mark()
        client.send("/ddsp/stream/open", *args)
        assert client.error(mark).args[0] == "stream", args
    mark = client.mark()
    client.send("/ddsp/stream/note", 18.0, 60.0, 100.0)  # an audio-mode stream
    assert "audio mode" in client.error(mark).args[1]
    # The refused block counts as missing: concealed when the next good one comes.
    client.exchange(18, 2, blocks[2])
    assert client.audio_replies(18, start) == [0, 1, 2]
    heard = [blocks[0], np.zeros(BLOCK, np.float32), blocks[2]]
    got = np.concatenate([client.audio(18, k, start) for k in range(3)])
    np.testing.assert_allclose(got, direct(live_model, heard), rtol=0, atol=1e-5)
    assert client.stats(18, start, blocks=3)["lost"] == 1


def test_control_changes_reach_the_streams(
    client: StreamClient, live_model: LiveModel, service: OscService
) -> None:
    # Auto-adjust would move the octave back (it fits the pitch to the model's range).
    assert client.request("/ddsp/adjust", 0, reply="/ddsp/state").args == ["adjust", 0]
    blocks = blocks_of(tone(1.6))
    change = len(blocks) // 2
    got = []
    try:
        client.open(19)  # opened with the server's controls as they are now
        for k, x in enumerate(blocks):
            if k == change:
                state = client.request("/ddsp/octave", 1.0, reply="/ddsp/state")
                assert state.args == ["octave", 1.0]
            got.append(client.exchange(19, k, x))
    finally:
        client.request("/ddsp/octave", 0.0, reply="/ddsp/state")
        client.request("/ddsp/adjust", 1, reply="/ddsp/state")
    out = np.concatenate(got)
    expected = direct(
        live_model,
        blocks,
        before={change: [("set_control", ("octave", 1.0))]},
        controls=replace(SERVER_DEFAULTS, adjust=False),
    )
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    before = f0_estimate(out[change * BLOCK - RATE // 3 : change * BLOCK])
    after = f0_estimate(out[-RATE // 3 - 4000 : -4000])
    assert before == pytest.approx(220.0, rel=0.03)
    assert after == pytest.approx(440.0, rel=0.03)


def test_midi_mode_plays_the_note(client: StreamClient, live_model: LiveModel) -> None:
    opened = client.open(20, mode="midi")
    silence = np.zeros(BLOCK, np.float32)
    quiet = [client.exchange(20, k, silence) for k in range(20)]
    assert rms(np.concatenate(quiet)) < 1e-3  # no note yet
    client.send("/ddsp/stream/note", 20.0, 57.0, 100.0)  # A3, 220 Hz
    client.ping()  # handled, so it is in the engine before the next block
    out = np.concatenate([client.exchange(20, k, silence) for k in range(20, 220)])
    assert opened.args[1] > 0
    assert rms(out[-RATE // 2 :]) > 0.01
    assert f0_estimate(out[-RATE // 2 :]) == pytest.approx(220.0, rel=0.029)  # 50 cents
    # /ddsp/note without an ID reaches the midi-mode streams of the sender.
    client.send("/ddsp/note", 57.0, 0.0)  # note off
    client.send("/ddsp/note", 64.0, 100.0)  # E4, 329.6 Hz
    client.ping()
    out = np.concatenate([client.exchange(20, k, silence) for k in range(220, 420)])
    assert f0_estimate(out[-RATE // 2 :]) == pytest.approx(329.63, rel=0.029)


def test_more_streams_than_allowed_are_refused(render_engine: Any, tmp_path: Path) -> None:
    with serving(render_engine, tmp_path, max_streams=2) as svc:
        c = StreamClient(("127.0.0.1", svc.address[1]))
        try:
            c.open(1)
            c.open(2)
            c.open(1)  # a re-open is no new stream
            mark = c.mark()
            c.send("/ddsp/stream/open", 3.0, 256.0, 48000.0, "audio")
            assert c.error(mark).args[0] == "busy"
            assert len(svc.streams) == 2
        finally:
            c.close()


def test_a_new_checkpoint_rebuilds_the_streams(
    render_engine: Any, tmp_path: Path, live_model: LiveModel
) -> None:
    copy = tmp_path / "copy_of_default"
    shutil.copytree(CHECKPOINTS / "default", copy)
    with serving(render_engine, tmp_path) as svc:
        c = StreamClient(("127.0.0.1", svc.address[1]))
        try:
            first = c.open(21)
            blocks = blocks_of(tone(0.4))
            for k in range(10):
                c.exchange(21, k, blocks[k])
            engine = svc.streams.get(c.address, 21).engine
            start = c.mark()
            c.send("/ddsp/checkpoint", str(copy))
            again = c.wait_for("/ddsp/stream/opened", start, OPEN_TIMEOUT)
            assert again.args == first.args
            assert svc.streams.get(c.address, 21).engine is not engine
            # SEQ goes on; the new engine starts from silence again, as a fresh stream.
            got = [c.exchange(21, k, blocks[k]) for k in range(10, len(blocks))]
            np.testing.assert_allclose(np.concatenate(got), direct(live_model, blocks[10:]),
                                       rtol=0, atol=1e-5)  # fmt: skip
        finally:
            c.close()


def test_decode_block_reads_floats_and_ints_like_python_osc() -> None:
    samples = [2.0, -1.25, 3.0, float("nan")]
    data = block_message(7, 9, samples, tags="ifif" + "f" * 2)
    ident, seq, x = decode_block(data)
    parsed = OscMessage(data).params
    assert (ident, seq) == (7.0, 9.0) == tuple(float(v) for v in parsed[:2])
    np.testing.assert_array_equal(x, [2.0, -1.25, 3.0, 0.0])  # NaN zeroed
    assert decode_block(block_message(7, 9, samples, tags="ffsfff")) is None
    assert decode_block(b"/ddsp/stream/blockx\0\0\0,f\0\0" + bytes(4)) is None


def test_real_serve_streams_end_to_end(tmp_path: Path, live_model: LiveModel) -> None:
    """``ddsp-pd serve`` as users start it: open, blocks in, audio out, close."""
    main = "from ddsp_pd.cli import main; main()"
    command = [sys.executable, "-c", main, "serve", "-p", "0", "-o", str(tmp_path)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
        port = None
        while port is None:
            try:
                line = lines.get(timeout=OPEN_TIMEOUT)
            except queue.Empty:
                pytest.fail("the server did not say where it listens")
            found = re.search(r"listening on udp [\d.]+:(\d+)", line)
            port = int(found.group(1)) if found else None
        c = StreamClient(("127.0.0.1", port))
        try:
            opened = c.open(5, block=64)
            blocks = blocks_of(tone(0.5), 64)
            got = np.concatenate([c.exchange(5, k, x) for k, x in enumerate(blocks)])
            np.testing.assert_allclose(got, direct(live_model, blocks), rtol=0, atol=1e-5)
            settings = EngineSettings(controls=SERVER_DEFAULTS)
            response = model_response_samples(live_model, RATE, settings)
            assert opened.args[1] == StreamEngine(live_model, RATE).latency_samples + response
            assert c.request("/ddsp/stream/close", 5.0, reply="/ddsp/stream/closed").args == [5]
        finally:
            c.close()
    finally:
        proc.terminate()
        proc.wait(20)


def test_an_open_repeated_before_any_block_does_not_reset_the_stream(
    client: StreamClient, live_model: LiveModel, service: OscService
) -> None:
    """As [ddsp.live~] does while it waits: open twice, then stream at once after the first
    `opened`. The second open must not reset the stream: a reset would drop the blocks on
    their way and shift the output against the client's SEQ."""
    start = client.mark()
    client.send("/ddsp/stream/open", 31.0, float(BLOCK), float(RATE), "audio")
    client.send("/ddsp/stream/open", 31.0, float(BLOCK), float(RATE), "audio")
    first = client.wait_for("/ddsp/stream/opened", start, OPEN_TIMEOUT, client._of(31))
    blocks = blocks_of(tone(0.6))
    burst = 8  # sent without waiting, as a client streaming in real time does
    for k in range(burst):
        client.send_block(31, k, blocks[k])
    got = [client.audio(31, k, start) for k in range(burst)]
    got += [client.exchange(31, k, x) for k, x in enumerate(blocks) if k >= burst]
    replies = [r for r in client.since(start, "/ddsp/stream/opened") if r.args[0] == 31]
    assert len(replies) == 2 and replies[0].args == replies[1].args == first.args
    np.testing.assert_allclose(np.concatenate(got), direct(live_model, blocks), rtol=0, atol=1e-5)
    stats = client.stats(31, blocks=len(blocks))
    assert (stats["lost"], stats["late"], stats["duplicates"]) == (0, 0, 0)
