"""``timbre_transfer.pd`` when things go wrong, against the real ``ddsp-pd serve``.

Each test runs the patch in a headless Pd and the server in a subprocess, kills and restarts
the server where the story needs it, and checks what the patch's displays hold (``ddsp-pd
displays`` makes every display log its text) and what the server ends up with. The server
uses the model shipped in ``checkpoints/default`` and the clips of ``examples/``, so no
reference fixtures are needed.

Issue 15: 1 the link going down mid-render; 2 a restarted server gets the patch's input,
checkpoint and settings back; 3 errors as whole sentences, cleared by a success; 4 the
``ddsp.osc`` help patch leaves the main patch alone; 6 progress inside the model stage, one
render's story; 7 checkpoint entries out of range, the model known at start; 9 FLAC and MP3
inputs shown through the server's WAV copy.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pd_harness import (
    MAIN_PATCH,
    PATCHES,
    PD,
    PD_MISSING,
    ROOT,
    PdSession,
    RealServer,
    free_udp_port,
    pd_with_server,
)

pytestmark = [pytest.mark.pd, pytest.mark.slow, pytest.mark.skipif(PD is None, reason=PD_MISSING)]

DEFAULT_MODEL = ROOT / "checkpoints" / "default"
EXAMPLE = ROOT / "examples" / "melody.wav"
SLOW = 120.0  # seconds a server start, a load or a long render may take here


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A checkpoint folder with a second model ('second', a copy of the default)."""
    if not DEFAULT_MODEL.is_dir() or not EXAMPLE.is_file():
        pytest.skip("the shipped model or examples/melody.wav is missing")
    folder = tmp_path / "models"
    shutil.copytree(DEFAULT_MODEL, folder / "second")
    return folder


def _server(tmp_path: Path, models: Path, port: int | None = None) -> RealServer:
    renders = tmp_path / "renders"
    renders.mkdir(exist_ok=True)
    return RealServer(
        port or free_udp_port(),
        renders,
        DEFAULT_MODEL,
        tmp_path / "server.log",
        checkpoint_dirs=(models,),
    )


@pytest.fixture
def server(tmp_path: Path, models: Path) -> Iterator[RealServer]:
    real = _server(tmp_path, models).start(timeout=SLOW)
    try:
        yield real
    finally:
        real.stop()


def _clip(tmp_path: Path, seconds: float = 2.0, name: str = "take one.wav") -> Path:
    """The example, cut or repeated to ``seconds``, as a 16-bit WAV with a space in its name."""
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    n = int(seconds * rate)
    audio = np.tile(audio, n // len(audio) + 1)[:n]
    path = tmp_path / name
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


def _confirmed(pd: PdSession, name: str, value: float, since: int) -> None:
    pd.wait_for(rf"^ddsp-pd: state {name} {value:g}$", since=since)


# ------------------------------------------------------------------------------------------
# 1. the server dies mid-render


def test_a_server_that_dies_mid_render_ends_everything_visibly(
    server: RealServer, tmp_path: Path
) -> None:
    clip = _clip(tmp_path, seconds=60.0)
    with pd_with_server(server, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: state end 1$")
        mark = pd.mark()
        pd.send("ddsp-pd", "input", clip)
        pd.wait_for(r"^ddsp-pd: input \d+ 16000$", since=mark, timeout=SLOW)
        pd.send("ddsp-pd", "render")
        in_flight = {"queued", "load", "features", "controls", "model"}
        pd.wait_display("stage", lambda s: s in in_flight - {"queued"}, timeout=SLOW)
        server.kill()
        mark = pd.mark()
        pd.send("ddsp-pd", "set", "octave", 2)  # typed after the crash: nothing confirms it
        pd.wait_for(r"^ddsp-pd: not connected ", since=mark, timeout=15)
        shown = pd.displays()
        assert shown["server"] == "offline"
        assert shown["stage"] == "offline"
        assert shown["progress"] == "0"
        assert shown["story"].endswith("> server lost"), shown["story"]
        assert "stopped answering during a render" in shown["msg"], shown["msg"]
        assert "ddsp-pd serve" in shown["msg"]
        assert shown["control octave"] == "2 unconfirmed"
        # a click now says why nothing happens instead of waiting forever
        pd.send("ddsp-pd", "render")
        shown = pd.wait_display("msg", lambda m: m.startswith("Not connected to the server"))
        assert shown["stage"] == "offline"
        assert pd.bad_lines() == []


# ------------------------------------------------------------------------------------------
# 2. a restarted server gets the patch's state back


def test_a_restarted_server_gets_the_input_checkpoint_and_settings_back(
    tmp_path: Path, models: Path
) -> None:
    clip = _clip(tmp_path)
    first = _server(tmp_path, models).start(timeout=SLOW)
    second: RealServer | None = None
    try:
        with pd_with_server(first, tmp_path) as (pd, _):
            pd.wait_for(r"^ddsp-pd: checkpoints \d+$")
            mark = pd.mark()
            pd.send("ddsp-pd", "input", clip)
            pd.wait_for(r"^ddsp-pd: input \d+ 16000$", since=mark, timeout=SLOW)
            pd.send("ddsp-pd", "checkpoint", "second")
            pd.wait_for(r"^ddsp-pd: loaded second ", since=mark, timeout=SLOW)
            for name, value in [("octave", 1), ("seed", 7), ("confidence", 0.5)]:
                pd.send("ddsp-pd", "set", name, value)
                _confirmed(pd, name, value, mark)
            first.kill()
            pd.wait_for(r"^ddsp-pd: not connected ", since=mark, timeout=15)
            # Marked before the start: the patch may connect before start() returns.
            mark = pd.mark()
            second = _server(tmp_path, models, port=first.port).start(timeout=SLOW)
            pd.wait_for(r"^ddsp-pd: connected ", since=mark, timeout=20)
            note = pd.wait_for(r"^ddsp-pd: note The server had restarted", since=mark).string
            for name in ("input", "checkpoint", "octave", "seed", "confidence"):
                assert name in note, note
            pd.wait_for(r"^ddsp-pd: loaded second ", since=mark, timeout=SLOW)
            state = second.status()
            assert state["input"] == str(clip)
            assert state["checkpoint"] == "second"
            assert (state["octave"], state["seed"]) == (1, 7)
            assert state["confidence"] == pytest.approx(0.5)
            # the patch shows what the server has, confirmed, and a render just works
            shown = pd.displays()
            assert clip.name in shown["input"]
            assert shown["control octave"] == "1 confirmed"
            assert shown["ckpt"].startswith("second (era ")
            mark = pd.mark()
            pd.send("ddsp-pd", "render")
            pd.wait_for(r"^ddsp-pd: result \S+ \d+ \d+$", since=mark, timeout=SLOW)
            assert pd.count(r"^ddsp-pd: error ", since=mark) == 0
            assert pd.bad_lines() == []
    finally:
        first.stop()
        if second is not None:
            second.stop()


# ------------------------------------------------------------------------------------------
# 3. errors read as sentences and go away after a success


def test_errors_are_whole_plain_sentences_cleared_by_a_success(
    server: RealServer, tmp_path: Path
) -> None:
    silent = tmp_path / "quiet take.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    with pd_with_server(server, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: state end 1$")
        mark = pd.mark()
        pd.send("ddsp-pd", "render")  # no input yet
        shown = pd.wait_display("msg", lambda m: m.startswith("Input problem:"))
        msg = shown["msg"]
        assert "no input file chosen yet" in msg
        assert "- choose a file with open... or record one." in msg
        assert "/ddsp/" not in msg and "\\" not in msg
        assert shown["stage"] == "failed"
        pd.wait_for(r"^ddsp-pd: error input: no input file chosen yet$", since=mark)
        assert pd.count(r"^ddsp-pd: error ", since=mark) == 1  # logged once

        # a file the server takes but cannot analyse: the whole reason, no escapes
        mark = pd.mark()
        pd.send("ddsp-pd", "input", silent)
        shown = pd.wait_display("msg", lambda m: "silent" in m, timeout=SLOW)
        msg = shown["msg"]
        assert msg.startswith("Input problem: ") and "input: input" not in msg.lower()
        assert f"{silent} is silent (all samples are zero)" in msg, msg
        assert "\\" not in msg
        assert shown["curves"].startswith("no curves: the server could not analyse"), shown
        assert pd.count(r"^ddsp-pd: error ", since=mark) == 1

        # a good input and a render: the error goes
        mark = pd.mark()
        pd.send("ddsp-pd", "input", _clip(tmp_path))
        pd.send("ddsp-pd", "set", "adjust", 0)
        pd.send("ddsp-pd", "render")
        pd.wait_for(r"^ddsp-pd: result ", since=mark, timeout=SLOW)
        shown = pd.displays()
        assert shown["msg"] == ""
        assert shown["adjust"] == "auto-adjust is off (the adjust switch)."
        assert pd.bad_lines() == []


# ------------------------------------------------------------------------------------------
# 4. the ddsp.osc help patch and the main patch side by side


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _osc_ports(path: Path) -> tuple[int, int]:
    match = re.search(r"ddsp\.osc \\\$0 (\d+) (\d+);", path.read_text())
    assert match, f"{path.name} has no [ddsp.osc $0 PORT REPLYPORT]"
    return int(match.group(1)), int(match.group(2))


BOX = re.compile(r"#X (obj|msg|text|floatatom|symbolatom) ")


def _clicking_connect(help_patch: Path, port: int, reply: int, server_port: int) -> str:
    """The help patch with the server's port, and a [loadbang] that clicks its 'connect'."""
    text = help_patch.read_text().replace(
        f"ddsp.osc \\$0 {port} {reply};", f"ddsp.osc \\$0 {server_port} {reply};"
    )
    lines = text.rstrip("\n").split("\n")
    boxes = [line for line in lines[1:] if BOX.match(line)]
    connect = next(i for i, line in enumerate(boxes) if line.endswith(" connect;"))
    n = len(boxes)
    lines += ["#X obj 700 20 loadbang;", "#X obj 700 50 delay 500;"]
    lines += [f"#X connect {n} 0 {n + 1} 0;", f"#X connect {n + 1} 0 {connect} 0;"]
    return "\n".join(lines) + "\n"


def test_the_osc_help_patch_leaves_the_main_patch_alone(server: RealServer, tmp_path: Path) -> None:
    help_patch = PATCHES / "abstractions" / "ddsp.osc-help.pd"
    _, main_reply = _osc_ports(MAIN_PATCH)
    help_port, help_reply = _osc_ports(help_patch)
    assert help_reply != main_reply, "the help patch listens on the main patch's reply port"
    if not (_port_free(main_reply) and _port_free(help_reply)):
        pytest.skip(f"port {main_reply} or {help_reply} is in use on this machine")
    # The help patch as a user clicks it: its own reply port, this server's port, and
    # 'connect' clicked once it is open.
    copy = tmp_path / "abstractions"
    shutil.copytree(PATCHES / "abstractions", copy)
    clicked = copy / "ddsp.osc-help.pd"
    clicked.write_text(_clicking_connect(help_patch, help_port, help_reply, server.port))
    connect_main = f"ddsp-pd connect 127.0.0.1 {server.port} {main_reply}"
    with PdSession(
        MAIN_PATCH,
        tmp_path,
        sends=(connect_main,),
        extra_args=("-open", str(copy / "ddsp.osc-help.pd")),
    ) as pd:
        pd.wait_for(rf"^ddsp-pd: connected 127\.0\.0\.1 {server.port}$", timeout=20)
        pd.wait_for(r"^connected: 1$", timeout=20)  # the help patch's own link is up too
        mark = pd.mark()
        for value in (1, 2, 3):
            pd.send("ddsp-pd", "set", "octave", value)
            _confirmed(pd, "octave", value, mark)
        # longer than the 4 s watchdog: the main patch keeps hearing the server
        with pytest.raises(AssertionError):
            pd.wait_for(r"^ddsp-pd: not connected ", since=mark, timeout=6)
        assert pd.displays()["server"] == "connected"
        assert pd.count(r"pong") == 0  # no console noise from the pings
        assert pd.bad_lines() == []


# ------------------------------------------------------------------------------------------
# 6. progress inside the model stage; one render, one story


def test_progress_moves_inside_the_model_stage_and_tells_one_story(
    server: RealServer, tmp_path: Path
) -> None:
    clip = _clip(tmp_path, seconds=150.0)  # over 2 minutes: rendered block by block
    with pd_with_server(server, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: state end 1$")
        mark = pd.mark()
        pd.send("ddsp-pd", "input", clip)
        pd.wait_for(r"^ddsp-pd: features ", since=mark, timeout=SLOW)
        mark = pd.mark()
        pd.send("ddsp-pd", "render")
        seen: list[tuple[str, str, float]] = []
        shown = pd.displays()
        while shown["stage"] not in ("done", "failed", "offline"):
            seen.append((shown["stage"], shown["story"], float(shown["progress"])))
            shown = pd.displays()
        inside = [
            int(m.group(1))
            for stage, story, _ in seen
            if stage == "model" and (m := re.search(r"model (\d+)%$", story))
        ]
        assert any(0 < n < 100 for n in inside), seen
        fractions = [f for _, _, f in seen]
        assert fractions == sorted(fractions), "the bar went backwards"
        assert re.fullmatch(
            r"load > features > controls > model 100% > write > done in [\d.]+ s", shown["story"]
        ), shown["story"]
        assert pd.count(r"^ddsp-pd: result ", since=mark) == 1
        # after a checkpoint load the stage says so instead of staying 'load'
        pd.send("ddsp-pd", "checkpoint", "second")
        shown = pd.wait_display("stage", lambda s: s == "ready", timeout=SLOW)
        assert shown["story"] == "load > checkpoint loaded"
        # a new input forgets the last render's auto-adjust report
        assert shown["adjust"].startswith("auto-adjust ")
        mark = pd.mark()
        pd.send("ddsp-pd", "input", _clip(tmp_path, 1.0, "other.wav"))
        pd.wait_for(r"^ddsp-pd: input \d+ 16000$", since=mark, timeout=SLOW)
        assert pd.displays()["adjust"] == "auto-adjust: (after the next render)"
        assert pd.bad_lines() == []


# ------------------------------------------------------------------------------------------
# 7. checkpoint entries, and the model known at start


def test_checkpoint_entries_out_of_range_and_the_model_at_start(
    server: RealServer, tmp_path: Path
) -> None:
    with pd_with_server(server, tmp_path) as (pd, _):
        count = int(pd.wait_for(r"^ddsp-pd: checkpoints (\d+)$").group(1))
        assert count >= 1
        shown = pd.wait_display("ckpt", lambda s: s.startswith("default"))
        era, rate = re.fullmatch(r"default \(era (\S+) - (\d+) Hz\)", shown["ckpt"]).groups()
        assert int(rate) == 16000 and era != ""
        mark = pd.mark()
        pd.send("ddsp-pd", "checkpoint", 9)
        shown = pd.wait_display("msg", lambda m: m.startswith("There is no entry 9"))
        assert shown["msg"] == (
            f"There is no entry 9: the list has {count} (entries 0 to {count - 1}). "
            f"Showing entry {count - 1}."
        )
        last = pd.wait_for(rf"^ddsp-pd: checkpoint {count - 1} (\S+) ").group(1)
        assert shown["ckpt.sel"] == last
        assert pd.count(r"^ddsp-pd: loaded ", since=mark) == 0  # nothing was loaded
        assert server.status()["checkpoint"] == "default"
        assert pd.bad_lines() == []


# ------------------------------------------------------------------------------------------
# 9. inputs Pd cannot read


@pytest.mark.parametrize("fmt", ["FLAC", "MP3"])
def test_inputs_pd_cannot_read_are_shown_from_the_servers_copy(
    server: RealServer, tmp_path: Path, fmt: str
) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    audio, rate = sf.read(_clip(tmp_path), dtype="float32")
    path = tmp_path / f"take.{fmt.lower()}"
    sf.write(path, audio, rate, format=fmt)
    decoded, _ = sf.read(path, dtype="float32", always_2d=True)
    with pd_with_server(server, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: state end 1$")
        mark = pd.mark()
        pd.send("ddsp-pd", "input", path)
        frames = int(pd.wait_for(r"^ddsp-pd: input (\d+) 16000$", since=mark, timeout=SLOW)[1])
        assert frames == len(decoded)
        saved = tmp_path / "input from pd.wav"
        pd.send("ddsp-pd", "save-input", saved)
        pd.wait_for(r"^ddsp-pd: saved-input ", since=mark)
        shown = pd.displays()
        assert path.name in shown["input"]
        assert "a mono WAV the server decoded" in shown["input"]
        assert pd.bad_lines() == []
    in_pd, pd_rate = sf.read(saved, dtype="float32")
    assert pd_rate == rate
    # what the patch shows is exactly what the server decoded (mixed to mono)
    np.testing.assert_array_equal(in_pd, decoded.mean(axis=1, dtype=np.float32))


# ------------------------------------------------------------------------------------------
# 8. the curves say why an adjusted f0 is 0 everywhere


def test_the_curves_say_why_the_adjusted_f0_is_all_zero(server: RealServer, tmp_path: Path) -> None:
    with pd_with_server(server, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: state end 1$")
        mark = pd.mark()
        pd.send("ddsp-pd", "set", "confidence", 1)  # every frame is below the gate
        _confirmed(pd, "confidence", 1, mark)
        pd.send("ddsp-pd", "input", _clip(tmp_path))
        pd.wait_for(r"^ddsp-pd: features ", since=mark, timeout=SLOW)
        note = pd.wait_display("curves", lambda n: "Scaled to fit" in n)["curves"]
        assert re.search(
            r"Adjusted f0 is 0 in every frame: no frame's confidence \(at most "
            r"[\d.]+\) reaches the gate \(1\)",
            note,
        ), note
        mark = pd.mark()
        pd.send("ddsp-pd", "set", "confidence", 0.2)
        pd.send("ddsp-pd", "features")
        pd.wait_for(r"^ddsp-pd: features ", since=mark, timeout=SLOW)
        note = pd.wait_display("curves", lambda n: "Scaled to fit" in n)["curves"]
        assert "Adjusted f0 is 0" not in note
