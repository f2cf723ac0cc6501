"""End to end: ``timbre_transfer.pd`` in a headless Pd, clicked through like a user would.

The server under test is a switchable fixture: ``fake`` (the python-osc stand-in of
``tests/pd_harness.py``, quick) and ``real`` (``ddsp-pd serve`` in a subprocess with the
reference checkpoint). The same steps run against both:

1. connect; the patch tells the server Pd's sample rate (Pd runs at 48 kHz here);
2. change controls in Pd and read them back from the server's own state (``/ddsp/status``);
3. pick the checkpoint from the server's list;
4. choose an input file, render, and check that the result that lands in the patch's result
   array (the patch writes it out on a message) is, sample for sample, the server's file;
5. the same for the six feature curves;
6. ask for a missing input file and check the error the patch displays.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import AUDIO, REFERENCE, REFERENCE_CHECKPOINT, needs_fixtures
from pd_harness import PD, PD_MISSING, FakeServer, RealServer, free_udp_port, pd_with_server

pytestmark = [pytest.mark.pd, pytest.mark.skipif(PD is None, reason=PD_MISSING)]

PD_RATE = 48000


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeServer | RealServer]:
    """The server the patch talks to: the fake one, or ``ddsp-pd serve`` itself."""
    renders = tmp_path / "renders"
    renders.mkdir()
    if request.param == "fake":
        with FakeServer(
            free_udp_port(), renders, checkpoints={"checkpoint": REFERENCE_CHECKPOINT}
        ) as fake:
            yield fake
        return
    real = RealServer(
        free_udp_port(),
        renders,
        REFERENCE_CHECKPOINT,
        tmp_path / "server.log",
        checkpoint_dirs=(REFERENCE,),
    )
    real.start()
    try:
        yield real
    finally:
        real.stop()


def _clip(tmp_path: Path) -> Path:
    """One second of a fixture clip, so that the real render stays short."""
    audio, rate = sf.read(AUDIO / "syn_vibrato.wav", dtype="float32")
    path = tmp_path / "input clip.wav"  # a space in the name, as users' files have
    sf.write(path, audio[:rate], rate, subtype="PCM_16")
    return path


def _server_log(server: FakeServer | RealServer) -> str:
    return server.log() if isinstance(server, RealServer) else ""


@needs_fixtures
def test_timbre_transfer_end_to_end(server: FakeServer | RealServer, tmp_path: Path) -> None:
    clip = _clip(tmp_path)
    slow = 240.0 if server.kind == "real" else 15.0
    try:
        with pd_with_server(server, tmp_path, extra_args=("-r", str(PD_RATE))) as (pd, _):
            pd.wait_for(r"^ddsp-pd: state end 1$")

            # 2. controls typed in Pd reach the server: ask for its state and read them back
            changes = [
                ("octave", 1.0),
                ("loudness", -6.0),
                ("adjust", 0.0),
                ("seed", 7.0),
                ("normalize", 0.0),
            ]
            for name, value in changes:
                mark = pd.mark()
                pd.send("ddsp-pd", "set", name, value)
                pd.wait_for(rf"^ddsp-pd: state {name} {value:g}$", since=mark)
            mark = pd.mark()
            pd.send("ddsp-pd", "status")
            pd.wait_for(r"^ddsp-pd: state end 1$", since=mark)
            status = pd.lines[mark:]
            for name, value in [*changes, ("samplerate", PD_RATE)]:
                assert f"ddsp-pd: state {name} {value:g}" in status, (name, status)

            # 3. the checkpoint, chosen from the server's list
            mark = pd.mark()
            pd.send("ddsp-pd", "checkpoints")
            count = int(pd.wait_for(r"^ddsp-pd: checkpoints (\d+)$", since=mark).group(1))
            assert count >= 1
            entry = pd.wait_for(r"^ddsp-pd: checkpoint 0 (\S+) (.+)$", since=mark).groups()
            mark = pd.mark()
            pd.send("ddsp-pd", "checkpoint", 0)
            loaded = pd.wait_for(r"^ddsp-pd: loaded (\S+) (\S+) (\d+)$", since=mark, timeout=slow)
            assert loaded.group(1) == entry[0]
            assert int(loaded.group(3)) == 16000  # the reference model's rate (fixtures README)

            # 4. input, render, the result in the patch's array
            mark = pd.mark()
            pd.send("ddsp-pd", "input", clip)
            frames_in, rate_in = pd.wait_for(r"^ddsp-pd: input (\d+) (\d+)$", since=mark).groups()
            assert (int(frames_in), int(rate_in)) == (16000, 16000)
            mark = pd.mark()
            pd.send("ddsp-pd", "render")
            result = pd.wait_for(r"^ddsp-pd: result (\S+) (\d+) (\d+)$", since=mark, timeout=slow)
            path, frames, rate = result.group(1), int(result.group(2)), int(result.group(3))
            feats_path = pd.wait_for(
                r"^ddsp-pd: features (\S+) (\d+) \d+$", since=mark, timeout=slow
            ).group(1)
            saved, feats_saved = tmp_path / "result from pd.wav", tmp_path / "curves from pd.wav"
            pd.send("ddsp-pd", "save", saved)
            pd.wait_for(r"^ddsp-pd: saved ", since=mark)
            pd.send("ddsp-pd", "save-features", feats_saved)
            pd.wait_for(r"^ddsp-pd: saved-features ", since=mark)

            # 6. an error the user caused, shown in the patch
            missing = tmp_path / "missing take.wav"
            mark = pd.mark()
            pd.send("ddsp-pd", "input", missing)
            shown = pd.wait_for(r"^ddsp-pd: error (.*)$", since=mark).group(1).replace("\\ ", " ")
            assert shown.startswith("input: "), shown
            assert missing.name in shown, shown
            assert pd.bad_lines() == []
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nserver log:\n{_server_log(server)}") from None

    # The result plays at Pd's rate because the patch told the server that rate.
    served, served_rate = sf.read(path, dtype="float32")
    assert served_rate == rate == PD_RATE
    assert len(served) == frames
    # One second of input at 16 kHz, rendered at 48 kHz: 48000 samples (the model renders
    # n_frames * hop samples, n_frames = 16000 // 64, so no frame is lost for this length).
    assert frames == PD_RATE
    in_pd, pd_rate = sf.read(saved, dtype="float32")
    assert pd_rate == PD_RATE
    # Pd reads the float WAV into its array and writes it back as float: nothing may change.
    np.testing.assert_array_equal(in_pd, served)
    assert np.max(np.abs(served)) > 0  # a silent result would make the comparison empty

    curves, _ = sf.read(feats_path, dtype="float32", always_2d=True)
    curves_in_pd, _ = sf.read(feats_saved, dtype="float32", always_2d=True)
    assert curves.shape[1] == 6
    np.testing.assert_array_equal(curves_in_pd, curves)
    # The adjusted curves show the controls set in Pd: with auto-adjust off, f0 is one octave
    # up where the input is voiced (and not gated) and loudness is 6 dB down everywhere.
    voiced = (curves[:, 0] > 0) & (curves[:, 3] > 0) & (curves[:, 0] < 2000)
    assert voiced.sum() > len(curves) // 2
    np.testing.assert_allclose(curves[voiced, 3], 2 * curves[voiced, 0], rtol=1e-6)
    np.testing.assert_allclose(curves[:, 4], curves[:, 2] - 6, atol=1e-4)
    if isinstance(server, FakeServer):
        assert server.state["input"] == str(missing.parent / clip.name)
        assert (server.state["octave"], server.state["seed"], server.state["adjust"]) == (1, 7, 0)
