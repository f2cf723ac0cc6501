"""``ddsp-pd render``'s inputs and outputs: never over the input, the format the name says,
truncated inputs, and bad files or outputs refused before TensorFlow loads.

Renders use the shipped default model and synthetic clips, so no reference fixtures are needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ddsp_pd import audio_io, output_path
from ddsp_pd.cli import main

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


def run(*args: object, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)


def error_line(result) -> str:
    """The one ``Error:`` line of a failed command (and no traceback)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def tone(seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    f0 = 330.0 * 2 ** (0.2 * np.sin(2 * np.pi * 3 * t) / 12)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(f0) / rate)).astype(np.float32)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    sf.write(path, tone(), RATE, subtype="PCM_16")
    return path


def cut(path: Path, seconds: float, keep: float, rate: int = RATE) -> Path:
    """Write a 16-bit WAV whose header says ``seconds`` and that holds only ``keep`` of them."""
    sf.write(path, tone(seconds, rate), rate, subtype="PCM_16")
    data = path.read_bytes()
    start = len(data) - 2 * int(seconds * rate)
    path.write_bytes(data[: start + 2 * int(keep * rate)])
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- never over the input


@pytest.mark.parametrize("how", ["same path", "other spelling", "symlink", "hard link", "via link"])
def test_output_that_is_the_input_is_refused(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.chdir(tmp_path)
    before = clip.read_bytes()
    source, output = clip, clip
    if how == "other spelling":
        (tmp_path / "sub").mkdir()
        output = Path("sub") / ".." / "clip.wav"
    elif how == "symlink":
        output = tmp_path / "link.wav"
        os.symlink(clip, output)
    elif how == "hard link":
        output = tmp_path / "hard.wav"
        os.link(clip, output)
    elif how == "via link":  # the input is given through a link, the output is the file
        source = tmp_path / "link.wav"
        os.symlink(clip, source)
    listing = names(tmp_path)
    line = error_line(run("render", source, "-o", output))
    assert "refusing to write over the input" in line and "--force" in line
    assert clip.read_bytes() == before
    assert names(tmp_path) == listing  # no temporary or other file left behind


def test_force_replaces_the_input_atomically(clip: Path, tmp_path: Path) -> None:
    link = tmp_path / "hard.wav"
    os.link(clip, link)
    before = clip.read_bytes()
    result = run("render", clip, "-o", clip, "--force")
    assert result.exit_code == 0, result.output
    assert clip.read_bytes() != before
    assert sf.info(clip).subtype == "FLOAT" and sf.info(clip).frames > 0
    # A rename, not a write into the file: the other link keeps the old audio.
    assert link.read_bytes() == before
    assert names(tmp_path) == ["clip.wav", "hard.wav"]


def test_failed_forced_write_loses_nothing(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = clip.read_bytes()
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst) == clip:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(audio_io.os, "replace", full_disk)
    line = error_line(run("render", clip, "-o", clip, "--force"))
    assert "No space left on device" in line
    assert clip.read_bytes() == before
    assert names(tmp_path) == ["clip.wav"]


@pytest.mark.parametrize("force", [False, True])
def test_features_file_is_never_written_over(tmp_path: Path, force: bool) -> None:
    feats = tmp_path / "feats.npz"
    n = 250
    np.savez(
        feats,
        f0_hz=np.full(n, 220.0, np.float32),
        f0_confidence=np.ones(n, np.float32),
        loudness_db=np.full(n, -30.0, np.float32),
    )
    os.symlink(feats, tmp_path / "feats.wav")
    before = feats.read_bytes()
    for output in (feats, tmp_path / "feats.wav"):
        args = ["render", "--features", feats, "-o", output, "--format", "wav"]
        line = error_line(run(*args, *(["--force"] if force else [])))
        assert "refusing to write over the features file" in line
    assert feats.read_bytes() == before


# ---------------------------------------------------------------- output formats


@pytest.mark.parametrize(
    ("name", "fmt", "subtype"),
    [
        ("out.wav", "WAV", "FLOAT"),
        ("out.flac", "FLAC", "PCM_24"),
        ("out.ogg", "OGG", "VORBIS"),
        ("out.aiff", "AIFF", "PCM_24"),
    ],
)
def test_output_format_follows_the_extension(
    clip: Path, tmp_path: Path, name: str, fmt: str, subtype: str
) -> None:
    out = tmp_path / name
    result = run("render", clip, "-o", out)
    assert result.exit_code == 0, result.output
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate) == (fmt, subtype, RATE)
    assert abs(info.duration - 0.5) < 0.01
    assert f"wrote {out}" in result.output


def test_format_and_subtype_options(clip: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "take.snd"
    result = run("render", clip, "-o", out, "--format", "aiff", "--subtype", "PCM_16")
    assert result.exit_code == 0, result.output
    assert (sf.info(out).format, sf.info(out).subtype) == ("AIFF", "PCM_16")
    # Without -o, the default name gets the format's extension.
    monkeypatch.chdir(tmp_path)
    result = run("render", clip, "--format", "flac")
    assert result.exit_code == 0, result.output
    assert sf.info(tmp_path / "clip.ddsp.flac").format == "FLAC"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-o", "{t}/out.mp3"], ["'.mp3'", ".wav", ".flac", ".ogg", ".aiff", "--format"]),
        (["-o", "{t}/out"], ["no extension", ".flac", "--format"]),
        (["-o", "{t}/out.flac", "--subtype", "FLOAT"], ["FLOAT", "FLAC", "PCM_24"]),
        (["-o", "{t}/out.ogg", "--subtype", "OPUS", "--sample-rate", "44100"], ["44100"]),
    ],
)
def test_unusable_formats_are_refused_before_rendering(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], words: list[str]
) -> None:
    if "OPUS" in args and not sf.check_format("OGG", "OPUS"):
        pytest.skip("this libsndfile has no Opus")
    _no_engine(monkeypatch)
    line = error_line(run("render", clip, *[a.format(t=tmp_path) for a in args]))
    for word in words:
        assert word in line, line
    assert names(tmp_path) == ["clip.wav"]


def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to load a model fail the test: the error must come first."""
    import ddsp_pd.transfer

    def refuse(*args, **kwargs):
        raise AssertionError("the engine was started before the cheap checks failed")

    monkeypatch.setattr(ddsp_pd.transfer, "Engine", refuse)


# ---------------------------------------------------------------- truncated input


def test_truncated_input_renders_with_a_warning(tmp_path: Path) -> None:
    source = cut(tmp_path / "cut.wav", seconds=3.0, keep=0.5)
    before = source.read_bytes()
    out = tmp_path / "out.wav"
    result = run("render", source, "-o", out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.output  # the early check and the load say it once
    assert "truncated" in warnings[0] and "3.00 s" in warnings[0] and "0.50 s" in warnings[0]
    assert abs(sf.info(out).duration - 0.5) < 0.01
    assert source.read_bytes() == before


def test_input_without_frames_is_an_error(tmp_path: Path, monkeypatch) -> None:
    _no_engine(monkeypatch)
    source = cut(tmp_path / "hollow.wav", seconds=3.0, keep=0.0)
    line = error_line(run("render", source, "-o", tmp_path / "out.wav"))
    assert "hollow.wav" in line and "no audio frames" in line and "3.00 s" in line
    assert names(tmp_path) == ["hollow.wav"]


# ---------------------------------------------------------------- refused before TensorFlow

_PROBE = (
    "import sys\n"
    "from ddsp_pd.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as done:\n"
    "    print(f'rc={done.code} tensorflow={\"tensorflow\" in sys.modules}', file=sys.stderr)\n"
)


def _cases(t: Path) -> list[tuple[list[str], list[str]]]:
    (t / "zero.wav").write_bytes(b"")
    (t / "text.wav").write_text("not audio at all\n" * 10)
    (t / "file").write_text("x")
    cut(t / "hollow.wav", seconds=1.0, keep=0.0)
    sf.write(t / "ok.wav", tone(), RATE)
    (t / "zero.npz").write_bytes(b"")
    ok = str(t / "ok.wav")
    out = str(t / "out.wav")
    return [
        ([str(t / "zero.wav"), "-o", out], ["zero.wav", "empty (0 bytes)"]),
        ([str(t / "text.wav"), "-o", out], ["text.wav", "not a readable audio file"]),
        ([str(t / "hollow.wav"), "-o", out], ["hollow.wav", "no audio frames"]),
        ([str(t / "missing.wav"), "-o", out], ["missing.wav", "not found"]),
        (["--features", str(t / "zero.npz"), "-o", out], ["zero.npz", "empty"]),
        ([ok, "-o", str(t / "file" / "out.wav")], [f"{t / 'file'} is not a folder"]),
        ([ok, "-o", str(t / "file" / "a" / "out.wav")], [f"{t / 'file'} is not a folder"]),
        ([ok, "-o", str(t / "out.mp3")], ["'.mp3'"]),
        ([ok, "-o", ok], ["refusing to write over the input"]),
        ([ok, "-o", out, "--loudness", "nan"], ["loudness must be a finite number"]),
        ([ok, "-o", out, "--octave", "9"], ["octave must be in"]),
    ]


def test_bad_inputs_and_outputs_are_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    """Each is refused with one line, and TensorFlow was never imported to find out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, words in _cases(tmp_path):
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, "render", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
        )
        lines = done.stderr.splitlines()
        assert lines[-1] == "rc=1 tensorflow=False", (args, done.stderr)
        errors = [line for line in lines if line.startswith("Error:")]
        assert len(errors) == 1, (args, done.stderr)
        for word in words:
            assert word in errors[0], (args, errors[0])
        assert "File exists" not in errors[0] and "loudness_db" not in errors[0]
    assert not (tmp_path / "out.wav").exists()


def test_bad_inputs_and_outputs_are_refused_before_the_engine_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same cases in process: whatever the engine imports, it is never started."""
    _no_engine(monkeypatch)
    for args, words in _cases(tmp_path):
        line = error_line(run("render", *args))
        for word in words:
            assert word in line, (args, line)


def test_unwritable_folder_is_refused_before_rendering(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root writes anywhere, so a read-only folder is simulated where the check tries it.
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if ".ddsp-pd-probe." in os.fspath(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    _no_engine(monkeypatch)
    monkeypatch.setattr(output_path.os, "open", read_only)
    line = error_line(run("render", clip, "-o", tmp_path / "ro" / "out.wav"))
    assert "Permission denied" in line and "out.wav" in line


# ---------------------------------------------------------------- quiet start-up

_ABSL_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuda", re.IGNORECASE)


@pytest.mark.slow
def test_render_prints_no_tensorflow_start_up_lines(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.flac"
    # As from a user's shell: conftest lowers TF's own log level for the test process.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "render", clip, "-o", out],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("rc=0 "), done.stderr
    noise = [line for line in lines if _ABSL_LINE.search(line)]
    assert noise == [], done.stderr
    assert lines[0] == "loading checkpoint ...", done.stderr
    assert sf.info(out).format == "FLAC"


def test_verbose_takes_the_silencer_away_before_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ddsp_pd import tf_quiet
    from ddsp_pd.commands import render

    events: list[str] = []
    monkeypatch.setattr(tf_quiet, "install", lambda: events.append("install"))
    monkeypatch.setattr(tf_quiet, "uninstall", lambda: events.append("uninstall"))
    real_check = render._check_controls

    def body(*args):
        events.append("body")
        return real_check(*args)

    monkeypatch.setattr(render, "_check_controls", body)
    missing = tmp_path / "missing.wav"

    def during(args: list[object]) -> list[str]:
        events.clear()
        run(*args)
        return events[:]

    assert during(["render", missing]) == ["install", "body", "uninstall"]
    # A command's --verbose is parsed after the group installed the hook: it must remove it.
    assert during(["render", "--verbose", missing]) == ["install", "uninstall", "body", "uninstall"]
    assert during(["--verbose", "render", missing]) == ["uninstall", "body"]
    for command in ("info", "serve", "train", "patch"):
        result = run(command, "--help")
        assert "--verbose" in result.output, command
