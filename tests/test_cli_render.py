"""``ddsp-pd render`` and ``ddsp-pd info`` end to end, in process (click's runner)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ddsp_pd.cli import main
from tests.conftest import AUDIO, REFERENCE, REFERENCE_CHECKPOINT, needs_fixtures

CASE = REFERENCE / "cases" / "synthetic_vibrato.npz"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    for word in words:
        assert word in error_lines[0], error_lines[0]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """Two seconds of a fixture melody at 44.1 kHz stereo: a rate and layout the model lacks."""
    audio, rate = sf.read(str(AUDIO / "midi_flute.wav"), dtype="float32")
    audio = audio[: 2 * rate]
    import soxr

    up = soxr.resample(audio, rate, 44100)
    path = tmp_path / "clip.wav"
    sf.write(str(path), np.stack([up, 0.5 * up], axis=1), 44100)
    return path


@needs_fixtures
def test_render_audio_file_writes_input_rate_normalised(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    result = run("render", clip, "-c", REFERENCE_CHECKPOINT, "-o", out)
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 44100
    # 2 s of input -> 2 s of output (the model renders whole frames; at most one hop short).
    assert abs(len(audio) / rate - 2.0) < 64 / 16000 + 1e-3
    # Normalised to -1 dBFS peak, within 0.05 dB.
    assert abs(20 * np.log10(np.max(np.abs(audio))) - (-1.0)) < 0.05
    assert "auto-adjust" in result.output


@needs_fixtures
def test_render_sample_rate_option(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out22.wav"
    result = run("render", clip, "-c", REFERENCE_CHECKPOINT, "-o", out, "--sample-rate", "22050")
    assert result.exit_code == 0, result.output
    assert sf.info(str(out)).samplerate == 22050


@needs_fixtures
def test_render_features_equals_the_model_on_the_same_controls(tmp_path: Path) -> None:
    """Black box: --features with every control neutral gives exactly the model's render."""
    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.model import DdspModel

    case = np.load(CASE)
    f0, conf = case["f0_hz"], case["f0_confidence"]
    ld = case["loudness_v3_full"][: len(f0)]
    feats = tmp_path / "feats.npz"
    np.savez(feats, f0_hz=f0, f0_confidence=conf, loudness_db=ld)
    out = tmp_path / "out.wav"
    result = run(
        "render",
        "--features",
        feats,
        "-c",
        REFERENCE_CHECKPOINT,
        "-o",
        out,
        "--no-adjust",
        "--no-normalize",
        "--confidence",
        "0",
        "--seed",
        "3",
    )
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000
    expected = DdspModel(load_checkpoint(REFERENCE_CHECKPOINT)).render(f0, ld, seed=3)
    expected = np.asarray(expected).reshape(-1)
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=1e-6)
    # The controls reach the model: a loudness shift changes the render.
    shifted = tmp_path / "shifted.wav"
    result = run(
        "render",
        "--features",
        feats,
        "-c",
        REFERENCE_CHECKPOINT,
        "-o",
        shifted,
        "--no-adjust",
        "--no-normalize",
        "--confidence",
        "0",
        "--seed",
        "3",
        "--loudness",
        "-12",
    )
    assert result.exit_code == 0, result.output
    assert np.max(np.abs(sf.read(str(shifted), dtype="float32")[0] - audio)) > 1e-3


def _checkpoint_copy(tmp_path: Path, statistics: bytes | None) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(REFERENCE_CHECKPOINT, target)
    (target / "dataset_statistics.pkl").unlink()
    if statistics is not None:
        (target / "dataset_statistics.pkl").write_bytes(statistics)
    return target


@needs_fixtures
def test_adjust_without_statistics_renders_and_says_why(clip: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint_copy(tmp_path, None)
    out = tmp_path / "out.wav"
    result = run("render", clip, "-c", ckpt, "-o", out, "--adjust")
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "auto-adjust skipped" in result.output
    assert "dataset_statistics.pkl" in result.output


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch MARKER",))


@needs_fixtures
def test_malicious_statistics_are_refused_and_render_goes_on(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = _checkpoint_copy(tmp_path, pickle.dumps({"quantile_transform": _Evil()}))
    result = run("render", clip, "-c", ckpt, "-o", tmp_path / "out.wav")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "MARKER").exists()
    assert "auto-adjust skipped" in result.output
    assert "unusable" in result.output


@needs_fixtures
@pytest.mark.parametrize(
    ("make_args", "words"),
    [
        (lambda t: ["render", t / "missing.wav"], ["not found", "missing.wav"]),
        (lambda t: ["render", t / "text.wav"], ["text.wav", "audio"]),
        (lambda t: ["render", t / "silent.wav"], ["silent"]),
        (lambda t: ["render", AUDIO / "syn_glide.wav", "--octave", "9"], ["octave"]),
        (lambda t: ["render", AUDIO / "syn_glide.wav", "--confidence", "nan"], ["confidence"]),
        (lambda t: ["render", "--features", t / "bad.npz"], ["bad.npz"]),
    ],
)
def test_bad_input_is_one_line_error(tmp_path: Path, make_args, words) -> None:
    (tmp_path / "text.wav").write_text("not audio at all")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, np.float32), 16000)
    np.savez(tmp_path / "bad.npz", f0_hz=np.ones(10))
    args = [*make_args(tmp_path), "-c", REFERENCE_CHECKPOINT, "-o", tmp_path / "o.wav"]
    assert_one_line_error(run(*args), *words)
    assert not (tmp_path / "o.wav").exists()


@needs_fixtures
def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    no_gin = tmp_path / "no_gin"
    shutil.copytree(REFERENCE_CHECKPOINT, no_gin)
    (no_gin / "operative_config-0.gin").unlink()
    truncated = tmp_path / "truncated"
    shutil.copytree(REFERENCE_CHECKPOINT, truncated)
    data = truncated / "ckpt-100.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    for ckpt, word in [(tmp_path / "nope", "not found"), (no_gin, "gin"), (truncated, "")]:
        result = run("render", AUDIO / "syn_glide.wav", "-c", ckpt, "-o", tmp_path / "o.wav")
        assert_one_line_error(result, word)


@needs_fixtures
def test_info_describes_the_reference_checkpoint() -> None:
    result = run("info", REFERENCE_CHECKPOINT)
    assert result.exit_code == 0, result.output
    for word in ("2.x", "16000", "250", "60", "65", "dataset_statistics"):
        assert word in result.output, word
