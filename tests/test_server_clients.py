"""Several clients at once: who gets which reply, error limits, expiry (docs/osc.md, "Clients")."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from test_server_support import OscClient, build, running_service, settle, write_tone

from ddsp_pd.server.clients import BusyError, ClientTable, ErrorLimiter
from ddsp_pd.server.replies import ReplySender

#: Datagrams the flooder sends before waiting for the server to have read them (keeps the
#: kernel's receive buffer, and so the Pd-like client's requests, out of danger).
BATCH = 50


def _wait_received(service, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while service.dispatcher.received < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"server read {service.dispatcher.received} of {count}")
        time.sleep(0.001)


def _junk(rng: random.Random, wav_missing: str) -> bytes:
    """One datagram of a flood: random bytes, broken bundles, or a request that is refused."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    if kind == 1:
        return b"#bundle\x00" + rng.randbytes(rng.randrange(0, 64))
    if kind == 2:
        return build("/ddsp/octave", 9.0 + rng.random())
    if kind == 3:
        return build(f"/ddsp/nonsense{rng.randrange(100)}")
    if kind == 4:
        return build("/ddsp/input", wav_missing)
    return build("/ddsp/hello", 0)


class PdLike:
    """Like Pd's patch: sends from one socket ([netsend]), hears replies on another."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.sender = OscClient(server)
        self.listener = OscClient(server)

    def hello(self) -> None:
        start = self.listener.mark()
        self.sender.send("/ddsp/hello", self.listener.port)
        self.listener.wait_for("/ddsp/ready", start)

    def request(self, address: str, *args: object, reply: str, timeout: float = 10.0):
        start = self.listener.mark()
        self.sender.send(address, *args)
        return self.listener.wait_for(reply, start, timeout)

    def close(self) -> None:
        self.sender.close()
        self.listener.close()


def test_a_flooder_gets_its_own_errors_and_a_pd_client_still_renders(tmp_path: Path) -> None:
    rng = random.Random(9)
    with running_service(tmp_path) as (service, flooder, _):
        pd = PdLike(service.address)
        try:
            wav = write_tone(tmp_path / "in.wav", seconds=0.2)
            missing = str(tmp_path / "missing.wav")
            base = service.dispatcher.received
            sent = 0
            for i in range(3000):
                flooder.send_raw(_junk(rng, missing))
                sent += 1
                if i == 1000:
                    # Mid-flood: Pd connects and starts a render (3 requests, all read below).
                    pd.sender.send("/ddsp/hello", pd.listener.port)
                    pd.sender.send("/ddsp/input", str(wav))
                    pd.sender.send("/ddsp/render")
                    sent += 3
                if sent % BATCH == 0:
                    _wait_received(service, base + sent)
            _wait_received(service, base + sent)
            done = pd.listener.wait_for("/ddsp/done")
            audio, rate = sf.read(done.args[0], dtype="float32")
            assert len(audio) == done.args[1] and rate == done.args[2]
            pd.request("/ddsp/ping", reply="/ddsp/pong")
            settle(service, flooder)
            # The Pd-like client heard its own replies and the render, and no error at all.
            heard = {r.address for r in pd.listener.since(0)}
            assert {"/ddsp/ready", "/ddsp/state", "/ddsp/progress", "/ddsp/done"} <= heard
            assert pd.listener.since(0, "/ddsp/error") == []
            assert pd.sender.since(0) == []
            # The flooder got its errors, up to its limit; the rest were counted.
            errors = flooder.since(0, "/ddsp/error")
            assert errors and len(errors) < 2000
            assert service.dropped()["error replies over the rate limit"] > 0
            assert flooder.since(0, "/ddsp/done") == []
        finally:
            pd.close()


def test_a_second_hello_adds_a_client_instead_of_taking_the_replies(tmp_path: Path) -> None:
    with running_service(tmp_path) as (service, first, _):
        second = OscClient(service.address)
        try:
            first.request("/ddsp/hello", first.port, reply="/ddsp/ready")
            second.request("/ddsp/hello", second.port, reply="/ddsp/ready")
            # Replies to a request go to the requester only.
            first.ping()
            assert second.since(0, "/ddsp/pong") == []
            second.ping()
            assert len(first.since(0, "/ddsp/pong")) == 1
            start = second.mark()
            error = first.request("/ddsp/octave", 9.0, reply="/ddsp/error")
            assert error.args[0] == "control"
            # State changes and render results go to every client.
            wav = write_tone(tmp_path / "in.wav", seconds=0.2)
            first.request("/ddsp/input", str(wav), reply="/ddsp/state")
            first.request("/ddsp/octave", 1.0, reply="/ddsp/state")
            done = first.request("/ddsp/render", reply="/ddsp/done")
            assert second.wait_for("/ddsp/done", start).args == done.args
            changes = [r.args for r in second.since(start, "/ddsp/state")]
            assert ["input", str(wav.resolve())] in changes and ["octave", 1.0] in changes
            settle(service, first)
            second.ping()
            assert second.since(0, "/ddsp/error") == []
            assert len(service.handlers.clients) == 2
        finally:
            second.close()


def test_silent_clients_are_forgotten(tmp_path: Path) -> None:
    with running_service(tmp_path, client_timeout=0.3) as (service, other, _):
        pd = PdLike(service.address)
        try:
            pd.hello()
            pd.request("/ddsp/ping", reply="/ddsp/pong")
            time.sleep(0.6)  # silent for twice the timeout
            # Another client's change no longer reaches it...
            start = pd.listener.mark()
            other.request("/ddsp/octave", 1.0, reply="/ddsp/state")
            settle(service, other)
            assert pd.listener.since(start) == []
            # ...and it is answered where it sends from again, as before any hello (Pd then
            # says hello again).
            pong = pd.sender.ping()
            assert pong.source == service.address
            assert pd.listener.since(start) == []
            assert len(service.handlers.clients) == 0
        finally:
            pd.close()


def test_the_number_of_clients_is_bounded(tmp_path: Path) -> None:
    with running_service(tmp_path, max_clients=2) as (service, first, _):
        second, third = OscClient(service.address), OscClient(service.address)
        try:
            first.request("/ddsp/hello", first.port, reply="/ddsp/ready")
            second.request("/ddsp/hello", second.port, reply="/ddsp/ready")
            error = third.request("/ddsp/hello", third.port, reply="/ddsp/error")
            assert error.args[0] == "busy" and "too many clients" in error.args[1]
            # The registered ones are untouched and may say hello again.
            first.request("/ddsp/hello", first.port, reply="/ddsp/ready")
            assert len(service.handlers.clients) == 2
        finally:
            second.close()
            third.close()


def test_errors_are_rate_limited_per_sender(tmp_path: Path) -> None:
    with running_service(tmp_path, error_burst=5, error_rate=0.001) as (service, flooder, _):
        other = OscClient(service.address)
        try:
            for _ in range(30):
                flooder.send("/ddsp/octave", 9.0)
            flooder.ping()  # handled after all 30; its pong is queued after their errors
            assert len(flooder.since(0, "/ddsp/error")) == 5
            assert service.dropped()["error replies over the rate limit"] == 25
            # Another sender has its own allowance.
            assert other.request("/ddsp/nonsense", reply="/ddsp/error").args[0] == "osc"
        finally:
            other.close()


# --- units --------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_table_keeps_pinging_clients_and_forgets_silent_ones() -> None:
    clock = FakeClock()
    table = ClientTable(max_clients=2, timeout=30.0, clock=clock)
    pd_send, pd_port = ("127.0.0.1", 50000), 9001
    assert table.hello(pd_send, pd_port) == ("127.0.0.1", 9001)
    assert table.target_for(pd_send) == ("127.0.0.1", 9001)
    assert table.target_for(("127.0.0.1", 50001)) == ("127.0.0.1", 50001)  # never said hello
    for _ in range(100):  # pings every second for 100 s
        clock.now += 1.0
        table.seen(pd_send)
    assert table.recipients() == [("127.0.0.1", 9001)]
    clock.now += 30.5
    assert table.target_for(pd_send) == pd_send
    assert table.recipients(("10.0.0.1", 5)) == [("10.0.0.1", 5)]


def test_client_table_reconnects_moves_and_limits() -> None:
    clock = FakeClock()
    table = ClientTable(max_clients=2, timeout=30.0, clock=clock)
    table.hello(("127.0.0.1", 50000), 9001)
    # Pd reconnecting opens a new sending socket and says hello to the same port: one client.
    table.hello(("127.0.0.1", 50002), 9001)
    assert table.recipients() == [("127.0.0.1", 9001)]
    assert table.target_for(("127.0.0.1", 50000)) == ("127.0.0.1", 9001)
    table.hello(("10.0.0.2", 50000), 9001)  # another host, the same port: another client
    assert len(table) == 2
    with pytest.raises(BusyError):
        table.hello(("10.0.0.3", 50000), 9001)
    # A socket that says hello with a new port moves; its old client, left without
    # sockets, is forgotten, so there is room.
    table.hello(("10.0.0.2", 50000), 9002)
    assert sorted(table.recipients()) == [("10.0.0.2", 9002), ("127.0.0.1", 9001)]


def test_error_limiter_refills_and_counts() -> None:
    clock = FakeClock()
    limiter = ErrorLimiter(rate=2.0, burst=3, shared_rate=1000.0, shared_burst=1000, clock=clock)
    a = ("127.0.0.1", 1)
    assert [limiter.allow(a) for _ in range(5)] == [True, True, True, False, False]
    clock.now += 1.0  # two more tokens
    assert [limiter.allow(a) for _ in range(3)] == [True, True, False]
    assert limiter.allow(("127.0.0.1", 2))
    assert limiter.dropped.total == 3


class _RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.lock = threading.Lock()

    def sendto(self, data: bytes, target: tuple[str, int]) -> int:
        with self.lock:
            self.sent.append((data, target))
        return len(data)


def test_reply_sender_lets_targets_take_turns() -> None:
    sock = _RecordingSocket()
    sender = ReplySender(sock, rate=100_000.0, burst=100)  # type: ignore[arg-type]
    busy, quiet = ("127.0.0.1", 1), ("127.0.0.1", 2)
    for i in range(500):
        sender.send(busy, "/ddsp/state", "n", i)
    sender.send(quiet, "/ddsp/pong")
    sender.start()
    sender.stop(timeout=10.0)
    targets = [target for _, target in sock.sent]
    assert len(targets) == 501
    # The quiet client's reply does not wait behind the 500 that were queued before it...
    assert targets.index(quiet) < 5
    # ...and the busy client's replies keep their order.
    from pythonosc.osc_message import OscMessage

    order = [OscMessage(data).params[1] for data, target in sock.sent if target == busy]
    assert order == list(range(500))
