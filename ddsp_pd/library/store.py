"""The model library folder: its models, its manifest, and how models enter and leave it.

Layout of the folder (:func:`ddsp_pd.catalog.library_dir`)::

    manifest.json        what ddsp-pd installed: name, kind, source, size, sha256, date, files
    NAME/                one folder per model: a ddsp checkpoint, or a DDSP-VST NAME.tflite
    .downloads/          partial downloads, kept so that a later run resumes them
    .staging/            a model being assembled; renamed to NAME/ only once it is checked
    .trash/              a replaced or removed model on its way out
    .lock                held while a command changes the library

A model is installed by one rename of its checked staging folder (same file system, so it
is atomic), then the manifest is rewritten atomically (a temporary file, fsync, rename); if
that fails the rename is undone. Anything under a dot-folder is invisible to
:func:`ddsp_pd.catalog.find_checkpoints`, so a failed or interrupted download or import never
shows up as a model. Models put into the folder by hand (or by ``ddsp-pd train -o``) are
models too; they just have no manifest entry.

The model's ``sha256`` in the manifest is the SHA-256 of its sorted ``sha256sum``-style
lines (``<hex>  <relative path>\\n`` per file); ``files`` has each file's own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsp_pd.catalog import SHIPPED_DIR, display_name, find_checkpoints, library_dir
from ddsp_pd.errors import CheckpointError, OutputError
from ddsp_pd.library.download import library_write_error, sha256_of
from ddsp_pd.library.published import GROUPS, KIND_DDSP, KIND_VST

__all__ = [
    "MANIFEST_NAME",
    "InstalledModel",
    "Library",
    "ManifestEntry",
    "check_name",
    "kind_of",
]

MANIFEST_NAME = "manifest.json"
_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Free space kept beyond what a download needs (the file system's own, logs, ...).
SPACE_MARGIN = 16 << 20


def check_name(name: str) -> str:
    """``name`` if it can name a library model, else a :class:`CheckpointError` saying why.

    Letters, digits, ``.``, ``_`` and ``-``, at most 64, starting with a letter or digit; not
    a group name (``all``, ``vst``), not ending in ``.zip`` or ``.tflite`` (the catalog
    names a file by its stem).
    """
    if not _NAME.match(name):
        raise CheckpointError(
            f"'{name}' cannot name a model: use letters, digits, '.', '_' and '-' (at most 64, "
            "starting with a letter or digit); choose one with --name"
        )
    if name.lower() in GROUPS:
        raise CheckpointError(f"'{name}' is reserved (it names a group of published models)")
    if name.lower().endswith((".zip", ".tflite")):
        raise CheckpointError(f"'{name}' cannot name a model: it ends like a file name")
    return name


def kind_of(path: Path) -> str | None:
    """``ddsp`` for a checkpoint folder or zip, ``ddsp-vst`` for a ``.tflite`` or a folder of
    one, None otherwise."""
    if path.is_dir():
        if any(path.glob("*.index")):
            return KIND_DDSP
        if any(path.glob("*.tflite")):
            return KIND_VST
        return None
    suffix = path.suffix.lower()
    return {".zip": KIND_DDSP, ".tflite": KIND_VST}.get(suffix)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class ManifestEntry:
    """What the manifest records of one installed model."""

    name: str
    kind: str
    source: str
    size: int
    sha256: str
    date: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The entry as the manifest stores it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "size": self.size,
            "sha256": self.sha256,
            "date": self.date,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: Any) -> ManifestEntry | None:
        """An entry from the manifest's JSON, or None if it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                name=str(data["name"]),
                kind=str(data["kind"]),
                source=str(data.get("source", "")),
                size=int(data.get("size", 0)),
                sha256=str(data.get("sha256", "")),
                date=str(data.get("date", "")),
                files=dict(data.get("files") or {}),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class InstalledModel:
    """A model found on disk, in the library or shipped with ddsp-pd."""

    name: str
    path: Path
    kind: str | None
    size: int
    shipped: bool
    entry: ManifestEntry | None = None


class Library:
    """The model library at ``root`` (default: :func:`ddsp_pd.catalog.library_dir`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else library_dir()
        self.manifest_problem: str | None = None

    # ----------------------------------------------------------------- paths

    @property
    def manifest_path(self) -> Path:
        """``manifest.json`` in the library."""
        return self.root / MANIFEST_NAME

    @property
    def downloads(self) -> Path:
        """Where partial downloads wait to be resumed."""
        return self.root / ".downloads"

    def model_path(self, name: str) -> Path:
        """Where the model ``name`` is (or would be) installed."""
        return self.root / name

    # ----------------------------------------------------------------- reading

    def read_manifest(self) -> dict[str, ManifestEntry]:
        """The manifest's entries by name; empty when there is none. A damaged manifest reads
        as empty and sets :attr:`manifest_problem` (it is kept aside on the next write)."""
        self.manifest_problem = None
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self.manifest_problem = f"cannot read {self.manifest_path}: {exc.strerror or exc}"
            return {}
        try:
            data = json.loads(text)
            models = data["models"]
            if not isinstance(models, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self.manifest_problem = f"{self.manifest_path} is damaged; it is ignored"
            return {}
        entries = {}
        for name, value in models.items():
            entry = ManifestEntry.from_json(value)
            if entry is not None and entry.name == name:
                entries[name] = entry
        return entries

    def installed(self, include_shipped: bool = True) -> list[InstalledModel]:
        """Every model in the library (and, first, the shipped ones), by name."""
        manifest = self.read_manifest()
        models = []
        folders = [(SHIPPED_DIR, True)] if include_shipped else []
        folders.append((self.root, False))
        for folder, shipped in folders:
            try:
                entries = find_checkpoints([folder])
            except OSError:
                continue
            for found in entries:
                path = found.path
                models.append(
                    InstalledModel(
                        name=found.name,
                        path=path,
                        kind=kind_of(path),
                        size=_tree_size(path),
                        shipped=shipped,
                        entry=None if shipped else manifest.get(found.name),
                    )
                )
        return models

    def find(self, name: str) -> InstalledModel | None:
        """The library model named ``name`` (not a shipped one), or None."""
        for model in self.installed(include_shipped=False):
            if model.name == name:
                return model
        return None

    def existing(self, name: str) -> Path | None:
        """An existing library entry whose name equals ``name`` ignoring case (macOS and
        Windows folders do), or None."""
        if not self.root.is_dir():
            return None
        for path in self.root.iterdir():
            hidden = path.name.startswith(".") or path.name == MANIFEST_NAME
            if not hidden and display_name(path).lower() == name.lower():
                return path
        return None

    # ----------------------------------------------------------------- writing

    def ensure_writable(self) -> None:
        """Create the folder if needed and prove a file can be made in it (as root a
        read-only permission does not stop writes, so the probe is a real write)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise library_write_error(exc, self.root) from exc

    def ensure_space(self, needed: int, what: str) -> None:
        """Refuse to start when the library's file system lacks ``needed`` bytes (+ margin)."""
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return  # unknown: the writes themselves will tell
        if free < needed + SPACE_MARGIN:
            raise OutputError(
                f"not enough free space in {self.root} for {what}: it needs about "
                f"{(needed + SPACE_MARGIN) / 1e6:.0f} MB, {free / 1e6:.0f} MB are free"
            )

    @contextlib.contextmanager
    def locked(self, waiting: Callable[[], None] | None = None) -> Iterator[Library]:
        """Hold the library's lock (another ddsp-pd changing it waits); ``waiting`` is called
        if the lock is taken."""
        self.ensure_writable()
        try:
            handle = open(self.root / ".lock", "a+b")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise library_write_error(exc, self.root) from exc
        try:
            _lock(handle, waiting)
            yield self
        finally:
            handle.close()  # closing releases the lock

    def new_staging(self, name: str) -> Path:
        """A fresh, empty folder to assemble ``name`` in (on the library's file system)."""
        staging = self.root / ".staging"
        try:
            staging.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"{name}.", dir=staging))
        except OSError as exc:
            raise library_write_error(exc, self.root) from exc

    def check_new_name(self, name: str, *, replace: bool) -> Path | None:
        """Refuse a name taken by a shipped model, or by a library model unless ``replace``;
        return the library entry that would be replaced (or None)."""
        check_name(name)
        if any(e.name.lower() == name.lower() for e in find_checkpoints([SHIPPED_DIR])):
            raise CheckpointError(f"'{name}' is the name of a model shipped with ddsp-pd")
        clash = self.existing(name)
        if clash is not None and not replace:
            raise CheckpointError(
                f"a model named '{display_name(clash)}' is already in the library ({clash}); "
                "remove it first or give --force to replace it"
            )
        return clash

    def install(
        self, name: str, staging: Path, kind: str, source: str, *, replace: bool = False
    ) -> ManifestEntry:
        """Move a checked ``staging`` folder in as ``name`` and record it in the manifest.

        Call with the lock held. On any failure the library is as it was (the staging
        folder is removed; a model being replaced is put back).
        """
        try:
            old = self.check_new_name(name, replace=replace)
            entry = self._describe(name, staging, kind, source)
            _fsync_tree(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        target = self.model_path(name)
        trash = None
        try:
            if old is not None:
                trash = self._trash_path(old.name)
                os.rename(old, trash)
            os.rename(staging, target)
        except OSError as exc:
            if trash is not None and trash.exists() and not old.exists():
                os.rename(trash, old)
            shutil.rmtree(staging, ignore_errors=True)
            raise library_write_error(exc, self.root) from exc
        try:
            manifest = self.read_manifest()
            if old is not None:
                manifest.pop(display_name(old), None)
            manifest[name] = entry
            self._write_manifest(manifest)
        except BaseException:
            # Undo: the model leaves again and the replaced one comes back.
            shutil.rmtree(target, ignore_errors=True)
            if trash is not None and trash.exists():
                os.rename(trash, old)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return entry

    def remove(self, name: str) -> bool:
        """Remove the library model ``name``; False if there was none. Call with the lock
        held. Shipped models are never removed."""
        model = self.find(name)
        removed = False
        if model is not None:
            trash = self._trash_path(model.path.name)
            try:
                os.rename(model.path, trash)
            except OSError as exc:
                raise library_write_error(exc, self.root) from exc
            manifest = self.read_manifest()
            if manifest.pop(name, None) is not None:
                try:
                    self._write_manifest(manifest)
                except BaseException:
                    os.rename(trash, model.path)
                    raise
            if trash.is_dir():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink(missing_ok=True)
            removed = True
        return removed

    def clean_staging(self) -> None:
        """Remove what interrupted runs left in ``.staging`` and ``.trash`` (never downloads:
        those resume). Call with the lock held."""
        for folder in (self.root / ".staging", self.root / ".trash"):
            shutil.rmtree(folder, ignore_errors=True)

    # ----------------------------------------------------------------- internals

    def _trash_path(self, name: str) -> Path:
        trash = self.root / ".trash"
        trash.mkdir(exist_ok=True)
        return trash / f"{name}.{secrets.token_hex(4)}"

    def _describe(self, name: str, staging: Path, kind: str, source: str) -> ManifestEntry:
        files = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = path.relative_to(staging).as_posix()
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
        lines = "".join(f"{info['sha256']}  {rel}\n" for rel, info in sorted(files.items()))
        return ManifestEntry(
            name=name,
            kind=kind,
            source=source,
            size=sum(info["size"] for info in files.values()),
            sha256=hashlib.sha256(lines.encode("utf-8")).hexdigest(),
            date=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            files=files,
        )

    def _write_manifest(self, entries: dict[str, ManifestEntry]) -> None:
        """Write the manifest atomically; a damaged one is kept aside first, not lost."""
        if self.manifest_problem is not None and self.manifest_path.exists():
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            with contextlib.suppress(OSError):
                os.replace(self.manifest_path, self.root / f"{MANIFEST_NAME}.damaged-{stamp}")
            self.manifest_problem = None
        data = {
            "format": _FORMAT,
            "models": {name: entries[name].as_json() for name in sorted(entries)},
        }
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=self.root)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.manifest_path)
            tmp = None
        except OSError as exc:
            raise library_write_error(exc, self.root) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _fsync_tree(folder: Path) -> None:
    """Flush a staged model to disk before it is renamed in (a crash leaves it whole)."""
    if sys.platform == "win32":
        return
    try:
        for path in folder.rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # not every file system can
            raise


def _lock(handle: Any, waiting: Callable[[], None] | None) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            if waiting is not None:
                waiting()
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if waiting is not None:
            waiting()
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
