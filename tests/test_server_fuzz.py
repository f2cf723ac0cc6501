"""10,000 random messages: the server answers, keeps a valid state, and still renders after."""

from __future__ import annotations

import random
import time
from pathlib import Path

import soundfile as sf
from pythonosc.osc_message_builder import OscMessageBuilder
from test_server_support import build, running_service, settle, write_tone

from ddsp_pd.server.osc import build_routes
from ddsp_pd.server.state import SETTINGS

N_MESSAGES = 10_000
#: Datagrams sent before waiting for the server to have read them all (keeps the socket
#: buffers out of the test).
BATCH = 20
REPLY_ADDRESSES = [
    "/ddsp/ready", "/ddsp/pong", "/ddsp/state", "/ddsp/progress", "/ddsp/adjusted",
    "/ddsp/done", "/ddsp/error", "/ddsp/cancelled", "/ddsp/loaded", "/ddsp/features_done",
    "/ddsp/checkpoints_begin", "/ddsp/checkpoint_entry", "/ddsp/checkpoints_end",
]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    length = rng.choice([0, 1, 5, 20, 100, 1000, 3000])
    alphabet = "abc/._-~ 0123456789éü€漢\t"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _random_arg(rng: random.Random, valid: list[object]) -> tuple[object, str | None]:
    kind = rng.randrange(12)
    if kind < 3:
        return rng.choice(valid), None
    if kind == 3:
        return rng.randint(-(2**31), 2**31 - 1), "i"
    if kind == 4:
        return rng.randint(-3, 200), "i"
    if kind == 5:
        return rng.choice([float("nan"), float("inf"), -float("inf"), 1e30, -0.0]), "f"
    if kind == 6:
        return rng.gauss(0.0, 50.0), "f"
    if kind == 7:
        return _random_text(rng), "s"
    if kind == 8:
        return rng.randbytes(rng.randrange(1, 64)), "b"
    if kind == 9:
        return rng.choice([True, False]), None
    if kind == 10:
        return rng.gauss(0.0, 3.0), "d"
    return rng.randint(-(2**40), 2**40), "h"


def _typed(value: object) -> str:
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    return "s"


def _message(
    rng: random.Random,
    addresses: list[str],
    valid: list[object],
    valid_args: list[tuple[object, ...]],
    port: int,
) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randrange(0, 1500))
    if roll < 0.10:
        data = bytearray(build(rng.choice(addresses), *rng.choice(valid_args)))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if roll < 0.15:
        address = "/" + _random_text(rng)[:200]
    elif roll < 0.25:
        address = rng.choice(REPLY_ADDRESSES)
    else:
        address = rng.choice(addresses)
    builder = OscMessageBuilder(address=address)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        value, tag = _random_arg(rng, valid)
        if (
            address == "/ddsp/hello"
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            # Never send replies to a random port on this machine: other programs live there.
            value, tag = rng.choice([port, float(port), 0, 70000, -5]), None
        builder.add_arg(value, tag or _typed(value))
    return builder.build().dgram


def _wait_received(service, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while service.dispatcher.received < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"server read {service.dispatcher.received} of {count} datagrams in {timeout} s"
            )
        time.sleep(0.001)


def test_fuzz_then_render(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    with running_service(tmp_path, reply_rate=50_000.0) as (service, client, _):
        wav = write_tone(tmp_path / "in.wav", seconds=0.2)
        addresses = sorted(build_routes(service.handlers))
        valid: list[object] = [
            str(wav), "alpha", "beta", 0, 1, 0.5, 1.0, -1.0, 44100, 22050.0, 20.0, 2.0,
            str(tmp_path / "missing.wav"), "",
        ]  # fmt: skip
        valid_args: list[tuple[object, ...]] = [(str(wav),), (0.5,), (1,), ()]
        base = service.dispatcher.received
        sent = 0
        for _ in range(N_MESSAGES):
            client.send_raw(_message(rng, addresses, valid, valid_args, client.port))
            sent += 1
            if sent % BATCH == 0:
                _wait_received(service, base + sent)
        _wait_received(service, base + sent)

        # The server is alive and answers at the client's port again.
        client.request("/ddsp/hello", client.port, reply="/ddsp/ready")
        client.request("/ddsp/auto", 0, reply="/ddsp/state")
        settle(service, client)
        state = client.status()
        for key, setting in SETTINGS.items():
            value = state[key]
            assert value == setting.special or setting.low <= value <= setting.high, (key, value)
        assert state["checkpoint"] in ("alpha", "beta")

        # A normal render still succeeds and reflects the state that was set.
        client.request("/ddsp/checkpoint", "alpha", reply="/ddsp/loaded")
        client.request("/ddsp/input", str(wav), reply="/ddsp/state")
        client.request("/ddsp/samplerate", 22050, reply="/ddsp/state")
        done = client.request("/ddsp/render", reply="/ddsp/done", timeout=20.0)
        audio, rate = sf.read(done.args[0], dtype="float32")
        assert rate == done.args[2] == 22050 and len(audio) == done.args[1]

        replies = client.since(0)
        assert client.undecodable == 0
        # Errors beyond the sender's rate limit are dropped and counted (docs/osc.md).
        limited = service.dropped()["error replies over the rate limit"]
        assert limited > 0
        assert len(replies) + limited >= N_MESSAGES * 0.9, "most messages got no answer"
        assert all(set(r.types) <= set("ifs") and r.size <= 2048 for r in replies)
        errors = [r for r in replies if r.address == "/ddsp/error"]
        assert {r.args[0] for r in errors} <= {
            "osc",
            "control",
            "input",
            "checkpoint",
            "stream",
            "busy",
        }
