"""The Pd patches: clean loading, vanilla objects only, local names, and the patch's logic.

The logic tests drive ``patches/timbre_transfer.pd`` in a headless Pd against the fake OSC
server of ``tests/pd_harness.py`` (the real server is in ``test_pd_end_to_end.py``): what the
patch sends is checked in the fake server's state, what it shows in its log lines
(``ddsp-pd: ...``), and what lands in its arrays by having the patch write them to files.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import AUDIO, REFERENCE_CHECKPOINT, needs_fixtures
from pd_harness import (
    BAD_LINE,
    MAIN_PATCH,
    PATCHES,
    PD,
    PD_MISSING,
    FakeServer,
    PdSession,
    free_udp_port,
    pd_boxes,
    pd_records,
    pd_with_server,
    run_pd_batch,
)

from ddsp_pd.commands.patch import command as patch_command
from ddsp_pd.pd_patches import copy_patches, patch_files, patches_dir

ABSTRACTIONS = PATCHES / "abstractions"
ABSTRACTION_FILES = sorted(p for p in ABSTRACTIONS.glob("*.pd") if not p.stem.endswith("-help"))
HELP_FILES = sorted(ABSTRACTIONS.glob("*-help.pd"))
OUR_CLASSES = {p.stem for p in ABSTRACTION_FILES}

# Vanilla Pd (0.51) classes this project may use; anything else would need an external.
VANILLA = {
    "inlet", "inlet~", "outlet", "outlet~", "list", "route", "t", "trigger", "s", "send", "r",
    "receive", "loadbang", "f", "float", "symbol", "int", "i", "pack", "unpack", "moses",
    "select", "sel", "spigot", "==", "!=", ">", "<", ">=", "<=", "+", "-", "*", "/", "max",
    "min", "clip", "mod", "div", "abs", "expr", "expr~", "metro", "delay", "del", "timer",
    "pipe", "change", "swap", "value", "v", "netsend", "netreceive", "oscformat", "oscparse",
    "fudiparse", "fudiformat", "text", "array", "table", "soundfiler", "openpanel", "savepanel",
    "pdcontrol", "samplerate~", "tabread4~", "tabread~", "tabplay~", "tabwrite~", "tabread",
    "tabwrite", "vline~", "line~", "line", "*~", "+~", "-~", "/~", "dac~", "adc~", "catch~",
    "throw~", "osc~", "phasor~", "noise~", "makefilename", "declare", "print", "bng", "tgl",
    "hsl", "vsl", "nbx", "cnv", "hradio", "vradio", "vu", "bang", "b", "until", "sig~",
    "snapshot~", "env~", "clip~", "lop~", "hip~", "block~", "bang~", "tabsend~", "tabreceive~",
    "notein", "bendin",
}  # fmt: skip
# The one global receive name (remote control); everything else is $0- or a $N- bus name.
GLOBAL_NAMES = {"ddsp-pd", "pd"}
NONE = {"empty", "-"}


def _iemgui_names(args: list[str]) -> tuple[str, str]:
    """(send, receive) of an IEM GUI box."""
    index = {"bng": 5, "tgl": 3, "hsl": 7, "vsl": 7, "nbx": 7, "cnv": 4}[args[0]]
    return args[index], args[index + 1]


def names_in(path: Path) -> list[tuple[str, str]]:
    """(role, name) of every send, receive, array and message-box target in a patch file."""
    found: list[tuple[str, str]] = []
    for kind, args in pd_boxes(path):
        if kind == "obj" and args:
            cls, rest = args[0], args[1:]
            if cls in ("s", "send", "throw~") and rest:
                found.append(("send", rest[0]))
            elif cls in ("r", "receive", "catch~") and rest:
                found.append(("receive", rest[0]))
            elif cls in ("text", "array") and len(rest) >= 2 and rest[0] == "define":
                found.append(("array", rest[1]))
            elif cls in ("bng", "tgl", "hsl", "vsl", "nbx", "cnv"):
                snd, rcv = _iemgui_names(args)
                found += [("send", snd), ("receive", rcv)]
        elif kind in ("floatatom", "symbolatom", "listbox"):
            found += [("receive", args[5]), ("send", args[6])]
        elif kind == "array":
            found.append(("array", args[0]))
        elif kind == "msg":
            found += [("target", args[i + 1]) for i, a in enumerate(args[:-1]) if a == "\\;"]
    return [(role, name) for role, name in found if name not in NONE]


ALL_FILES = [MAIN_PATCH, *ABSTRACTION_FILES, *HELP_FILES]


# ------------------------------------------------------------------------------------------
# static checks (no Pd needed)


def test_every_abstraction_has_a_help_patch_that_uses_it() -> None:
    assert len(ABSTRACTION_FILES) >= 4
    for abstraction in ABSTRACTION_FILES:
        help_patch = ABSTRACTIONS / f"{abstraction.stem}-help.pd"
        assert help_patch.is_file(), f"{abstraction.name} has no {help_patch.name}"
        classes = {args[0] for kind, args in pd_boxes(help_patch) if kind == "obj" and args}
        assert abstraction.stem in classes, f"{help_patch.name} does not show {abstraction.stem}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_only_vanilla_objects(path: Path) -> None:
    classes = {args[0] for kind, args in pd_boxes(path) if kind == "obj" and args}
    unknown = classes - VANILLA - OUR_CLASSES
    assert not unknown, f"{path.name} uses non-vanilla objects: {sorted(unknown)}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_names_are_local(path: Path) -> None:
    """Every send/receive/array name is $0-local or a $N- bus name, except 'ddsp-pd'."""
    bad = [
        (role, name)
        for role, name in names_in(path)
        if not re.match(r"\\\$\d", name) and name not in GLOBAL_NAMES
    ]
    assert not bad, f"{path.name} uses global names: {bad}"
    if path == MAIN_PATCH:  # a top-level patch has no arguments: only $0 (targets aside)
        dollar_args = [n for r, n in names_in(path) if r != "target" and re.match(r"\\\$[1-9]", n)]
        assert not dollar_args


def _pool(paths: list[Path], bus_of: dict[Path, str]) -> dict[str, set[str]]:
    """role -> names, with each file's $0 and bus prefix made comparable across files."""
    pool: dict[str, set[str]] = {"send": set(), "receive": set()}
    for path in paths:
        for role, name in names_in(path):
            if role == "target" and not name.startswith("\\$0"):
                continue  # a target built from message arguments: not checkable here
            role = "send" if role == "target" else role
            if role not in pool or "$2" in name:
                continue
            name = name.replace("\\$0", bus_of[path]).replace("\\$1", "BUS")
            pool[role].add(name)
        # [ddsp.show BUS KEY WIDTH LINES] listens on BUS-show.KEY and sets the labels of the
        # [cnv]s BUS-show.KEY.1 .. LINES (names it builds itself, so they are added here).
        for kind, args in pd_boxes(path):
            if kind == "obj" and args[:1] == ["ddsp.show"] and len(args) >= 5:
                bus = args[1].replace("\\$0", bus_of[path]).replace("\\$1", "BUS")
                pool["receive"].add(f"{bus}-show.{args[2]}")
                pool["send"].update(f"{bus}-show.{args[2]}.{i}" for i in range(1, int(args[4]) + 1))
    return pool


def test_every_local_name_has_both_ends() -> None:
    """Each $0 name (and bus name) somebody listens to is sent by somebody, and vice versa.

    The main patch's $0 is the abstractions' $1 (BUS); each abstraction's own $0 is its own.
    """
    bus_of = {MAIN_PATCH: "BUS", **{p: f"{p.stem}:" for p in ABSTRACTION_FILES}}
    pool = _pool([MAIN_PATCH, *ABSTRACTION_FILES], bus_of)
    # Published for other patches to use, not used by ours.
    public = {"BUS-ddsp.status"}
    unheard = pool["send"] - pool["receive"] - public
    unsent = pool["receive"] - pool["send"] - GLOBAL_NAMES
    assert not unheard, f"sent but never received: {sorted(unheard)}"
    assert not unsent, f"received but never sent: {sorted(unsent)}"


def test_patch_files_and_copy(tmp_path: Path) -> None:
    files = patch_files()
    assert files[0] == Path("timbre_transfer.pd")
    assert {f.name for f in files} == {p.name for p in ALL_FILES}
    written = copy_patches(tmp_path / "mine")
    assert sorted(p.relative_to(tmp_path / "mine") for p in written) == sorted(files)
    assert (tmp_path / "mine" / "abstractions" / "ddsp.osc.pd").read_bytes() == (
        ABSTRACTIONS / "ddsp.osc.pd"
    ).read_bytes()


def test_patch_command(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(patch_command, [])
    assert shown.exit_code == 0, shown.output
    assert str(patches_dir() / "timbre_transfer.pd") in shown.output
    assert "ddsp-pd serve" in shown.output
    only = runner.invoke(patch_command, ["--path"])
    assert only.output.strip() == str(patches_dir())
    first = runner.invoke(patch_command, ["--copy", str(tmp_path / "p")])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "p" / "timbre_transfer.pd").is_file()
    again = runner.invoke(patch_command, ["--copy", str(tmp_path / "p")])
    assert again.exit_code != 0
    assert "already exists" in again.output
    forced = runner.invoke(patch_command, ["--copy", str(tmp_path / "p"), "--force"])
    assert forced.exit_code == 0, forced.output


# ------------------------------------------------------------------------------------------
# Pd loads every patch cleanly


@pytest.mark.parametrize("path", [MAIN_PATCH, *HELP_FILES], ids=lambda p: p.name)
@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_patch_loads_cleanly(path: Path) -> None:
    lines = run_pd_batch(path)
    bad = [line for line in lines if BAD_LINE.search(line)]
    assert not bad, f"{path.name}: {bad}"


#: What must not happen when an abstraction is opened on its own, without its arguments
#: (a user double-clicking it): broken objects, errors, messages to arrays that do not exist.
STANDALONE_BAD = re.compile(r"couldn't create|^error: |connection failed")


@pytest.mark.parametrize("path", ABSTRACTION_FILES, ids=lambda p: p.name)
@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_abstraction_opened_on_its_own_loads_without_errors(path: Path) -> None:
    lines = run_pd_batch(path)
    bad = [line for line in lines if STANDALONE_BAD.search(line)]
    assert not bad, f"{path.name}: {bad}"


# ------------------------------------------------------------------------------------------
# the patch's logic, against the fake server


def _clip(tmp_path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """A short excerpt of a fixture clip (tests may make their own small data)."""
    audio, file_rate = sf.read(AUDIO / "syn_vibrato.wav", dtype="float32")
    assert file_rate == rate
    path = tmp_path / "clip.wav"
    sf.write(path, audio[: int(seconds * rate)], rate, subtype="FLOAT")
    return path


def _unescape(text: str) -> str:
    """Pd's console escapes spaces inside symbols."""
    return text.replace("\\ ", " ")


@pytest.fixture
def fake(tmp_path: Path):
    checkpoints = {"solo": REFERENCE_CHECKPOINT, "other": REFERENCE_CHECKPOINT.parent}
    with FakeServer(free_udp_port(), tmp_path, checkpoints=checkpoints) as server:
        yield server


@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_hello_sample_rate_status_and_list_on_connect(fake: FakeServer, tmp_path: Path) -> None:
    with pd_with_server(fake, tmp_path, extra_args=("-r", "48000")) as (pd, reply_port):
        pd.wait_for(r"^ddsp-pd: checkpoints 2$")
        got = [address for address, _ in fake.received]
        assert got[:4] == ["/ddsp/hello", "/ddsp/samplerate", "/ddsp/status", "/ddsp/checkpoints"]
        assert fake.received[0][1] == (float(reply_port),)
        assert fake.received[1][1] == (48000.0,)  # Pd's own rate, from [samplerate~]
        assert fake.state["samplerate"] == 48000
        pd.wait_for(r"^ddsp-pd: ready fake-0\.1")
        pd.wait_for(r"^ddsp-pd: checkpoint 1 other ")
        assert pd.bad_lines() == []


# (name, value typed, value the server must end up with): clipping and rounding are the patch's
CONTROL_CASES = [
    ("octave", 1.5, 1.5),
    ("octave", 9, 4.0),
    ("confidence", 0.5, 0.5),
    ("loudness", -12, -12.0),
    ("adjust", 0, 0),
    ("quiet", 30, 30.0),
    ("autotune", 0.25, 0.25),
    ("note_threshold", 2, 2.0),
    ("normalize", 0, 0),
    ("seed", 2.7, 3),
    ("auto", 1, 1),
]


@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_controls_reach_the_server(fake: FakeServer, tmp_path: Path) -> None:
    with pd_with_server(fake, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: state end 1$")
        for name, typed, expected in CONTROL_CASES:
            mark = pd.mark()
            pd.send("ddsp-pd", "set", name, typed)
            # the server's confirmation comes back and is logged
            pd.wait_for(rf"^ddsp-pd: state {name} {expected:g}$", since=mark)
            assert fake.state[name] == pytest.approx(expected, abs=1e-6), name
        assert pd.bad_lines() == []


@needs_fixtures
@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_render_result_and_curves_arrive_in_the_arrays(fake: FakeServer, tmp_path: Path) -> None:
    clip = _clip(tmp_path)
    with pd_with_server(fake, tmp_path) as (pd, _):
        mark = pd.mark()
        pd.send("ddsp-pd", "input", clip)
        # the patch loads the accepted input into its input array
        frames, rate = pd.wait_for(r"^ddsp-pd: input (\d+) (\d+)$", since=mark).groups()
        assert (int(frames), int(rate)) == (sf.info(clip).frames, 16000)
        pd.wait_for(r"^ddsp-pd: features \S+ \d+ 250$", since=mark)

        mark = pd.mark()
        pd.send("ddsp-pd", "render")
        path, frames, rate = pd.wait_for(
            r"^ddsp-pd: result (\S+) (\d+) (\d+)$", since=mark
        ).groups()
        feats_path = pd.wait_for(r"^ddsp-pd: features (\S+) \d+ 250$", since=mark).group(1)
        saved = tmp_path / "from-pd.wav"
        pd.send("ddsp-pd", "save", saved)
        pd.wait_for(rf"^ddsp-pd: saved {re.escape(str(saved))}$", since=mark)
        feats = tmp_path / "features-from-pd.wav"
        pd.send("ddsp-pd", "save-features", feats)
        pd.wait_for(r"^ddsp-pd: saved-features ", since=mark)
        assert pd.bad_lines() == []

    served, served_rate = sf.read(path, dtype="float32")
    in_pd, pd_rate = sf.read(saved, dtype="float32")
    assert int(frames) == len(served) == len(in_pd)
    assert int(rate) == served_rate == pd_rate == 44100  # what the patch told the server
    # Pd reads and writes 32-bit floats: the array holds exactly the server's samples.
    np.testing.assert_array_equal(in_pd, served)

    assert Path(feats_path) == fake.output_dir / "fake-features.wav"
    served_f, _ = sf.read(feats_path, dtype="float32")
    in_pd_f, _ = sf.read(feats, dtype="float32")
    assert in_pd_f.shape == served_f.shape and served_f.shape[1] == 6
    np.testing.assert_array_equal(in_pd_f, served_f)


@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_server_error_is_shown_in_the_patch(fake: FakeServer, tmp_path: Path) -> None:
    missing = tmp_path / "no such file.wav"
    with pd_with_server(fake, tmp_path) as (pd, _):
        mark = pd.mark()
        pd.send("ddsp-pd", "input", missing)
        # the error box sends on what it displays; the patch logs exactly that
        shown = _unescape(pd.wait_for(r"^ddsp-pd: error (.*)$", since=mark).group(1))
        assert shown.startswith("input: ")
        assert str(missing) in shown
        assert fake.state["input"] == ""


@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_checkpoint_chosen_from_the_list_or_by_name(fake: FakeServer, tmp_path: Path) -> None:
    with pd_with_server(fake, tmp_path) as (pd, _):
        pd.wait_for(r"^ddsp-pd: checkpoints 2$")
        mark = pd.mark()
        pd.send("ddsp-pd", "checkpoint", 1)
        pd.wait_for(r"^ddsp-pd: loaded other 2\.x 16000$", since=mark)
        assert fake.received[-1] == ("/ddsp/checkpoint", (str(REFERENCE_CHECKPOINT.parent),))
        mark = pd.mark()
        pd.send("ddsp-pd", "checkpoint", "solo")
        pd.wait_for(r"^ddsp-pd: loaded solo ", since=mark)
        assert fake.state["checkpoint"] == "solo"


@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_record_writes_a_wav_and_makes_it_the_input(fake: FakeServer, tmp_path: Path) -> None:
    target = tmp_path / "take.wav"
    with pd_with_server(fake, tmp_path, extra_args=("-r", "48000")) as (pd, _):
        mark = pd.mark()
        pd.send("ddsp-pd", "record", 0.25, target)
        pd.wait_for(rf"^ddsp-pd: recorded {re.escape(str(target))}$", since=mark, timeout=10)
        pd.wait_for(r"^ddsp-pd: input 12000 48000$", since=mark)
    assert fake.state["input"] == str(target)
    info = sf.info(target)
    assert (info.frames, info.samplerate, info.channels) == (12000, 48000, 1)


@needs_fixtures
@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_cancel_and_play_stop(fake: FakeServer, tmp_path: Path) -> None:
    clip = _clip(tmp_path, seconds=0.2)
    with pd_with_server(fake, tmp_path) as (pd, _):
        mark = pd.mark()
        pd.send("ddsp-pd", "cancel")
        pd.wait_for(r"^ddsp-pd: cancelled$", since=mark)
        pd.send("ddsp-pd", "input", clip)
        pd.wait_for(r"^ddsp-pd: input ", since=mark)
        pd.send("ddsp-pd", "play", "input")
        pd.send("ddsp-pd", "stop")
        pd.send("ddsp-pd", "status")
        pd.wait_for(r"^ddsp-pd: state end 1$", since=mark)
        assert ("/ddsp/cancel", ()) in fake.received
        assert pd.bad_lines() == []


@pytest.mark.pd
@pytest.mark.slow
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
def test_finds_a_server_that_starts_late_or_restarts(tmp_path: Path) -> None:
    port, reply_port = free_udp_port(), free_udp_port()
    connect = f"ddsp-pd connect 127.0.0.1 {port} {reply_port}"
    with PdSession(MAIN_PATCH, tmp_path, sends=(connect,)) as pd:
        # nothing answers: 'offline' after the 4 s watchdog
        pd.wait_for(rf"^ddsp-pd: not connected 127\.0\.0\.1 {port}$", timeout=10)
        for _ in range(2):  # a server that starts later, then one that restarted
            mark = pd.mark()
            with FakeServer(port, tmp_path) as server:
                pd.wait_for(rf"^ddsp-pd: connected 127\.0\.0\.1 {port}$", since=mark, timeout=10)
                assert server.wait_received("/ddsp/hello") == (float(reply_port),)
                pd.wait_for(r"^ddsp-pd: state end 1$", since=mark)
            pd.wait_for(r"^ddsp-pd: not connected ", since=mark, timeout=10)
        assert pd.bad_lines() == []


# ------------------------------------------------------------------------------------------
# the player abstraction, measured offline


def _player_patch(src: Path, out: Path, rate: float, frames_out: int) -> str:
    ms = frames_out / 44100 * 1000 + 50
    lines = [
        "#N canvas 0 50 600 400 12;",
        f"#X declare -path {ABSTRACTIONS};",
        "#X obj 10 10 loadbang;",  # 0
        "#X obj 10 35 t b b b b;",  # 1
        f"#X msg 200 60 read -resize {src} src;",  # 2
        "#X obj 200 85 soundfiler;",  # 3
        f"#X msg 120 110 ; out resize {frames_out};",  # 4
        f"#X msg 60 140 rate {rate} , play;",  # 5
        "#X obj 60 170 ddsp.player src;",  # 6
        "#X obj 60 200 tabwrite~ out;",  # 7
        f"#X obj 10 230 delay {ms};",  # 8
        f"#X msg 10 260 write -wave -bytes 4 {out} out;",  # 9
        "#X obj 10 290 soundfiler;",  # 10
        "#X msg 10 320 ; pd quit;",  # 11
        "#X obj 300 10 array define src;",  # 12
        "#X obj 300 35 array define out;",  # 13
        "#X msg 120 10 ; pd dsp 1;",  # 14
        "#X obj 200 200 print end;",  # 15
    ]
    conns = [(0, 0, 1, 0), (1, 3, 2, 0), (2, 0, 3, 0), (1, 2, 4, 0), (1, 1, 5, 0), (5, 0, 6, 0)]
    conns += [(6, 0, 7, 0), (1, 1, 7, 0), (1, 0, 8, 0), (8, 0, 9, 0), (9, 0, 10, 0)]
    conns += [(10, 0, 11, 0), (0, 0, 14, 0), (6, 1, 15, 0)]
    lines += [f"#X connect {a} {b} {c} {d};" for a, b, c, d in conns]
    return "\n".join(lines).replace(" ; ", " \\; ").replace(" , ", " \\, ") + "\n"


@pytest.mark.pd
@pytest.mark.skipif(PD is None, reason=PD_MISSING)
@pytest.mark.parametrize("file_rate", [44100, 22050])
def test_player_plays_at_the_array_rate(tmp_path: Path, file_rate: int) -> None:
    """Pd runs at 44.1 kHz; an array at 22.05 kHz must come out twice as long (half speed)."""
    n = file_rate // 2
    t = np.arange(n) / file_rate
    signal = (0.5 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)).astype(
        np.float32
    )
    src, out = tmp_path / "src.wav", tmp_path / "out.wav"
    sf.write(src, signal, file_rate, subtype="FLOAT")
    step = 44100 // file_rate
    patch = tmp_path / "player_test.pd"
    patch.write_text(_player_patch(src, out, file_rate, n * step))
    lines = run_pd_batch(patch, timeout_s=60, quit_at_once=False)
    assert "end: bang" in lines, lines
    played, _ = sf.read(out, dtype="float32")
    # Every step-th output sample falls on a point of the array (sample k of the output reads
    # point k * file_rate / 44100); skip the 5 ms fade-in and the last points (tabread4~ needs
    # a neighbour on each side). vline~'s float32 index can be off by < 0.01 point, which is
    # < 2e-3 in amplitude for these tones; a one-point shift would be 2e-2.
    start, stop = 441, n - 3
    np.testing.assert_allclose(played[::step][start:stop], signal[start:stop], atol=2e-3)


# ------------------------------------------------------------------------------------------
# layout: readable on a 1366 x 768 screen, nothing but controls and displays in view


def _top_level(path: Path) -> list[list[str]]:
    """The records of a patch's own canvas (subpatch contents left out, their boxes kept)."""
    depth, top = 0, []
    for rec in pd_records(path)[1:]:
        if rec[:2] == ["#N", "canvas"]:
            depth += 1
        elif rec[:2] == ["#X", "restore"]:
            depth -= 1
            if depth == 0:
                top.append(rec)
        elif depth == 0:
            top.append(rec)
    return top


@pytest.mark.parametrize("path", [MAIN_PATCH, *HELP_FILES], ids=lambda p: p.name)
def test_windows_fit_a_small_laptop_screen(path: Path) -> None:
    """1366 x 768 less a title bar, Pd's menu bar and a panel: at most about 1340 x 660."""
    first = pd_records(path)[0]
    width, height = int(first[4]), int(first[5])
    assert width <= 1340 and height <= 660, (width, height)
    for rec in _top_level(path):
        if rec[:2] in (["#X", "obj"], ["#X", "msg"], ["#X", "text"], ["#X", "restore"]) or (
            rec[0] == "#X" and rec[1] in ("floatatom", "symbolatom")
        ):
            x, y = int(rec[2]), int(rec[3].rstrip(",;"))
            assert 0 <= x < width - 40 and 0 <= y < height - 20, (path.name, rec[:6])


# What the main patch may show: controls, displays, graphs, text, abstractions, subpatches.
SHOWN = {"bng", "tgl", "hsl", "vsl", "nbx", "cnv", "vu", "hradio", "vradio", "declare"}


def test_the_main_patch_shows_no_plumbing() -> None:
    shown = []
    for rec in _top_level(MAIN_PATCH):
        if rec[:2] == ["#X", "msg"] or rec[:2] == ["#X", "connect"]:
            shown.append(" ".join(rec[1:6]))
        elif rec[:2] == ["#X", "obj"]:
            cls = rec[4].rstrip(";")
            if cls not in SHOWN and cls not in OUR_CLASSES:
                shown.append(" ".join(rec[4:6]))
    assert not shown, f"plumbing in the main patch's view: {shown}"


def test_the_sections_read_in_order() -> None:
    """Sections 1) .. 7) run down the columns (left, middle, right) in order."""
    found = {}
    for rec in _top_level(MAIN_PATCH):
        if rec[:2] == ["#X", "text"] and re.fullmatch(r"[1-7]\)", rec[4]):
            found[int(rec[4][0])] = (int(rec[2]) // 440, int(rec[3]))
    assert sorted(found) == list(range(1, 8))
    assert sorted(found, key=found.__getitem__) == list(range(1, 8)), found
