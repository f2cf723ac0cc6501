"""TensorFlow's start-up log lines are held back, and nothing else is."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ddsp_pd import tf_quiet

# What TensorFlow 2.21 prints on a CPU-only machine, whatever TF_CPP_MIN_LOG_LEVEL says.
NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796150861.386730    4622 port.cc:153] oneDNN custom operations are on.\n"
    b"I0000 00:00:1796150861.387001    4622 cudart_stub.cc:31] Could not find cuda drivers.\n"
    b"I0000 00:00:1796150874.483590    5229 cpu_feature_guard.cc:227] This TensorFlow binary\n"
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    b"E0000 00:00:1733.123 99 cuda_dnn.cc:8310] Unable to register cuDNN factory\n"
)


def test_strip_noise_keeps_everything_else():
    kept = b"a real message\nWarning: I0000 is not at the start here\n"
    assert tf_quiet.strip_noise(NOISE + kept + NOISE) == kept
    assert tf_quiet.strip_noise(b"") == b""


def _noisy_package(tmp_path: Path, name: str, body: str) -> None:
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os, sys\n"
        f"os.write(2, {NOISE!r})\n"
        "os.write(2, b'from C: kept\\n')\n"
        "print('from Python: kept', file=sys.stderr)\n" + body
    )


@pytest.fixture
def noisy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(name: str, body: str = "") -> str:
        _noisy_package(tmp_path, name, body)
        names.append(name)
        return name

    yield make
    tf_quiet.uninstall()
    for name in names:
        sys.modules.pop(name, None)


def test_first_import_is_silenced_lazily_and_once(noisy, capfd):
    name = noisy("ddsp_pd_test_noisy_ok", "VALUE = 42\n")
    tf_quiet.install([name])
    assert name not in sys.modules  # installing imports nothing
    module = __import__(name)
    assert module.VALUE == 42
    captured = capfd.readouterr().err
    # (Order aside: under capfd, Python's sys.stderr does not go through descriptor 2.)
    assert sorted(captured.splitlines()) == ["from C: kept", "from Python: kept"]
    # The module keeps its real loader, and the hook is gone after use.
    assert type(module.__loader__).__name__ != "_QuietLoader"
    assert not any(type(f).__name__ == "_QuietFinder" for f in sys.meta_path)


def test_a_failing_import_shows_everything(noisy, capfd):
    name = noisy("ddsp_pd_test_noisy_broken", "raise ImportError('broken on purpose')\n")
    tf_quiet.install([name])
    with pytest.raises(ImportError, match="broken on purpose"):
        __import__(name)
    captured = capfd.readouterr().err.encode()
    assert NOISE in captured and b"from C: kept" in captured


def test_uninstall_leaves_imports_alone(noisy, capfd):
    name = noisy("ddsp_pd_test_noisy_verbose")
    tf_quiet.install([name])
    tf_quiet.uninstall()
    __import__(name)
    assert NOISE in capfd.readouterr().err.encode()


def test_modules_already_imported_install_nothing():
    tf_quiet.install(["sys"])
    assert not any(type(f).__name__ == "_QuietFinder" for f in sys.meta_path)
