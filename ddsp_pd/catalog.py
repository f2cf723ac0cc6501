"""Where checkpoints live: the shipped default, the user's folder, and lookup by name."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ddsp_pd.errors import CheckpointError

#: The repository's own model folder (the package is installed editable from the repo).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
if not SHIPPED_DIR.is_dir():  # a wheel install puts the data files under the prefix
    SHIPPED_DIR = Path(sys.prefix) / "share" / "ddsp-pd" / "checkpoints"
#: The model that renders when the caller names none.
DEFAULT_NAME = "default"


def user_data_dir() -> Path:
    """The per-user data folder of ddsp-pd (XDG on Linux, the usual places on macOS/Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "ddsp-pd"


def user_cache_dir() -> Path:
    """The per-user cache folder of ddsp-pd (renders, feature cache)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "Temp"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ddsp-pd"


def default_checkpoint_dirs() -> list[Path]:
    """The folders searched for checkpoints when none are given: shipped, then the user's."""
    return [SHIPPED_DIR, user_data_dir() / "checkpoints"]


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint found on disk: its display name and where it is."""

    name: str
    path: Path


def _is_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.index"))
    return path.suffix.lower() == ".zip" and path.is_file()


def display_name(path: Path) -> str:
    """A checkpoint's name: its folder's name, or a zip's stem (a ckpt file: its folder's)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() != ".zip":
        path = path.parent
    return path.stem if path.suffix.lower() == ".zip" else path.name


def find_checkpoints(dirs: list[Path] | None = None) -> list[CheckpointEntry]:
    """List the checkpoints directly inside each folder (a folder itself may be one), by name."""
    found: list[CheckpointEntry] = []
    seen: set[Path] = set()
    for folder in dirs if dirs is not None else default_checkpoint_dirs():
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        candidates = [folder] if _is_checkpoint(folder) else sorted(folder.iterdir())
        for path in candidates:
            resolved = path.resolve()
            if resolved in seen or not _is_checkpoint(path):
                continue
            seen.add(resolved)
            found.append(CheckpointEntry(name=display_name(path), path=resolved))
    return found


def default_checkpoint(dirs: list[Path] | None = None) -> Path:
    """The shipped default model, or a clear error while it does not exist."""
    for entry in find_checkpoints(dirs):
        if entry.name == DEFAULT_NAME:
            return entry.path
    raise CheckpointError(
        f"no default checkpoint: expected a model folder named '{DEFAULT_NAME}' in "
        f"{SHIPPED_DIR}; pass a checkpoint with -c/--checkpoint"
    )


def resolve_checkpoint(
    name_or_path: str | os.PathLike | None, dirs: list[Path] | None = None
) -> Path:
    """Turn a path, a name from the checkpoint folders, or None (the default) into a path."""
    if name_or_path is None or str(name_or_path) == "":
        return default_checkpoint(dirs)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path.resolve()
    for entry in find_checkpoints(dirs):
        if entry.name == str(name_or_path):
            return entry.path
    raise CheckpointError(
        f"checkpoint not found: '{name_or_path}' is neither a path nor a known name"
    )
