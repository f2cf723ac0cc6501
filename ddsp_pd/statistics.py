"""Read ``dataset_statistics.pkl`` without running the code a pickle can carry.

Three historical layouts exist (``docs/design.md``, ``ddsp.md`` section 7):

- ``sklearn-2020``: keys ``mean_pitch`` and ``quantile_transform``, a scikit-learn
  transformer (``sklearn.preprocessing.data``, 0.21, or ``sklearn.preprocessing._data``);
- ``colab-2020``: the same keys (some files add ``mean_loudness``, ``mean_max_loudness``),
  transformer ``ddsp.colab.colab_utils.QuantileTransformer``;
- ``ddsp-1.6``: ``{mean,max,min,mean_max,mean_min,std}_{pitch,power,loudness}`` and their
  ``_note`` variants, transformer ``ddsp.training.postprocessing.QuantileTransformer``.

A pickle is a program: ``pickle.load`` calls whatever callables the file names. This module
uses an unpickler whose ``find_class`` resolves only

- the four ``QuantileTransformer`` class paths, to :class:`_PickledTransformer`, a plain
  object that only stores the state handed to it;
- the numpy internals that rebuild arrays and scalars (``_reconstruct``, ``ndarray``,
  ``dtype``, ``scalar``, and ``_frombuffer`` for protocol 5), wrapped so that only arrays
  and scalars of plain numeric dtypes can be built;
- the class paths under which numpy pickles a ``RandomState`` (ddsp's transformer keeps one),
  to an inert stub: the transform never uses it, so no numpy random code runs;
- for protocol 0-2 pickles, ``copy_reg._reconstructor`` and ``object``, only to create a
  :class:`_PickledTransformer`, and ``_codecs.encode``, only to turn text into latin-1 bytes.

Any other name raises :class:`~ddsp_pd.errors.StatisticsError` before anything is called.

Which mean pitch auto-octave uses
---------------------------------
Auto-octave compares the clip's mean pitch over its note-on frames with the dataset's. Old
files' ``mean_pitch`` is the dataset's mean MIDI pitch over note-on frames. In ``ddsp-1.6``
files ``mean_pitch`` is over *all* frames and the note-on mean is ``mean_pitch_note``.
:attr:`DatasetStatistics.mean_pitch` is the note-on mean in every layout (``mean_pitch`` of
old files, ``mean_pitch_note`` of ``ddsp-1.6`` files; :attr:`DatasetStatistics.mean_pitch_field`
names the key), so like is compared with like.

The timbre-transfer notebook of ddsp 1.6 to 3.7 reads ``DATASET_STATS['mean_pitch']`` whatever
the layout. The ddsp 3.7 reference fixture does not tell the two apart: its statistics have
``mean_pitch`` 68.72 and ``mean_pitch_note`` 68.97 (0.02 octave apart) and every clip and
threshold gives the same ``S/auto_octave`` and ``S/f0_hz`` with either
(``tests/test_controls.py`` checks both). They differ only for datasets with many non-note
frames far from the notes' pitch, where the all-frames mean would bias the octave choice.
The file's own ``mean_pitch`` stays available in :attr:`DatasetStatistics.extra`.

Power statistics (DDSP-VST models)
----------------------------------
``ddsp-1.6`` files also describe the training data's frame *power* (ddsp's ``compute_power``,
1024-sample frames at 50 frames/s by default: what DDSP-VST models take instead of loudness):
:attr:`DatasetStatistics.power` gathers them (:class:`PowerStatistics`), and
:meth:`DatasetStatistics.model_ranges` gives the note-on pitch and power ranges that
``ddsp_export`` also writes into a ``.tflite``'s ``metadata.json`` (:class:`ModelRanges`, which
:meth:`ModelRanges.from_metadata` reads from there), so that a checkpoint and its export
adjust alike. ddsp fits ``quantile_transform`` on note-on *loudness* in every layout, VST
checkpoints included (its quantiles run from ``min_loudness_note`` to ``max_loudness_note``):
it is not a power distribution and auto-adjust of power models does not use it.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ddsp_pd.errors import StatisticsError

__all__ = [
    "LAYOUTS",
    "DatasetStatistics",
    "ModelRanges",
    "PowerStatistics",
    "QuantileTransform",
    "load_statistics",
    "parse_statistics",
]

LAYOUTS = ("sklearn-2020", "colab-2020", "ddsp-1.6")

# Real files are ~20 KB; anything far larger is not a statistics file.
_MAX_BYTES = 16 * 1024 * 1024

_SKLEARN_PATHS = {
    ("sklearn.preprocessing.data", "QuantileTransformer"),
    ("sklearn.preprocessing._data", "QuantileTransformer"),
}
_DDSP_PATHS = {
    ("ddsp.colab.colab_utils", "QuantileTransformer"),
    ("ddsp.training.postprocessing", "QuantileTransformer"),
}

# Every path numpy (1.x and 2.x) has used to pickle a RandomState and its bit generator.
_RANDOM_STATE_PATHS = {
    ("numpy.random", "__RandomState_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random._bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random._bit_generator", "SeedSequence"),
}

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")

# Plain numeric dtypes only: object, void (structured) and string dtypes are refused.
_ALLOWED_DTYPE_KINDS = frozenset("biuf")

# The real callables, taken from numpy's own reduce output so that this works with the
# ``numpy.core`` (1.x) and ``numpy._core`` (2.x) layouts alike.
_np_reconstruct = np.zeros(0).__reduce__()[0]
_np_scalar = np.float32(0).__reduce__()[0]


@dataclass(frozen=True)
class QuantileTransform:
    """A fitted quantile transform with a uniform output distribution.

    ``quantiles[i]`` is the value at cumulative probability ``references[i]``. The maths is
    scikit-learn's ``QuantileTransformer`` (and ddsp's stripped-down copy of it) for
    ``output_distribution='uniform'``.
    """

    quantiles: NDArray[np.float64]
    references: NDArray[np.float64]

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles, dtype=np.float64).reshape(-1)
        r = np.asarray(self.references, dtype=np.float64).reshape(-1)
        if q.size == 0 or q.shape != r.shape:
            raise StatisticsError(
                f"quantile transform has {q.size} quantiles for {r.size} references"
            )
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(r))):
            raise StatisticsError("quantile transform contains NaN or infinite values")
        object.__setattr__(self, "quantiles", q)
        object.__setattr__(self, "references", r)

    @property
    def n_quantiles(self) -> int:
        """Number of landmarks of the transform."""
        return int(self.quantiles.size)

    @classmethod
    def fit(cls, values: ArrayLike, n_quantiles: int = 1000) -> QuantileTransform:
        """Fit on a 1-D sample, as ddsp's ``QuantileTransformer().fit`` does.

        At most ``n_quantiles`` landmarks (never more than the number of values), placed at
        ``np.nanpercentile`` of the values, made non-decreasing. Unlike ddsp, samples above
        100 000 values are not randomly subsampled, so results are deterministic.
        """
        x = np.asarray(values).reshape(-1)
        if x.size == 0:
            raise ValueError("cannot fit a quantile transform on no values")
        n = max(1, min(int(n_quantiles), x.size))
        references = np.linspace(0, 1, n, endpoint=True)
        # Same call as the library (data in its own dtype, percent in float64) so that the
        # landmarks match it bit for bit under the same numpy.
        quantiles = np.maximum.accumulate(np.nanpercentile(x, references * 100))
        return cls(quantiles=quantiles, references=references)

    def transform(self, x: ArrayLike) -> NDArray[np.floating]:
        """Map values to [0, 1] through the fitted CDF; the result keeps ``x``'s float dtype.

        Interpolates with increasing and with decreasing landmarks and averages both, so a
        value equal to a run of repeated quantiles maps to the middle of that run (this is
        what scikit-learn and ddsp do). Exact bounds map to exactly 0 and 1; NaN stays NaN.
        """
        xa = _float_array(x)
        x64 = xa.astype(np.float64)
        q, r = self.quantiles, self.references
        out = np.full(x64.shape, np.nan)
        finite = ~np.isnan(x64)
        xf = x64[finite]
        out[finite] = 0.5 * (np.interp(xf, q, r) - np.interp(-xf, -q[::-1], -r[::-1]))
        out[x64 == q[-1]] = 1.0
        out[x64 == q[0]] = 0.0
        return out.astype(xa.dtype)

    def inverse_transform(self, u: ArrayLike) -> NDArray[np.floating]:
        """Map values in [0, 1] back to the data scale; the result keeps ``u``'s float dtype."""
        ua = _float_array(u)
        u64 = ua.astype(np.float64)
        q, r = self.quantiles, self.references
        out = np.full(u64.shape, np.nan)
        finite = ~np.isnan(u64)
        out[finite] = np.interp(u64[finite], r, q)
        out[u64 == 1.0] = q[-1]
        out[u64 == 0.0] = q[0]
        return out.astype(ua.dtype)


_POWER_STATS = ("mean", "std", "min", "max", "mean_min", "mean_max")


@dataclass(frozen=True)
class PowerStatistics:
    """The training data's frame power in dB (``compute_power``), as ddsp >= 1.6 stores it.

    Plain attributes are over all frames (the last 20 of each example trimmed, as ddsp does);
    ``*_note`` attributes over note-on frames only (ddsp found the notes from *loudness*).
    ``mean_min`` / ``mean_max`` are the mean over training examples of each example's
    minimum / maximum.
    """

    mean: float
    std: float
    min: float
    max: float
    mean_min: float
    mean_max: float
    mean_note: float
    std_note: float
    min_note: float
    max_note: float
    mean_min_note: float
    mean_max_note: float

    @classmethod
    def from_fields(cls, fields: Mapping[str, float]) -> PowerStatistics | None:
        """From ``{mean,std,min,max,mean_min,mean_max}_power[_note]`` keys; None if any lacks."""
        values: dict[str, float] = {}
        for suffix in ("", "_note"):
            for stat in _POWER_STATS:
                key = f"{stat}_power{suffix}"
                if key not in fields:
                    return None
                values[f"{stat}{suffix}"] = float(fields[key])
        return cls(**values)


@dataclass(frozen=True)
class ModelRanges:
    """The note-on pitch and power ranges a power model was trained on.

    These are the four statistics of a ``.tflite``'s ``metadata.json`` (and of a
    ``ddsp-1.6`` ``dataset_statistics.pkl``): the mean over training examples of each
    example's lowest / highest note-on pitch (MIDI) and power (dB). Auto-adjust of power
    models moves a clip into them (:func:`ddsp_pd.controls.adjust_from_ranges`).

    Attributes:
        pitch_min_note, pitch_max_note: ``mean_min_pitch_note``, ``mean_max_pitch_note``.
        power_min_db, power_max_db: ``mean_min_power_note``, ``mean_max_power_note``.
        source: where they were read, for reports.
    """

    pitch_min_note: float
    pitch_max_note: float
    power_min_db: float
    power_max_db: float
    source: str = ""

    FIELDS = (
        ("pitch_min_note", "mean_min_pitch_note"),
        ("pitch_max_note", "mean_max_pitch_note"),
        ("power_min_db", "mean_min_power_note"),
        ("power_max_db", "mean_max_power_note"),
    )

    def __post_init__(self) -> None:
        for attr, key in self.FIELDS:
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise StatisticsError(f"{key} is a {type(value).__name__}, expected a number")
            if not math.isfinite(float(value)):
                raise StatisticsError(f"{key} is not a finite number")
            object.__setattr__(self, attr, float(value))
        if self.pitch_min_note > self.pitch_max_note:
            raise StatisticsError(
                f"mean_min_pitch_note {self.pitch_min_note:g} is above "
                f"mean_max_pitch_note {self.pitch_max_note:g}"
            )
        if self.power_min_db > self.power_max_db:
            raise StatisticsError(
                f"mean_min_power_note {self.power_min_db:g} is above "
                f"mean_max_power_note {self.power_max_db:g}"
            )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object], source: str = "") -> ModelRanges:
        """From a mapping with the ``mean_{min,max}_{pitch,power}_note`` keys (metadata.json).

        Raises:
            StatisticsError: a key is missing, not a finite number, or min > max.
        """
        missing = [key for _, key in cls.FIELDS if key not in metadata]
        if missing:
            where = f" in {source}" if source else ""
            raise StatisticsError(f"no {', '.join(missing)}{where}")
        values = {attr: metadata[key] for attr, key in cls.FIELDS}
        return cls(**values, source=source)  # type: ignore[arg-type]

    @property
    def pitch_centre(self) -> float:
        """Middle of the pitch range (MIDI)."""
        return 0.5 * (self.pitch_min_note + self.pitch_max_note)

    @property
    def power_centre(self) -> float:
        """Middle of the power range (dB)."""
        return 0.5 * (self.power_min_db + self.power_max_db)


@dataclass(frozen=True)
class DatasetStatistics:
    """The contents of a ``dataset_statistics.pkl`` that auto-adjust needs.

    Attributes:
        layout: one of :data:`LAYOUTS`.
        mean_pitch: the dataset's mean MIDI pitch over note-on frames, which auto-octave
            moves the clip towards (see the module docstring).
        mean_pitch_field: the key it was read from (``mean_pitch`` or ``mean_pitch_note``).
        quantile_transform: the dataset's note-on loudness distribution (loudness in every
            layout, also in the statistics of power models).
        extra: every other numeric top-level field as a float (``mean_pitch`` included), e.g.
            ``mean_pitch_note``, ``mean_loudness``.
        transformer_class: the pickled class path of the transformer, for reports.
    """

    layout: str
    mean_pitch: float
    quantile_transform: QuantileTransform
    mean_pitch_field: str = "mean_pitch"
    extra: dict[str, float] = field(default_factory=dict)
    transformer_class: str = ""

    @property
    def power(self) -> PowerStatistics | None:
        """The power statistics (``ddsp-1.6`` files), or None when the file has none."""
        return PowerStatistics.from_fields(self.extra)

    @property
    def has_power(self) -> bool:
        """Whether the file holds power statistics (what power models' auto-adjust needs)."""
        return self.power is not None

    def model_ranges(self, source: str = "dataset_statistics.pkl") -> ModelRanges:
        """The note-on pitch and power ranges, as ``ddsp_export`` puts them in metadata.json.

        Raises:
            StatisticsError: the file lacks them (layouts older than ``ddsp-1.6``), or they
                are not finite or inverted.
        """
        try:
            return ModelRanges.from_metadata(self.extra, source=source)
        except StatisticsError as exc:
            raise StatisticsError(
                f"dataset statistics ({self.layout}) have no usable pitch and power ranges: "
                f"{exc.message}"
            ) from exc


# --------------------------------------------------------------------------------------
# The restricted unpickler
# --------------------------------------------------------------------------------------


class _PickledTransformer:
    """Stands in for every allowed ``QuantileTransformer``: it only keeps its state."""

    def __init__(self, *args: object) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: object) -> None:
        # sklearn pickles (state_dict, slots) only for classes with __slots__; be lenient.
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if not isinstance(state, dict):
            raise StatisticsError("quantile_transform has an unexpected pickled state")
        self.state = dict(state)


class _InertRandomState:
    """Takes the place of numpy's RandomState/bit generator; accepts and discards its state."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _Sealed:
    """Base of the placeholders ``find_class`` hands out: a pickle may not modify them.

    Without this, a BUILD opcode aimed at a placeholder would set attributes on an object
    shared by every later load in the process.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __setstate__(self, state: object) -> None:
        raise StatisticsError(f"dataset statistics: refused to modify {self.name}")

    def __repr__(self) -> str:
        return f"<{self.name}>"


class _Marker(_Sealed):
    """Stands for a class that may appear only as an argument (``numpy.ndarray``, ``object``)."""

    __slots__ = ()


class _SafeCallable(_Sealed):
    """An allowed callable: one of the checking wrappers below."""

    __slots__ = ("_fn",)

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        super().__init__(name)
        self._fn = fn

    def __call__(self, *args: object) -> Any:
        return self._fn(*args)


_NDARRAY = _Marker("numpy.ndarray")
_OBJECT = _Marker("object")


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 4:
        raise StatisticsError(f"dataset statistics: refused dtype {spec!r}")
    try:
        dtype = np.dtype(spec)
    except TypeError as exc:
        raise StatisticsError(f"dataset statistics: refused dtype {spec!r}") from exc
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.hasobject:
        raise StatisticsError(f"dataset statistics: refused dtype {spec!r}")
    return dtype


def _reconstruct(cls: object, shape: object, typecode: object) -> np.ndarray:
    # numpy always pickles an empty shell here and fills it in BUILD (ndarray.__setstate__).
    if cls is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise StatisticsError("dataset statistics: refused array reconstruction")
    if typecode not in (b"b", "b"):
        raise StatisticsError("dataset statistics: refused array reconstruction")
    return _np_reconstruct(np.ndarray, (0,), b"b")


def _scalar(dtype: object, data: object = None) -> np.generic:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _ALLOWED_DTYPE_KINDS:
        raise StatisticsError(f"dataset statistics: refused scalar of dtype {dtype!r}")
    if isinstance(data, str):
        data = data.encode("latin1")  # Python 2 pickles read with encoding='latin1'
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise StatisticsError("dataset statistics: malformed numpy scalar")
    return _np_scalar(dtype, data)


def _reconstructor(cls: object, base: object, state: object) -> _PickledTransformer:
    # copy_reg._reconstructor as Python 2 protocol 0/1 pickles use it for new-style objects.
    if cls is not _PickledTransformer or base is not _OBJECT or state is not None:
        raise StatisticsError("dataset statistics: refused object reconstruction")
    return _PickledTransformer()


def _frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    # Protocol 5 pickles arrays as numpy's _frombuffer(bytearray, dtype, shape, order).
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype):
        raise StatisticsError("dataset statistics: refused array buffer")
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or order not in ("C", "F"):
        raise StatisticsError("dataset statistics: refused array buffer")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise StatisticsError("dataset statistics: malformed array shape")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


def _latin1_bytes(text: object, encoding: object = "latin1") -> bytes:
    # Python 3 pickles bytes at protocols 0-2 as _codecs.encode(text, 'latin1').
    if not isinstance(text, str) or encoding != "latin1":
        raise StatisticsError("dataset statistics: refused text encoding")
    return text.encode("latin1")


_SAFE_DTYPE = _SafeCallable("numpy.dtype", _dtype)
_SAFE_RECONSTRUCT = _SafeCallable("numpy _reconstruct", _reconstruct)
_SAFE_SCALAR = _SafeCallable("numpy scalar", _scalar)
_SAFE_RECONSTRUCTOR = _SafeCallable("copyreg._reconstructor", _reconstructor)
_SAFE_LATIN1 = _SafeCallable("_codecs.encode", _latin1_bytes)
_SAFE_FROMBUFFER = _SafeCallable("numpy _frombuffer", _frombuffer)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names listed in the module docstring; everything else is refused."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        # latin1 lets Python 2 pickles' byte strings through unchanged (numpy expects it).
        super().__init__(file, encoding="latin1")
        self.transformer_classes: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _SKLEARN_PATHS or key in _DDSP_PATHS:
            self.transformer_classes.append(f"{module}.{name}")
            return _PickledTransformer
        if key in _RANDOM_STATE_PATHS:
            return _InertRandomState
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _SAFE_DTYPE
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _SAFE_RECONSTRUCT
        if module in _NUMPY_MODULES and name == "scalar":
            return _SAFE_SCALAR
        if module in _NUMERIC_MODULES and name == "_frombuffer":
            return _SAFE_FROMBUFFER
        if key in {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}:
            return _SAFE_RECONSTRUCTOR
        if key in {("__builtin__", "object"), ("builtins", "object")}:
            return _OBJECT
        if key == ("_codecs", "encode"):
            return _SAFE_LATIN1
        raise StatisticsError(f"dataset statistics: refused to load class {module}.{name}")

    def persistent_load(self, pid: object) -> Any:
        raise StatisticsError("dataset statistics: refused persistent reference")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_statistics(path: str | Path) -> DatasetStatistics:
    """Load a ``dataset_statistics.pkl`` of any of the three layouts, safely.

    Raises:
        StatisticsError: the file is missing, not a pickle, truncated, refers to a class
            outside the allow-list, or does not hold the expected fields.
    """
    p = Path(path)
    if not p.exists():
        raise StatisticsError(f"dataset statistics not found: {p}")
    if not p.is_file():
        raise StatisticsError(f"dataset statistics is not a file: {p}")
    try:
        size = p.stat().st_size
        if size > _MAX_BYTES:
            raise StatisticsError(f"dataset statistics too large ({size} bytes): {p}")
        data = p.read_bytes()
    except OSError as exc:
        raise StatisticsError(f"cannot read dataset statistics {p}: {exc.strerror}") from exc
    try:
        return parse_statistics(data)
    except StatisticsError as exc:
        raise StatisticsError(f"{exc.message} ({p})") from exc


def parse_statistics(data: bytes) -> DatasetStatistics:
    """Parse the bytes of a ``dataset_statistics.pkl`` (see :func:`load_statistics`)."""
    if not data:
        raise StatisticsError("dataset statistics file is empty")
    if data[:1] != b"\x80" and data[:1] not in (b"(", b"}", b"c"):
        raise StatisticsError("dataset statistics is not a pickle file")
    unpickler = _RestrictedUnpickler(io.BytesIO(data))
    try:
        raw = unpickler.load()
    except StatisticsError:
        raise
    except EOFError as exc:
        raise StatisticsError("dataset statistics is truncated") from exc
    except RecursionError as exc:
        raise StatisticsError("dataset statistics is nested too deeply") from exc
    except Exception as exc:
        # UnpicklingError, or an allowed callable rejecting its arguments: corrupt content.
        raise StatisticsError(
            f"dataset statistics is corrupt or not a pickle ({type(exc).__name__})"
        ) from exc
    return _interpret(raw, unpickler.transformer_classes)


def _interpret(raw: object, classes: list[str]) -> DatasetStatistics:
    if not isinstance(raw, dict):
        raise StatisticsError(
            f"dataset statistics holds a {type(raw).__name__}, expected a dictionary"
        )
    transformer = raw.get("quantile_transform")
    if not isinstance(transformer, _PickledTransformer):
        raise StatisticsError("dataset statistics has no quantile_transform")
    if "mean_pitch" not in raw:
        raise StatisticsError("dataset statistics has no mean_pitch")

    extra: dict[str, float] = {}
    for key, value in raw.items():
        if key == "quantile_transform":
            continue
        if not isinstance(key, str):
            raise StatisticsError(f"dataset statistics has a non-text key {key!r}")
        extra[key] = _as_float(key, value)

    # NEWOBJ skips __init__ and an empty state skips BUILD: an unfitted object has no state.
    transform = _transform_from_state(getattr(transformer, "state", {}))
    cls = classes[0] if classes else ""
    if "mean_pitch_note" in raw:
        layout, pitch_field = "ddsp-1.6", "mean_pitch_note"
    elif cls.startswith("sklearn."):
        layout, pitch_field = "sklearn-2020", "mean_pitch"
    else:
        layout, pitch_field = "colab-2020", "mean_pitch"
    mean_pitch = extra[pitch_field]
    if not math.isfinite(mean_pitch):
        raise StatisticsError(f"dataset statistics: {pitch_field} is not a finite number")
    return DatasetStatistics(
        layout=layout,
        mean_pitch=mean_pitch,
        mean_pitch_field=pitch_field,
        quantile_transform=transform,
        extra=extra,
        transformer_class=cls,
    )


def _as_float(key: str, value: object) -> float:
    if isinstance(value, np.ndarray):
        _check_array(key, value)
        if value.size != 1:
            raise StatisticsError(f"dataset statistics: {key} is not a single number")
        value = value.reshape(())[()]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StatisticsError(
            f"dataset statistics: {key} is a {type(value).__name__}, expected a number"
        )
    return float(value)


def _check_array(key: str, arr: np.ndarray) -> None:
    if arr.dtype.hasobject or arr.dtype.kind not in _ALLOWED_DTYPE_KINDS:
        raise StatisticsError(f"dataset statistics: {key} has refused dtype {arr.dtype}")


def _transform_from_state(state: dict[str, Any]) -> QuantileTransform:
    quantiles = state.get("quantiles_")
    references = state.get("references_")
    if not isinstance(quantiles, np.ndarray) or not isinstance(references, np.ndarray):
        raise StatisticsError("quantile_transform is not fitted (no quantiles_/references_)")
    _check_array("quantiles_", quantiles)
    _check_array("references_", references)
    distribution = state.get("output_distribution", "uniform")
    if distribution != "uniform":
        raise StatisticsError(
            f"quantile_transform has output distribution {distribution!r}, expected 'uniform'"
        )
    # Fitted on a single feature: quantiles_ is [n, 1].
    if quantiles.ndim == 2 and quantiles.shape[1] != 1:
        raise StatisticsError(
            f"quantile_transform was fitted on {quantiles.shape[1]} features, expected 1"
        )
    if quantiles.ndim not in (1, 2) or references.ndim != 1:
        raise StatisticsError("quantile_transform has arrays of unexpected shape")
    return QuantileTransform(quantiles=quantiles.reshape(-1), references=references)


def _float_array(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr
