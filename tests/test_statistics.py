"""dataset_statistics.pkl: the three real layouts load, the transform has sklearn's maths,
and pickles that would run code are refused before anything runs."""

from __future__ import annotations

import os
import pickle
import pickletools
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL, REFERENCE_CHECKPOINT, needs_fixtures

from ddsp_pd.errors import DdspPdError, StatisticsError
from ddsp_pd.statistics import (
    LAYOUTS,
    DatasetStatistics,
    QuantileTransform,
    load_statistics,
    parse_statistics,
)

REAL_FILES = {
    "google_2020_violin": ("sklearn-2020", "sklearn.preprocessing.data.QuantileTransformer"),
    "google_2020_flute": ("colab-2020", "ddsp.colab.colab_utils.QuantileTransformer"),
    "google_2020_trumpet": ("colab-2020", "ddsp.colab.colab_utils.QuantileTransformer"),
}
REFERENCE_STATS = REFERENCE_CHECKPOINT / "dataset_statistics.pkl"

# Keys compute_dataset_statistics writes in ddsp >= 1.6 (besides quantile_transform).
DDSP16_KEYS = [
    f"{stat}_{quantity}{suffix}"
    for suffix in ("", "_note")
    for quantity in ("pitch", "power", "loudness")
    for stat in ("mean", "max", "min", "mean_max", "mean_min", "std")
]


def _pickle_globals(data: bytes) -> set[str]:
    """Class paths a pickle names, read with pickletools (nothing is unpickled)."""
    names: set[str] = set()
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            names.add(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
        if isinstance(arg, str):
            strings.append(arg)
    return names


# --------------------------------------------------------------------------------------
# The real files
# --------------------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_2020_files_load(name: str) -> None:
    path = REAL / name / "dataset_statistics.pkl"
    layout, cls = REAL_FILES[name]
    # The fixture really uses the class path this case is about.
    assert cls in _pickle_globals(path.read_bytes())

    stats = load_statistics(path)
    assert isinstance(stats, DatasetStatistics)
    assert stats.layout == layout
    assert stats.transformer_class == cls
    assert stats.mean_pitch_field == "mean_pitch"
    assert stats.mean_pitch == stats.extra["mean_pitch"]
    # A solo instrument's mean note lies well inside the MIDI range.
    assert 36.0 < stats.mean_pitch < 96.0
    qt = stats.quantile_transform
    assert qt.n_quantiles == 1000
    np.testing.assert_allclose(qt.references, np.linspace(0, 1, 1000), atol=1e-12)
    assert np.all(np.diff(qt.quantiles) >= 0)
    # Loudness landmarks in dB (v1 scale: floor -120 dB).
    assert -120.0 <= qt.quantiles[0] < qt.quantiles[-1] <= 20.0


@needs_fixtures
def test_reference_ddsp16_file_loads() -> None:
    assert "ddsp.training.postprocessing.QuantileTransformer" in _pickle_globals(
        REFERENCE_STATS.read_bytes()
    )
    stats = load_statistics(REFERENCE_STATS)
    assert stats.layout == "ddsp-1.6"
    assert stats.transformer_class == "ddsp.training.postprocessing.QuantileTransformer"
    assert sorted(stats.extra) == sorted(DDSP16_KEYS)
    # The note-on mean drives auto-octave; the all-frames mean stays in extra.
    assert stats.mean_pitch_field == "mean_pitch_note"
    assert stats.mean_pitch == stats.extra["mean_pitch_note"]
    assert stats.extra["mean_pitch"] != stats.mean_pitch
    qt = stats.quantile_transform
    assert qt.n_quantiles == 1000
    assert np.all(np.diff(qt.quantiles) >= 0)
    # v3 loudness: the floor is -80 dB and the file's own extremes bound the quantiles.
    assert qt.quantiles[0] == pytest.approx(stats.extra["min_loudness_note"])
    assert qt.quantiles[-1] == pytest.approx(stats.extra["max_loudness_note"])


def test_layout_names_are_the_documented_ones() -> None:
    assert set(LAYOUTS) == {"sklearn-2020", "colab-2020", "ddsp-1.6"}


# --------------------------------------------------------------------------------------
# Pickles made here under each class path, at every protocol
# --------------------------------------------------------------------------------------


@pytest.fixture
def fake_ddsp(monkeypatch: pytest.MonkeyPatch):
    """Register stand-ins for ddsp's QuantileTransformer classes so pickles can be written."""
    classes = {}
    for module_name in ("ddsp.colab.colab_utils", "ddsp.training.postprocessing"):
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        cls = type("QuantileTransformer", (), {"__module__": module_name})
        monkeypatch.setattr(sys.modules[module_name], "QuantileTransformer", cls, raising=False)
        classes[module_name] = cls
    return classes


def _ddsp_transformer(cls: type, values: np.ndarray) -> object:
    """An object with the attributes ddsp's QuantileTransformer pickles."""
    obj = cls()
    ref = QuantileTransform.fit(values)
    obj.n_quantiles = 1000
    obj.output_distribution = "uniform"
    obj.subsample = 100000
    obj.random_state = np.random.RandomState(1)
    obj.n_quantiles_ = ref.n_quantiles
    obj.references_ = ref.references
    obj.quantiles_ = ref.quantiles[:, np.newaxis]
    return obj


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(
    ("module", "layout"),
    [("ddsp.colab.colab_utils", "colab-2020"), ("ddsp.training.postprocessing", "ddsp-1.6")],
)
def test_ddsp_class_paths_every_protocol(fake_ddsp, module: str, layout: str, protocol: int):
    rng = np.random.default_rng(0)
    values = rng.normal(-40.0, 10.0, 3000).astype(np.float32)
    content: dict[str, object] = {"mean_pitch": np.float32(61.5)}
    if layout == "ddsp-1.6":
        content.update({key: np.float64(i) for i, key in enumerate(DDSP16_KEYS)})
        content["mean_pitch"] = np.float32(61.5)
        content["mean_pitch_note"] = np.float32(63.25)
    content["quantile_transform"] = _ddsp_transformer(fake_ddsp[module], values)
    data = pickle.dumps(content, protocol=protocol)

    stats = parse_statistics(data)
    assert stats.layout == layout
    assert stats.transformer_class == f"{module}.QuantileTransformer"
    expected = QuantileTransform.fit(values)
    np.testing.assert_array_equal(stats.quantile_transform.quantiles, expected.quantiles)
    np.testing.assert_array_equal(stats.quantile_transform.references, expected.references)
    assert stats.mean_pitch == (63.25 if layout == "ddsp-1.6" else 61.5)
    assert stats.extra["mean_pitch"] == 61.5


def test_sklearn_pickle_matches_sklearn_transform() -> None:
    """A pickled scikit-learn transformer loads, and our maths gives sklearn's numbers."""
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(1)
    # Rounded values: many repeated quantiles, the case sklearn's two-way interp is for.
    values = np.round(rng.normal(-35.0, 12.0, 4000)).astype(np.float64)
    qt = preprocessing.QuantileTransformer(n_quantiles=1000, subsample=None)
    qt.fit(values[:, np.newaxis])
    data = pickle.dumps({"mean_pitch": 60.0, "quantile_transform": qt})
    assert "sklearn.preprocessing._data.QuantileTransformer" in _pickle_globals(data)

    stats = parse_statistics(data)
    assert stats.layout == "sklearn-2020"
    ours = stats.quantile_transform
    np.testing.assert_allclose(ours.quantiles, qt.quantiles_[:, 0], rtol=0, atol=1e-12)
    # Our fit lands on the same landmarks as sklearn's.
    np.testing.assert_allclose(QuantileTransform.fit(values).quantiles, ours.quantiles, atol=1e-12)

    probe = np.concatenate(
        [values[:500], ours.quantiles[::37], [-500.0, 500.0, ours.quantiles[0]], [np.nan]]
    )
    np.testing.assert_allclose(
        ours.transform(probe), qt.transform(probe[:, np.newaxis])[:, 0], atol=1e-12
    )
    u = np.concatenate([np.linspace(0, 1, 777), [0.0, 1.0, 0.5]])
    np.testing.assert_allclose(
        ours.inverse_transform(u), qt.inverse_transform(u[:, np.newaxis])[:, 0], atol=1e-9
    )


def test_transform_keeps_float32() -> None:
    qt = QuantileTransform.fit(np.linspace(-60, 0, 50))
    x = np.linspace(-70, 10, 9, dtype=np.float32)
    assert qt.transform(x).dtype == np.float32
    assert qt.inverse_transform(qt.transform(x)).dtype == np.float32


# --------------------------------------------------------------------------------------
# Refusing code
# --------------------------------------------------------------------------------------


class _Call:
    """Pickles as 'call fn(*args)' — the classic payload. Never unpickled with pickle here."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _raw_call(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle calling module.name(arg), for names we do not want to import."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def _assert_refused(data: bytes, marker: Path, names: str) -> None:
    with pytest.raises(StatisticsError) as info:
        parse_statistics(data)
    assert names in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "the payload ran"


def test_os_system_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Call(os.system, f"touch {marker}"))
    assert f"{os.system.__module__}.system" in _pickle_globals(data)
    _assert_refused(data, marker, f"{os.system.__module__}.system")


def test_builtins_eval_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Call(eval, f"open({str(marker)!r}, 'w').close()"))
    _assert_refused(data, marker, "builtins.eval")


def test_nested_reduce_inside_allowed_structure_refused(fake_ddsp, tmp_path: Path) -> None:
    """The outer dict and transformer class are allowed; a reduce deep inside is not."""
    marker = tmp_path / "pwned"
    transformer = _ddsp_transformer(fake_ddsp["ddsp.colab.colab_utils"], np.arange(10.0))
    transformer.quantiles_ = [_Call(os.system, f"touch {marker}")]
    data = pickle.dumps({"mean_pitch": np.float32(60.0), "quantile_transform": transformer})
    assert "ddsp.colab.colab_utils.QuantileTransformer" in _pickle_globals(data)
    _assert_refused(data, marker, "system")

    # The same inside mean_pitch, reached before the transformer.
    data = pickle.dumps({"mean_pitch": _Call(eval, f"open({str(marker)!r}, 'w')")})
    _assert_refused(data, marker, "builtins.eval")


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("subprocess", "getoutput"),
        ("numpy.testing._private.utils", "runstring"),
        ("numpy", "load"),
        ("ddsp.colab.colab_utils", "os"),
        ("sklearn.preprocessing.data", "QuantileTransformerX"),
    ],
)
def test_other_names_refused(tmp_path: Path, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    _assert_refused(_raw_call(module, name, f"touch {marker}"), marker, f"{module}.{name}")


def test_object_arrays_refused() -> None:
    data = pickle.dumps(
        {"mean_pitch": 60.0, "quantile_transform": None, "x": np.array([1, None], dtype=object)}
    )
    with pytest.raises(StatisticsError, match="dtype"):
        parse_statistics(data)


@needs_fixtures
def test_allowed_callables_cannot_be_modified() -> None:
    # GLOBAL numpy.dtype, then BUILD with {'a': 1}: would set an attribute on a shared object.
    data = b"\x80\x02cnumpy\ndtype\n}X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(StatisticsError, match="refused to modify"):
        parse_statistics(data)
    # And a real file still loads afterwards.
    assert load_statistics(REFERENCE_STATS).layout == "ddsp-1.6"


# --------------------------------------------------------------------------------------
# Files that are not statistics
# --------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match="not found"):
        load_statistics(tmp_path / "nope.pkl")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match="not a file"):
        load_statistics(tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"mean_pitch = 60\n", "not a pickle"),
        (b"\x80\x04\x95\xff\xff\xff\xff\xff", "truncated|corrupt"),
    ],
)
def test_not_a_statistics_pickle(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "dataset_statistics.pkl"
    path.write_bytes(content)
    with pytest.raises(StatisticsError, match=match) as info:
        load_statistics(path)
    assert isinstance(info.value, DdspPdError)
    assert str(path) in str(info.value)


@needs_fixtures
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_real_file(tmp_path: Path, fraction: float) -> None:
    data = REFERENCE_STATS.read_bytes()
    path = tmp_path / "dataset_statistics.pkl"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(StatisticsError, match=r"truncated|corrupt"):
        load_statistics(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2, 3], "expected a dictionary"),
        ({"mean_pitch": 60.0}, "no quantile_transform"),
        ({"mean_pitch": "sixty"}, "no quantile_transform"),
    ],
)
def test_unexpected_content(content: object, match: str) -> None:
    with pytest.raises(StatisticsError, match=match):
        parse_statistics(pickle.dumps(content))


def test_unfitted_or_bad_transformer(fake_ddsp) -> None:
    cls = fake_ddsp["ddsp.colab.colab_utils"]
    bare = cls()
    with pytest.raises(StatisticsError, match="not fitted"):
        parse_statistics(pickle.dumps({"mean_pitch": 60.0, "quantile_transform": bare}))

    no_pitch = _ddsp_transformer(cls, np.arange(20.0))
    with pytest.raises(StatisticsError, match="no mean_pitch"):
        parse_statistics(pickle.dumps({"quantile_transform": no_pitch}))

    bad_pitch = {"mean_pitch": "sixty", "quantile_transform": no_pitch}
    with pytest.raises(StatisticsError, match="expected a number"):
        parse_statistics(pickle.dumps(bad_pitch))

    mismatched = _ddsp_transformer(cls, np.arange(20.0))
    mismatched.references_ = mismatched.references_[:-1]
    with pytest.raises(StatisticsError, match="quantiles"):
        parse_statistics(pickle.dumps({"mean_pitch": 60.0, "quantile_transform": mismatched}))
