"""Where checkpoints live: the shipped default, the user's model library, and lookup by name.

The model library is a per-user folder (``<user data>/ddsp-pd/checkpoints``, or
``$DDSP_PD_MODELS_DIR``) that ``ddsp-pd models`` downloads and imports into; every model in
it, and in the shipped folder, is usable by name wherever a checkpoint is asked for.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ddsp_pd.errors import CheckpointError

#: The repository's own model folder (the package is installed editable from the repo).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
if not SHIPPED_DIR.is_dir():  # a wheel install puts the data files under the prefix
    SHIPPED_DIR = Path(sys.prefix) / "share" / "ddsp-pd" / "checkpoints"
#: The model that renders when the caller names none.
DEFAULT_NAME = "default"
#: Environment variable naming the model library folder (tests, labs, portable installs).
MODELS_DIR_ENV = "DDSP_PD_MODELS_DIR"
_APP = "ddsp-pd"
_MODEL_SUFFIXES = (".zip", ".tflite")


def user_data_dir() -> Path:
    """The per-user data folder of ddsp-pd (platformdirs: XDG on Linux, the usual elsewhere)."""
    # appauthor=False: no vendor level on Windows, so the folder is %LOCALAPPDATA%\ddsp-pd.
    return Path(platformdirs.user_data_dir(_APP, appauthor=False))


def user_cache_dir() -> Path:
    """The per-user cache folder of ddsp-pd (renders, feature cache)."""
    return Path(platformdirs.user_cache_dir(_APP, appauthor=False))


def library_dir() -> Path:
    """The model library: ``$DDSP_PD_MODELS_DIR``, else ``<user data>/checkpoints``."""
    override = os.environ.get(MODELS_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return user_data_dir() / "checkpoints"


def default_checkpoint_dirs() -> list[Path]:
    """The folders searched for checkpoints when none are given: shipped, then the library."""
    return [SHIPPED_DIR, library_dir()]


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint found on disk: its display name and where it is."""

    name: str
    path: Path


def _is_checkpoint_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.index"))


def _is_model(path: Path) -> bool:
    """A ddsp checkpoint folder or zip, or a DDSP-VST model (a .tflite, or a folder of one)."""
    if path.name.startswith("."):  # the library's own .downloads/.staging, editor files
        return False
    if path.is_dir():
        # ddsp_export writes NAME/tflite/NAME.tflite, with metadata and reverb IR in NAME/.
        return (
            _is_checkpoint_folder(path)
            or any(path.glob("*.tflite"))
            or any(path.glob("tflite/*.tflite"))
        )
    return path.suffix.lower() in _MODEL_SUFFIXES and path.is_file()


def display_name(path: Path) -> str:
    """A checkpoint's name: its folder's name, or a zip's or .tflite's stem (a ckpt file: its
    folder's)."""
    path = Path(path)
    if path.suffix.lower() in _MODEL_SUFFIXES:
        return path.stem
    if path.is_file():
        path = path.parent
    return path.name


def find_checkpoints(dirs: list[Path] | None = None) -> list[CheckpointEntry]:
    """List the models directly inside each folder (a folder itself may be one), by name."""
    found: list[CheckpointEntry] = []
    seen: set[Path] = set()
    for folder in dirs if dirs is not None else default_checkpoint_dirs():
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        # Only a ckpt index makes the folder itself a model: a stray .tflite dropped into the
        # library must not hide every other model in it.
        candidates = [folder] if _is_checkpoint_folder(folder) else sorted(folder.iterdir())
        for path in candidates:
            resolved = path.resolve()
            if resolved in seen or not (path == folder or _is_model(path)):
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
    raise CheckpointError(_not_found(str(name_or_path)))


def _not_found(name: str) -> str:
    from ddsp_pd.library.published import PUBLISHED  # plain data: cheap to import

    if name in PUBLISHED:
        return (
            f"checkpoint not found: '{name}' is a published model that is not installed; "
            f"get it with: ddsp-pd models download {name}"
        )
    return f"checkpoint not found: '{name}' is neither a path nor a known name"
