"""Keep TensorFlow's start-up chatter off the terminal unless the user asks for it.

TensorFlow's C++ core logs through absl before absl's logging is initialised, and those lines
ignore ``TF_CPP_MIN_LOG_LEVEL``: about six lines (oneDNN, CUDA probing, the pre-init banner) on
every start of every command that loads a model. They are written straight to file descriptor 2
while ``tensorflow`` is imported, so the only way to hold them back is to point that descriptor
elsewhere for the duration of the import.

:func:`install` adds an import hook that does exactly that, lazily: nothing is imported until a
command really needs TensorFlow. Everything captured that is not such a log line (a Python
warning, another thread's output) is written back to stderr afterwards, and if the import fails
the whole capture is written back, so nothing that could explain a failure is lost.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType

#: Modules whose first import is silenced.
NOISY_MODULES = ("tensorflow",)

# absl's line format ("I0000 00:00:1796150861.386730    4622 port.cc:153] ..."), its pre-init
# banner, and the second line of TensorFlow's CPU-feature notice.
_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .*)$"
)

_finder: _QuietFinder | None = None


def is_noise(line: bytes) -> bool:
    """Whether one line of stderr (without its newline) is TensorFlow/absl start-up logging."""
    return _NOISE.match(line.rstrip(b"\r")) is not None


def strip_noise(captured: bytes) -> bytes:
    """``captured`` without its TensorFlow/absl start-up log lines."""
    kept = [line for line in captured.splitlines(keepends=True) if not is_noise(line.rstrip(b"\n"))]
    return b"".join(kept)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Capture file descriptor 2; on exit write back all but the start-up log lines.

    If the body raises, everything captured is written back. When descriptor 2 cannot be
    duplicated (closed, say) the body runs unchanged.
    """
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured = sink.read()
            rest = captured if failed else strip_noise(captured)
            if rest:
                with contextlib.suppress(OSError):
                    os.write(2, rest)


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` inside :func:`quiet_stderr`."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Hand the module its real loader before it runs, so nothing inside sees this wrapper.
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        with quiet_stderr():
            self._inner.exec_module(module)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``names`` through the other finders and wraps their loader, once each."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = set(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._names:
            return None
        self._names.discard(fullname)
        if not self._names:
            uninstall()
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install(names: Sequence[str] = NOISY_MODULES) -> None:
    """Silence the start-up logging of ``names`` when each is first imported (idempotent).

    Modules already imported are left alone; with none left, nothing is installed.
    """
    global _finder
    pending = [name for name in names if name not in sys.modules]
    if _finder is not None or not pending:
        return
    _finder = _QuietFinder(pending)
    sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the hook of :func:`install`, if it is there."""
    global _finder
    if _finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_finder)
        _finder = None
