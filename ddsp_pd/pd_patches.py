"""Where the Pure Data patches are, and copying them somewhere the user can edit them.

The patches live in the project's ``patches/`` folder (beside the ``ddsp_pd`` package in a
checkout or an editable install). ``DDSP_PD_PATCHES`` points elsewhere, e.g. for a packaged
install that puts them under ``share/``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ddsp_pd.errors import DdspPdError, OutputError

MAIN_PATCH = "timbre_transfer.pd"
ENV_VAR = "DDSP_PD_PATCHES"


class PatchesNotFoundError(DdspPdError):
    """The folder with ``timbre_transfer.pd`` cannot be found."""

    code = "patches"


def _candidates() -> list[Path]:
    found = []
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser())
    found.append(Path(__file__).resolve().parents[1] / "patches")
    found.append(Path(sys.prefix) / "share" / "ddsp-pd" / "patches")
    return found


def patches_dir() -> Path:
    """The folder holding ``timbre_transfer.pd`` and ``abstractions/``."""
    for folder in _candidates():
        if (folder / MAIN_PATCH).is_file():
            return folder.resolve()
    tried = ", ".join(str(p) for p in _candidates())
    raise PatchesNotFoundError(f"Pd patches not found (looked in {tried}); set {ENV_VAR}")


def patch_files(folder: Path | None = None) -> list[Path]:
    """Every ``.pd`` file of the patches, relative to their folder, main patch first."""
    root = folder or patches_dir()
    files = sorted(p.relative_to(root) for p in root.rglob("*.pd"))
    return sorted(files, key=lambda p: (p.name != MAIN_PATCH, str(p)))


def copy_patches(dest: Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the patches (keeping ``abstractions/`` beside the main patch) into ``dest``.

    Refuses to replace existing files unless ``overwrite``; returns the files written.
    """
    source = patches_dir()
    dest = dest.expanduser()
    if dest.resolve() == source:
        raise OutputError(f"{dest} is where the patches already are")
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"cannot copy the patches into {dest}: it is not a folder")
    files = patch_files(source)
    clashes = [f for f in files if (dest / f).exists()]
    if clashes and not overwrite:
        raise OutputError(f"{dest / clashes[0]} already exists (use --force to replace it)")
    written = []
    try:
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target)
            written.append(target)
    except OSError as exc:
        raise OutputError(f"cannot copy the patches into {dest}: {exc.strerror}") from exc
    return written
