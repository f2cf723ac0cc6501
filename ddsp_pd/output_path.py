"""Checks on an output path made before any work: is it an input, and can it be written?

All of them are cheap file-system look-ups, so a command can refuse a bad output in
milliseconds instead of after loading a model and rendering.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from ddsp_pd.errors import OutputError


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name the same file, through symlinks and hard links too.

    Existing files are compared by device and inode (what ``os.stat`` sees after following
    links); otherwise the fully resolved paths are compared.
    """
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        pass
    else:
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
    try:
        ra, rb = Path(a).resolve(), Path(b).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
        return False
    return os.path.normcase(ra) == os.path.normcase(rb)


def file_in_the_way(folder: str | os.PathLike[str]) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) if it is not a folder.

    That is the path to name when creating ``folder`` fails with "File exists" or
    "Not a directory". Returns None when the nearest existing one is a folder.
    """
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
        if candidate.is_symlink():  # a dangling link: cannot be a folder
            return candidate
    return None


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise :class:`OutputError` unless a file can be created at ``path``; return it.

    ``path`` must not be a folder, every existing ancestor must be a folder, and the nearest
    existing one must accept a new file (tried for real with a temporary file that is removed
    at once, so read-only mounts and access lists count). Missing folders are not created.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder")
    blocker = file_in_the_way(target.parent)
    if blocker is not None:
        raise OutputError(f"cannot write {target}: {blocker} is not a folder")
    folder = next((p for p in (target.parent, *target.parent.parents) if p.is_dir()), Path("."))
    probe = folder / f".ddsp-pd-probe.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(f"cannot write {target}: {reason} (folder {folder})") from err
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return target
