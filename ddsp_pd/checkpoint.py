"""Find and read a ddsp checkpoint: a training directory or a ``.zip`` of one.

A directory holds ``ckpt-N.index`` + ``ckpt-N.data-*`` (TensorFlow object-based
checkpoints, up to ten of them), a ``checkpoint`` text file naming the latest one,
``operative_config-0.gin`` and optionally ``dataset_statistics.pkl``. Only the variables
under ``model/`` are read; optimizer state is ignored. The weights are read with
:mod:`ddsp_pd.tensor_bundle`: loading a checkpoint never imports TensorFlow.

A zip is never unpacked whole: only the chosen checkpoint's index and data shards, its gin
file and statistics go to a private temporary folder, each copy counted as it streams and
stopped at its limit (the data shards at the bytes their index says they hold, everything
at :data:`ZIP_MAX_BYTES`); the ``checkpoint`` file is read in place and nothing else is
touched. Once the weights are in memory only the gin file and statistics
stay; :meth:`Checkpoint.close` (called when a model leaves the render engine's cache), the
checkpoint's garbage collection, or the interpreter's exit removes the rest.
"""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ddsp_pd.config import ModelConfig, config_from_gin, detect_era, parameter_count
from ddsp_pd.errors import CheckpointError
from ddsp_pd.gin_config import read_gin
from ddsp_pd.tensor_bundle import MAX_INDEX_BYTES, BundleIndex, data_file_problems, read_index
from ddsp_pd.tensor_bundle import read_tensors as read_bundle_tensors

__all__ = [
    "GIN_NAME",
    "STATISTICS_NAME",
    "ZIP_MAX_BYTES",
    "Checkpoint",
    "CheckpointInfo",
    "inspect_checkpoint",
    "load_checkpoint",
    "model_variable_name",
]

GIN_NAME = "operative_config-0.gin"
STATISTICS_NAME = "dataset_statistics.pkl"
STATE_NAME = "checkpoint"
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = "model/"
_CKPT_INDEX = re.compile(r"^(?P<prefix>ckpt(?:-(?P<step>\d+))?)\.index$")
#: The most a zip may unpack to: the chosen checkpoint's files together. The largest ddsp
#: models are ~20 MB of weights (~60 MB with optimizer state); 2 GiB leaves room for any.
ZIP_MAX_BYTES = 2 << 30
_ZIP_MAX_FILES = 10000
# The small files, each read whole: larger ones are not what they claim to be. A zip's
# ``checkpoint`` file is read in place; the others are extracted.
_SMALL_FILE_LIMITS = {GIN_NAME: 16 << 20, STATISTICS_NAME: 16 << 20, STATE_NAME: 1 << 20}
_EXTRACTED = (GIN_NAME, STATISTICS_NAME)
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckpointInfo:
    """What can be learnt without reading the weights (works on index-only dirs).

    ``has_data`` is True when every data shard the index needs is there with at least the
    bytes the index says it holds; ``data_problems`` names each missing or short shard.
    """

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
    data_problems: tuple[str, ...] = ()

    @property
    def index_only(self) -> bool:
        """True when no data shard at all is there (an index shipped for its sizes alone)."""
        return not self.has_data and all(p.endswith(" is missing") for p in self.data_problems)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its config and the model variables by ddsp name.

    ``variables`` maps e.g. ``decoder/rnn/rnn/cell/kernel`` to a float32 array.
    ``statistics_path`` is the ``dataset_statistics.pkl`` beside the weights, or None; for a
    zip it lies in the extraction folder and is gone after :meth:`close`.
    """

    path: Path
    name: str
    config: ModelConfig
    variables: dict[str, np.ndarray] = field(repr=False)
    statistics_path: Path | None = None
    directory: Path | None = None
    # A zip's extraction folder (a TemporaryDirectory: removed when collected or at exit).
    _tmpdir: Any = field(default=None, repr=False, compare=False)

    @property
    def parameter_count(self) -> int:
        """Number of scalars in the model variables."""
        return parameter_count({k: v.shape for k, v in self.variables.items()})

    def close(self) -> None:
        """Remove a zip's extracted files now; a folder's files are never touched.

        The weights stay usable (they are in memory). Safe to call more than once.
        """
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def model_variable_name(key: str) -> str | None:
    """``model/decoder/.../kernel/.ATTRIBUTES/VARIABLE_VALUE`` -> ``decoder/.../kernel``.

    None for anything outside the model (optimizer state, slot variables, counters).
    """
    if not key.startswith(_PREFIX) or not key.endswith(_SUFFIX) or ".OPTIMIZER_SLOT" in key:
        return None
    return key[len(_PREFIX) : -len(_SUFFIX)]


# ------------------------------------------------------------------ choosing a ckpt


def _choose_prefix(
    available: Mapping[str, int], named: str | None, forced: str | None, where: str
) -> str:
    """The ckpt to use: ``forced``, else the one the ``checkpoint`` file names, else highest N."""
    if forced is not None:
        if forced not in available:
            raise CheckpointError(f"no {forced}.index in {where}")
        return forced
    if not available:
        raise CheckpointError(f"no checkpoint index (ckpt-N.index) in {where}")
    if named in available:
        return named
    return max(available, key=lambda prefix: (available[prefix], prefix))


def _prefixes(names: list[str]) -> dict[str, int]:
    """Checkpoint prefixes among file names that have an index, with their step number."""
    found = {}
    for name in names:
        match = _CKPT_INDEX.match(name)
        if match:
            found[match.group("prefix")] = int(match.group("step") or -1)
    return found


def _named_in_state(text: str) -> str | None:
    """The ckpt a ``checkpoint`` state file names as the latest, by its file name alone."""
    match = re.search(r'^\s*model_checkpoint_path\s*:\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        return None
    # Paths written on the training machine may be absolute: only the name counts here.
    return PurePosixPath(match.group(1).replace("\\", "/")).name


def _available(directory: Path) -> dict[str, int]:
    return _prefixes([p.name for p in directory.glob("*.index")])


def _named_in_checkpoint_file(directory: Path) -> str | None:
    state = directory / STATE_NAME
    if not state.is_file():
        return None
    try:
        with open(state, "rb") as f:
            text = f.read(_SMALL_FILE_LIMITS[STATE_NAME]).decode("utf-8", errors="replace")
    except OSError:
        return None
    return _named_in_state(text)


# ------------------------------------------------------------------ zips


def _zip_files(zf: zipfile.ZipFile, archive: Path) -> dict[PurePosixPath, zipfile.ZipInfo]:
    """The regular files of a zip by path, after refusing unsafe names and links."""
    members = zf.infolist()
    if len(members) > _ZIP_MAX_FILES:
        raise CheckpointError(f"zip {archive.name} has too many entries")
    files = {}
    for info in members:
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in info.filename:
            raise CheckpointError(f"zip {archive.name} contains an unsafe path: {info.filename}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CheckpointError(f"zip {archive.name} contains a link: {info.filename}")
        if info.is_dir() or name.name.startswith("._") or "__MACOSX" in name.parts:
            continue
        files[name] = info
    return files


def _zip_checkpoint_folder(files: Mapping[PurePosixPath, zipfile.ZipInfo]) -> PurePosixPath:
    """The one folder of a zip that holds a checkpoint."""
    candidates = sorted({p.parent for p in files if _CKPT_INDEX.match(p.name)})
    if not candidates:
        candidates = sorted({p.parent for p in files if p.name == GIN_NAME})
    if not candidates:
        raise CheckpointError("the zip contains no checkpoint (no ckpt-N.index)")
    if len(candidates) > 1:
        names = ", ".join(str(c) for c in candidates)
        raise CheckpointError(f"the zip contains several checkpoint folders: {names}")
    return candidates[0]


class _ZipBudget:
    """Bytes still allowed out of one zip; every copy draws on it as it streams."""

    def __init__(self, archive: Path, total: int) -> None:
        self.archive = archive
        self.left = total

    def copy(
        self,
        zf: zipfile.ZipFile,
        info: zipfile.ZipInfo,
        dest: Path,
        limit: int,
        *,
        exact: bool,
        write: bool = True,
    ) -> int:
        """Copy a member to ``dest``, counting the bytes as they stream; return how many.

        ``exact``: a member of more than ``limit`` bytes is refused (a small file must be
        whole); otherwise the copy stops at ``limit`` (a data shard needs no more than its
        index says). The zip's own size fields are checked first but not trusted: the
        count is. ``write=False`` counts without storing: ``dest`` becomes a sparse file of
        that length, enough for size checks.
        """
        name = PurePosixPath(info.filename).name
        if info.file_size > ZIP_MAX_BYTES or (exact and info.file_size > limit):
            raise self._too_large(name, info.file_size, limit if exact else ZIP_MAX_BYTES)
        if not exact and limit > self.left:  # the index asks for more than may be extracted
            raise self._too_large(name, limit, self.left)
        stop = min(limit + 1, self.left + 1) if exact else limit  # one more byte shows excess
        copied = 0
        with zf.open(info) as src, open(dest, "xb") as out:
            while copied < stop:
                chunk = src.read(min(_COPY_CHUNK, stop - copied))
                if not chunk:
                    break
                copied += len(chunk)
                if copied > self.left or (exact and copied > limit):
                    raise self._too_large(name, copied, min(limit, self.left))
                if write:
                    out.write(chunk)
            if not write:
                out.truncate(copied)
        self.left -= copied
        return copied

    def _too_large(self, name: str, size: int, limit: int) -> CheckpointError:
        return CheckpointError(
            f"zip {self.archive.name}: {name} is {size:,} bytes or more, over the {limit:,} "
            f"allowed (a zip may unpack to {ZIP_MAX_BYTES >> 30} GiB at most)"
        )


def _extract_checkpoint(archive: Path, target: Path, with_data: bool) -> tuple[str, dict[str, int]]:
    """Extract what one checkpoint of ``archive`` needs into ``target``; return its prefix.

    The index is extracted first: the data shards are then copied only up to the bytes it
    says they hold. ``with_data=False`` only counts the shards' bytes (for ``info``).
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _zip_files(zf, archive)
            folder = _zip_checkpoint_folder(files)
            here = {p.name: info for p, info in files.items() if p.parent == folder}
            available = _prefixes(list(here))
            named = None
            if STATE_NAME in here and here[STATE_NAME].file_size <= _SMALL_FILE_LIMITS[STATE_NAME]:
                named = _named_in_state(zf.read(here[STATE_NAME]).decode("utf-8", "replace"))
            where = f"{archive.name}:{folder}" if str(folder) != "." else archive.name
            name = _choose_prefix(available, named, None, where)
            budget = _ZipBudget(archive, ZIP_MAX_BYTES)
            for small in _EXTRACTED:
                if small in here:
                    limit = _SMALL_FILE_LIMITS[small]
                    budget.copy(zf, here[small], target / small, limit, exact=True)
            index_name = f"{name}.index"
            budget.copy(zf, here[index_name], target / index_name, MAX_INDEX_BYTES, exact=True)
            index = read_index(target / name)
            for shard, needed in index.required_sizes().items():
                shard_name = index.data_path(shard).name
                if needed and shard_name in here:
                    dest = target / shard_name
                    budget.copy(zf, here[shard_name], dest, needed, exact=False, write=with_data)
            return name, available
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"not a valid zip file ({archive.name}): {exc}") from exc
    except (OSError, EOFError, zlib.error, zipfile.LargeZipFile, RuntimeError,
            NotImplementedError) as exc:  # fmt: skip
        raise CheckpointError(f"cannot extract {archive.name}: {exc}") from exc


# ------------------------------------------------------------------ locating


@dataclass
class _Location:
    """Where a checkpoint's files are, which ckpt is chosen, and a zip's extraction."""

    path: Path
    directory: Path
    name: str
    available: dict[str, int]
    extraction: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self.extraction is not None:
            self.extraction.cleanup()


def _locate(path: str | Path, with_data: bool = True) -> _Location:
    """Resolve a user path (folder, zip, or ckpt file) to its files and the chosen ckpt."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file() and zipfile.is_zipfile(path):
        tmp = tempfile.TemporaryDirectory(prefix="ddsp-pd-ckpt-")
        try:
            name, available = _extract_checkpoint(path, Path(tmp.name), with_data)
        except BaseException:
            tmp.cleanup()
            raise
        return _Location(path, Path(tmp.name), name, available, tmp)
    forced = None
    directory = path
    if path.is_file():
        # A ckpt file itself: ckpt-N.index or ckpt-N.data-0000x-of-0000y.
        match = re.match(r"^(ckpt(?:-\d+)?)\.(index|data-\d+-of-\d+)$", path.name)
        if path.suffix == ".zip":
            raise CheckpointError(f"not a valid zip file: {path}")
        if not match:
            raise CheckpointError(
                f"{path} is neither a checkpoint directory, a zip, nor a ckpt-N.index file"
            )
        forced, directory = match.group(1), path.parent
    available = _available(directory)
    name = _choose_prefix(available, _named_in_checkpoint_file(directory), forced, str(directory))
    return _Location(path, directory, name, available)


def _model_shapes(index: BundleIndex) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for key, entry in index.entries.items():
        name = model_variable_name(key)
        if name is not None:
            shapes[name] = entry.shape
    if not shapes:
        raise CheckpointError(f"checkpoint {index.prefix.name} has no model/ variables")
    return shapes


def _list_shapes(prefix: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the model variables by ddsp name, from the index alone."""
    return _model_shapes(read_index(prefix))


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

    The data shards' sizes are compared with the index (``has_data``, ``data_problems``);
    their contents are not read. An unsupported era does not raise here: ``refusal`` says
    why it cannot be rendered. Missing paths, indexes or gin files raise
    :class:`CheckpointError`.
    """
    loc = _locate(path, with_data=False)
    try:
        bindings = _gin(loc.directory)
        era = detect_era(bindings)
        prefix = loc.directory / loc.name
        index = read_index(prefix)
        shapes = _model_shapes(index)
        config, refusal = None, None
        try:
            config = config_from_gin(bindings, shapes)
        except CheckpointError as exc:
            refusal = exc.message
        problems = tuple(data_file_problems(index))
        stats = _statistics(loc.directory)
        available = loc.available
        return CheckpointInfo(
            path=loc.path,
            directory=loc.directory,
            name=loc.name,
            prefix=prefix,
            era=era,
            config=config,
            refusal=refusal,
            shapes=shapes,
            parameter_count=parameter_count(shapes),
            statistics_path=stats if loc.extraction is None else None,
            has_data=not problems,
            available=tuple(sorted(available, key=lambda p: (available[p], p))),
            data_problems=problems,
            **_describe_statistics(stats),
        )
    finally:
        loc.close()


def _read_variables(
    index: BundleIndex, names: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The model variables ``names`` (ddsp names with their shapes) as float32 arrays."""
    problems = data_file_problems(index)
    if problems and all(p.endswith(" is missing") for p in problems):
        raise CheckpointError(f"checkpoint {index.prefix.name} has an index but no .data file")
    keys = {name: f"{_PREFIX}{name}{_SUFFIX}" for name in names}
    # Only the model's own bytes are read (and checksummed): damage elsewhere, e.g. in the
    # optimizer state, does not stop a render.
    values = read_bundle_tensors(index, keys.values())
    variables = {}
    for name, shape in names.items():
        value = values[keys[name]]
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
    for a missing path, no index, no gin file, corrupt data or an unsupported era. Never
    imports TensorFlow. Call :meth:`Checkpoint.close` when done with a zip's checkpoint.
    """
    loc = _locate(path)
    try:
        bindings = _gin(loc.directory)
        index = read_index(loc.directory / loc.name)
        shapes = _model_shapes(index)
        config = config_from_gin(bindings, shapes)
        variables = _read_variables(index, shapes)
        if loc.extraction is not None:
            # The weights are in memory: of a zip's files only the gin and statistics stay.
            for shard in range(index.num_shards):
                index.data_path(shard).unlink(missing_ok=True)
            (loc.directory / f"{loc.name}.index").unlink()
    except BaseException:
        loc.close()
        raise
    return Checkpoint(
        path=loc.path,
        name=loc.name,
        config=config,
        variables=variables,
        statistics_path=_statistics(loc.directory),
        directory=loc.directory,
        _tmpdir=loc.extraction,
    )
