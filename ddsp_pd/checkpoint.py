"""Find and read a ddsp checkpoint: a training directory or a ``.zip`` of one.

A directory holds ``ckpt-N.index`` + ``ckpt-N.data-*`` (TensorFlow object-based
checkpoints, up to ten of them), a ``checkpoint`` text file naming the latest one,
``operative_config-0.gin`` and optionally ``dataset_statistics.pkl``. Only the variables
under ``model/`` are read; optimizer state is ignored.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ddsp_pd.config import ModelConfig, config_from_gin, detect_era, parameter_count
from ddsp_pd.errors import CheckpointError
from ddsp_pd.gin_config import read_gin

__all__ = [
    "GIN_NAME",
    "STATISTICS_NAME",
    "Checkpoint",
    "CheckpointInfo",
    "inspect_checkpoint",
    "load_checkpoint",
    "model_variable_name",
]

GIN_NAME = "operative_config-0.gin"
STATISTICS_NAME = "dataset_statistics.pkl"
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = "model/"
_CKPT_INDEX = re.compile(r"^(?P<prefix>ckpt(?:-(?P<step>\d+))?)\.index$")
# A zip of a checkpoint is a few tens of MB; refuse archives that unpack to absurd sizes.
_ZIP_MAX_BYTES = 4 << 30
_ZIP_MAX_FILES = 10000


@dataclass(frozen=True)
class CheckpointInfo:
    """What can be learnt without reading the weights (works on index-only dirs)."""

    path: Path
    directory: Path
    name: str
    prefix: Path
    era: str
    config: ModelConfig | None
    refusal: str | None
    shapes: dict[str, tuple[int, ...]]
    parameter_count: int
    statistics_path: Path | None
    has_data: bool
    available: tuple[str, ...]
    statistics_size: int | None = None
    statistics_layout: str | None = None
    statistics_fields: tuple[str, ...] | None = None
    statistics_problem: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its config and the model variables by ddsp name.

    ``variables`` maps e.g. ``decoder/rnn/rnn/cell/kernel`` to a float32 array.
    ``statistics_path`` is the ``dataset_statistics.pkl`` beside the weights, or None.
    """

    path: Path
    name: str
    config: ModelConfig
    variables: dict[str, np.ndarray] = field(repr=False)
    statistics_path: Path | None = None
    directory: Path | None = None
    # Keeps a zip's extraction directory alive as long as the checkpoint is.
    _tmpdir: Any = field(default=None, repr=False, compare=False)

    @property
    def parameter_count(self) -> int:
        """Number of scalars in the model variables."""
        return parameter_count({k: v.shape for k, v in self.variables.items()})


def model_variable_name(key: str) -> str | None:
    """``model/decoder/.../kernel/.ATTRIBUTES/VARIABLE_VALUE`` -> ``decoder/.../kernel``.

    None for anything outside the model (optimizer state, slot variables, counters).
    """
    if not key.startswith(_PREFIX) or not key.endswith(_SUFFIX) or ".OPTIMIZER_SLOT" in key:
        return None
    return key[len(_PREFIX) : -len(_SUFFIX)]


# ------------------------------------------------------------------ locating


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip without following links or writing outside ``target``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > _ZIP_MAX_FILES:
                raise CheckpointError(f"zip {archive.name} has too many entries")
            total = 0
            for info in members:
                name = PurePosixPath(info.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts or ":" in info.filename:
                    raise CheckpointError(
                        f"zip {archive.name} contains an unsafe path: {info.filename}"
                    )
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise CheckpointError(f"zip {archive.name} contains a link: {info.filename}")
                total += info.file_size
                if total > _ZIP_MAX_BYTES:
                    raise CheckpointError(f"zip {archive.name} unpacks to more than 4 GiB")
            for info in members:
                name = PurePosixPath(info.filename.replace("\\", "/"))
                if info.is_dir() or name.name.startswith("._") or "__MACOSX" in name.parts:
                    continue
                dest = target.joinpath(*name.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"not a valid zip file: {archive}") from exc
    except (OSError, EOFError, zipfile.LargeZipFile, RuntimeError) as exc:
        raise CheckpointError(f"cannot extract {archive.name}: {exc}") from exc


def _checkpoint_dir_in(root: Path) -> Path:
    """The one directory under ``root`` (a zip's contents) that holds a checkpoint."""
    candidates = sorted({p.parent for p in root.rglob("*.index") if _CKPT_INDEX.match(p.name)})
    if not candidates:
        candidates = sorted({p.parent for p in root.rglob(GIN_NAME)})
    if not candidates:
        raise CheckpointError("the zip contains no checkpoint (no ckpt-N.index)")
    if len(candidates) > 1:
        names = ", ".join(str(c.relative_to(root)) or "." for c in candidates)
        raise CheckpointError(f"the zip contains several checkpoint folders: {names}")
    return candidates[0]


def _open_location(path: str | Path) -> tuple[Path, Path, str | None, Any]:
    """Resolve a user path to (original path, directory, forced ckpt prefix, tmpdir)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file() and zipfile.is_zipfile(path):
        tmp = tempfile.TemporaryDirectory(prefix="ddsp-pd-ckpt-")
        try:
            _safe_extract(path, Path(tmp.name))
            directory = _checkpoint_dir_in(Path(tmp.name))
        except BaseException:
            tmp.cleanup()
            raise
        return path, directory, None, tmp
    if path.is_file():
        # A ckpt file itself: ckpt-N.index or ckpt-N.data-0000x-of-0000y.
        match = re.match(r"^(ckpt(?:-\d+)?)\.(index|data-\d+-of-\d+)$", path.name)
        if path.suffix == ".zip":
            raise CheckpointError(f"not a valid zip file: {path}")
        if not match:
            raise CheckpointError(
                f"{path} is neither a checkpoint directory, a zip, nor a ckpt-N.index file"
            )
        return path, path.parent, match.group(1), None
    return path, path, None, None


def _available(directory: Path) -> dict[str, int]:
    """Checkpoint prefixes that have an index file, with their step number."""
    found = {}
    for index in directory.glob("*.index"):
        match = _CKPT_INDEX.match(index.name)
        if match:
            found[match.group("prefix")] = int(match.group("step") or -1)
    return found


def _named_in_checkpoint_file(directory: Path) -> str | None:
    state = directory / "checkpoint"
    if not state.is_file():
        return None
    try:
        text = state.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r'^\s*model_checkpoint_path\s*:\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        return None
    # Paths written on the training machine may be absolute: only the name counts here.
    return PurePosixPath(match.group(1).replace("\\", "/")).name


def _choose(directory: Path, forced: str | None) -> str:
    available = _available(directory)
    if forced is not None:
        if forced not in available:
            raise CheckpointError(f"no {forced}.index in {directory}")
        return forced
    if not available:
        raise CheckpointError(f"no checkpoint index (ckpt-N.index) in {directory}")
    named = _named_in_checkpoint_file(directory)
    if named in available:
        return named
    return max(available, key=lambda prefix: (available[prefix], prefix))


def _list_shapes(prefix: Path) -> dict[str, tuple[int, ...]]:
    import tensorflow as tf

    try:
        listed = tf.train.list_variables(str(prefix))
    except Exception as exc:  # TF raises several error types for a bad index
        raise CheckpointError(
            f"corrupt checkpoint index {prefix.name}.index: {_first_line(exc)}"
        ) from exc
    shapes = {}
    for key, shape in listed:
        name = model_variable_name(key)
        if name is not None:
            shapes[name] = tuple(int(d) for d in shape)
    if not shapes:
        raise CheckpointError(f"checkpoint {prefix.name} has no model/ variables")
    return shapes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _statistics(directory: Path) -> Path | None:
    path = directory / STATISTICS_NAME
    return path if path.is_file() else None


def _gin(directory: Path) -> dict[str, Any]:
    gin_path = directory / GIN_NAME
    if not gin_path.is_file():
        raise CheckpointError(f"no {GIN_NAME} in {directory}: the model's sizes are unknown")
    return read_gin(gin_path)


def _describe_statistics(path: Path | None) -> dict[str, Any]:
    """Size, layout, fields and any problem of a statistics file (read safely)."""
    if path is None:
        return {}
    out: dict[str, Any] = {"statistics_size": path.stat().st_size}
    try:
        from ddsp_pd.statistics import load_statistics
    except ImportError:  # the statistics module is optional for describing a checkpoint
        return out
    from ddsp_pd.errors import DdspPdError

    try:
        stats = load_statistics(path)
    except DdspPdError as exc:
        out["statistics_problem"] = exc.message
        return out
    out["statistics_layout"] = str(getattr(stats, "layout", "")) or None
    fields = {"mean_pitch", "quantile_transform", *getattr(stats, "extra", {})}
    first = [f for f in ("mean_pitch", "mean_pitch_note", "quantile_transform") if f in fields]
    out["statistics_fields"] = (*first, *sorted(fields - set(first)))
    return out


# ------------------------------------------------------------------ public API


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Describe a checkpoint from its gin file and index alone (no weights needed).

    An unsupported era does not raise here: ``refusal`` says why it cannot be rendered.
    Missing paths, indexes or gin files raise :class:`CheckpointError`.
    """
    original, directory, forced, tmp = _open_location(path)
    try:
        name = _choose(directory, forced)
        bindings = _gin(directory)
        era = detect_era(bindings)
        prefix = directory / name
        shapes = _list_shapes(prefix)
        config, refusal = None, None
        try:
            config = config_from_gin(bindings, shapes)
        except CheckpointError as exc:
            refusal = exc.message
        has_data = any(directory.glob(f"{name}.data-*"))
        stats = _statistics(directory)
        available = _available(directory)
        return CheckpointInfo(
            path=original,
            directory=directory,
            name=name,
            prefix=prefix,
            era=era,
            config=config,
            refusal=refusal,
            shapes=shapes,
            parameter_count=parameter_count(shapes),
            statistics_path=stats if tmp is None else None,
            has_data=has_data,
            available=tuple(sorted(available, key=lambda p: (available[p], p))),
            **_describe_statistics(stats),
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


def _read_variables(prefix: Path, names: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    data_files = list(prefix.parent.glob(f"{prefix.name}.data-*"))
    if not data_files:
        raise CheckpointError(f"checkpoint {prefix.name} has an index but no .data file")
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except Exception as exc:
        raise CheckpointError(f"cannot open checkpoint {prefix.name}: {_first_line(exc)}") from exc
    variables = {}
    for name, shape in names.items():
        key = f"{_PREFIX}{name}{_SUFFIX}"
        try:
            value = reader.get_tensor(key)
        except Exception as exc:  # DataLossError, OutOfRangeError, ... on a damaged file
            raise CheckpointError(
                f"corrupt or truncated checkpoint data {prefix.name}: {_first_line(exc)}"
            ) from exc
        value = np.asarray(value)
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"checkpoint variable {name} has an unexpected shape")
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(f"checkpoint variable {name} is not floating point")
        value = value.astype(np.float32, copy=False)
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"checkpoint variable {name} contains NaN or infinity")
        variables[name] = value
    return variables


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint directory, a zip of one, or a ``ckpt-N.index`` file.

    Chooses the ckpt named in the ``checkpoint`` file, else the highest N (a bare
    ``ckpt.index`` also counts). Raises :class:`CheckpointError` with a one-line message
    for a missing path, no index, no gin file, corrupt data or an unsupported era.
    """
    original, directory, forced, tmp = _open_location(path)
    try:
        name = _choose(directory, forced)
        bindings = _gin(directory)
        prefix = directory / name
        shapes = _list_shapes(prefix)
        config = config_from_gin(bindings, shapes)
        variables = _read_variables(prefix, shapes)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return Checkpoint(
        path=original,
        name=name,
        config=config,
        variables=variables,
        statistics_path=_statistics(directory),
        directory=directory,
        _tmpdir=tmp,
    )
