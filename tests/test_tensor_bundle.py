"""The TensorFlow-free checkpoint reader against TensorFlow's own, and against hostile files.

TensorFlow is the oracle here (imported only inside fixtures, skipped without it): every
checkpoint in the fixtures and the shipped default must list and read exactly as
``tf.train.load_checkpoint`` does, and so must checkpoints TensorFlow writes in the test with
every dtype, strings and several shards. Hand-built bundles (a small table writer below)
carry lies that a checksum cannot catch: sizes, offsets, shards, versions, byte order.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, REAL, REFERENCE_CHECKPOINT, ROOT

from ddsp_pd import tensor_bundle as tb
from ddsp_pd.errors import CheckpointError

DEFAULT_PREFIX = ROOT / "checkpoints" / "default" / "ckpt-1600"
FIXTURE_PREFIXES = {
    "solo_ddsp37": REFERENCE_CHECKPOINT / "ckpt-100",
    "vst_ddsp37": FIXTURES / "reference" / "vst_ddsp37" / "checkpoint" / "ckpt-400",
    "ddsp162_viola": REAL / "ddsp162_viola" / "ckpt-1800",
    "google_2020_original_config": REAL / "google_2020_original_config" / "ckpt-38100",
    "google_2020_violin": REAL / "google_2020_violin" / "ckpt",
}


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    return tf


def _prefix(name: str, fixtures_dir: Path) -> Path:
    return DEFAULT_PREFIX if name == "default" else FIXTURE_PREFIXES[name]


def _assert_same_as_tensorflow(tf, prefix: Path) -> None:
    """Names, shapes, dtypes and (where the data is there) every value agree with TF's."""
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    entries = tb.list_tensors(prefix)
    assert set(entries) == set(shapes)
    assert sorted(entries) == [name for name, _ in tf.train.list_variables(str(prefix))]
    for name, entry in entries.items():
        assert list(entry.shape) == shapes[name], name
        assert entry.dtype_name == dtypes[name].name, name
    index = tb.read_index(prefix)
    if tb.data_file_problems(index):
        return  # an index-only fixture
    values = tb.read_tensors(index)
    assert set(values) == set(entries)
    for name, value in values.items():
        expected = reader.get_tensor(name)
        if entries[name].dtype_name == "string":
            assert value.dtype == object and value.shape == np.shape(expected), name
            assert list(value.ravel()) == list(np.ravel(expected)), name
            continue
        if entries[name].dtype_name == "bfloat16":
            expected = expected.astype(np.float32)  # returned as float32, exactly
        assert value.dtype == expected.dtype and value.shape == expected.shape, name
        np.testing.assert_array_equal(value, expected, err_msg=name)


@pytest.mark.parametrize("name", ["default", *FIXTURE_PREFIXES])
def test_every_checkpoint_reads_as_tensorflow_reads_it(name, tf, fixtures_dir):
    _assert_same_as_tensorflow(tf, _prefix(name, fixtures_dir))


@pytest.mark.parametrize("name", ["ddsp162_viola", "google_2020_violin"])
def test_index_only_fixtures_report_their_missing_shard(name, fixtures_dir):
    index = tb.read_index(_prefix(name, fixtures_dir))
    needed = [shard for shard, size in index.required_sizes().items() if size]
    assert needed
    expected = [f"{index.data_path(shard).name} is missing" for shard in needed]
    assert tb.data_file_problems(index) == expected
    with pytest.raises(CheckpointError, match=r"no \.data file"):
        tb.read_tensors(index)


def test_index_facts_of_the_default_checkpoint():
    index = tb.read_index(DEFAULT_PREFIX)
    assert index.num_shards == 1 and not index.big_endian
    kernel = index.entries["model/decoder/dense_out/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    assert kernel.dtype == np.dtype("<f4") and kernel.shard == 0
    assert kernel.size == kernel.num_elements * 4
    data = index.data_path(0)
    assert data.name == "ckpt-1600.data-00000-of-00001"
    assert index.required_sizes() == {0: data.stat().st_size}
    assert tb.data_file_problems(index) == []


# ---------------------------------------------------------------- written by TensorFlow


@pytest.fixture(scope="module")
def tf_written(tf, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints TensorFlow writes: every dtype, strings, empty and scalar; several shards."""
    root = tmp_path_factory.mktemp("tf_written")
    rng = np.random.default_rng(0)
    names, tensors = [], []
    numeric = [
        "float32", "float64", "int32", "uint8", "int16", "int8", "complex64", "int64",
        "bfloat16", "uint16", "complex128", "float16", "uint32", "uint64",
    ]  # fmt: skip
    for dtype_name in numeric:
        dtype = tf.as_dtype(dtype_name)
        if dtype.is_complex:
            value = rng.standard_normal((5, 2)) + 1j * rng.standard_normal((5, 2))
        elif dtype.is_floating:
            value = rng.standard_normal((7, 3)) * 100
        else:
            value = rng.integers(0, 120, (2, 3, 4))
        names.append(f"t/{dtype_name}")
        tensors.append(tf.cast(tf.constant(value), dtype))
    names += ["t/bool", "t/string", "t/scalar", "t/empty"]
    tensors += [
        tf.constant(rng.random((3, 4)) > 0.5),
        tf.constant([[b"a", b""], [b"hello" * 100, bytes(range(256))]]),
        tf.constant(3.5),
        tf.zeros((0, 5)),
    ]
    tf.raw_ops.SaveV2(
        prefix=str(root / "dtypes" / "ckpt"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=tensors,
    )
    # One variable per shard: a size policy just above each variable's size.
    variables = {
        f"v{i}": tf.Variable(rng.standard_normal((100, 50)).astype(np.float32)) for i in range(4)
    }
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=100 * 50 * 4 + 1000)
    tf.train.Checkpoint(**variables).write(
        str(root / "shards" / "ckpt"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy),
    )
    # Slices at starts that take one, two and three bytes in the keys' encoding.
    rows = rng.standard_normal((300, 3)).astype(np.float32)
    cols = rng.integers(0, 9, (5, 100_000)).astype(np.int64)
    tf.raw_ops.SaveV2(
        prefix=str(root / "sliced" / "ckpt"),
        tensor_names=["rows", "rows", "rows", "cols", "cols", "whole"],
        shape_and_slices=[
            "300 3 0,70:-",
            "300 3 70,130:0,3",
            "300 3 200,100:-",
            "5 100000 -:0,70000",
            "5 100000 -:70000,30000",
            "",
        ],
        tensors=[rows[:70], rows[70:200], rows[200:], cols[:, :70000], cols[:, 70000:], rows],
    )
    return {name: root / name / "ckpt" for name in ("dtypes", "shards", "sliced")}


def test_every_dtype_reads_as_tensorflow_reads_it(tf, tf_written):
    _assert_same_as_tensorflow(tf, tf_written["dtypes"])
    values = tb.read_tensors(tf_written["dtypes"], ["t/bool", "t/bfloat16", "t/string"])
    assert values["t/bool"].dtype == np.bool_
    assert values["t/bfloat16"].dtype == np.float32
    assert values["t/string"][1, 1] == bytes(range(256))


def test_several_shards_read_as_tensorflow_reads_them(tf, tf_written):
    index = tb.read_index(tf_written["shards"])
    assert index.num_shards > 2
    assert len({e.shard for e in index.entries.values()}) == index.num_shards
    _assert_same_as_tensorflow(tf, tf_written["shards"])


def test_a_missing_shard_is_named(tf_written, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(tf_written["shards"].parent, copy)
    index = tb.read_index(copy / "ckpt")
    index.data_path(1).unlink()
    assert tb.data_file_problems(index) == [f"{index.data_path(1).name} is missing"]
    with pytest.raises(CheckpointError, match=index.data_path(1).name):
        tb.read_tensors(index)


def test_partitioned_variables_are_reassembled(tf, tf_written):
    entries = tb.list_tensors(tf_written["sliced"])
    assert set(entries) == {"rows", "cols", "whole"}  # slices are not tensors of their own
    assert entries["rows"].partitioned and entries["rows"].shape == (300, 3)
    assert len(entries["rows"].slices) == 3
    _assert_same_as_tensorflow(tf, tf_written["sliced"])
    values = tb.read_tensors(tf_written["sliced"], ["rows", "whole"])
    np.testing.assert_array_equal(values["rows"], values["whole"])
    # The shard-size policy slices variables across shards; every piece counts in the sizes.
    index = tb.read_index(tf_written["shards"])
    assert any(e.partitioned for e in index.entries.values())
    assert index.required_sizes() == {
        shard: index.data_path(shard).stat().st_size for shard in range(index.num_shards)
    }


def test_reading_never_imports_tensorflow():
    code = (
        "import sys; from ddsp_pd import tensor_bundle as tb; "
        f"v = tb.read_tensors({str(DEFAULT_PREFIX)!r}); assert len(v) > 10; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- CRC-32C


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # the check value of the Castagnoli CRC and the test vectors of RFC 3720, B.4
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"", 0),
    ],
)
def test_crc32c_known_values(data, expected):
    assert tb.crc32c(data) == expected


@pytest.mark.parametrize("size", [8191, 8192, 8193, 10_000, 65_536 + 3, 1_000_003])
def test_crc32c_parallel_lanes_equal_the_serial_loop(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    serial = tb._serial(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert tb.crc32c(data) == serial
    # Continuing from a previous value is the CRC of the concatenation.
    assert tb.crc32c(data[size // 3 :], tb.crc32c(data[: size // 3])) == serial


# ---------------------------------------------------------------- a small bundle writer


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s as protobuf writes them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if fixed32:
        return _varint(number << 3 | 5) + struct.pack("<I", value)
    return _varint(number << 3) + _varint(value)


def _header(num_shards: int = 1, endianness: int = 0, min_consumer: int = 0) -> bytes:
    version = _field(1, 1) + _field(2, min_consumer)
    return _field(1, num_shards) + _field(2, endianness) + _field(3, version)


def _entry(dtype: int, shape, shard=0, offset=0, size=0, crc=0, unknown_rank=False) -> bytes:
    dims = b"".join(_field(2, _field(1, d)) for d in shape)
    if unknown_rank:
        dims += _field(3, 1)
    out = _field(1, dtype) + _field(2, dims) + _field(3, shard) + _field(4, offset)
    return out + _field(5, size) + _field(6, crc, fixed32=True)


def _block(items: list[tuple[bytes, bytes]], restart_every: int = 4) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        last = key
    out += b"".join(struct.pack("<I", r) for r in restarts or [0])
    return bytes(out + struct.pack("<I", len(restarts or [0])))


def _snappy_literal(data: bytes) -> bytes:
    if len(data) <= 60:
        return bytes([(len(data) - 1) << 2]) + data
    width = ((len(data) - 1).bit_length() + 7) // 8
    return bytes([(59 + width) << 2]) + (len(data) - 1).to_bytes(width, "little") + data


def _snappy(data: bytes) -> bytes:
    """Raw snappy, greedy on 4-byte matches, using each of the three copy forms in turn."""
    out, pos, literal, seen, n_copies = bytearray(_varint(len(data))), 0, bytearray(), {}, 0
    while pos < len(data):
        earlier = seen.get(data[pos : pos + 4])
        seen[data[pos : pos + 4]] = pos
        if earlier is None or len(data) - pos < 4:
            literal.append(data[pos])
            pos += 1
            continue
        length = 4
        while length < 64 and pos + length < len(data):
            if data[earlier + length] != data[pos + length]:
                break
            length += 1  # may run into the bytes being copied: an overlapping copy
        if literal:
            out += _snappy_literal(bytes(literal))
            literal.clear()
        offset = pos - earlier
        form = n_copies % 3
        if form == 0 and length <= 11 and offset < 2048:
            out += bytes([(offset >> 8) << 5 | (length - 4) << 2 | 1, offset & 0xFF])
        elif form == 2:
            out += bytes([(length - 1) << 2 | 3]) + struct.pack("<I", offset)
        else:
            out += bytes([(length - 1) << 2 | 2]) + struct.pack("<H", offset)
        n_copies += 1
        pos += length
    if literal:
        out += _snappy_literal(bytes(literal))
    return bytes(out)


def _with_trailer(block: bytes, kind: int = 0) -> bytes:
    if kind == 1:
        block = _snappy(block)
    return block + bytes([kind]) + struct.pack("<I", tb.masked_crc32c(block + bytes([kind])))


def _table(items: list[tuple[bytes, bytes]], kind: int = 0) -> bytes:
    out = _with_trailer(_block(items), kind)
    data_handle = _varint(0) + _varint(len(out) - 5)
    meta_handle = _varint(len(out)) + _varint(len(_block([])))
    out += _with_trailer(_block([]))
    last_key = items[-1][0] if items else b""
    index = _with_trailer(_block([(last_key, data_handle)]), kind)
    index_handle = _varint(len(out)) + _varint(len(index) - 5)
    out += index
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return out + footer


def _write(prefix: Path, items: list[tuple[bytes, bytes]], shards: dict[int, bytes] | None = None,
           num_shards: int = 1, kind: int = 0) -> Path:  # fmt: skip
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".index").write_bytes(_table(items, kind))
    for shard, data in (shards or {}).items():
        prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}").write_bytes(data)
    return prefix


def _one_tensor(tmp_path: Path, value: np.ndarray, **changes) -> Path:
    """A bundle holding ``value`` (float32) as tensor "x", with any field of its entry replaced."""
    raw = value.astype("<f4").tobytes()
    fields = {"dtype": 1, "shape": value.shape, "size": len(raw), "crc": tb.masked_crc32c(raw)}
    header = {k: changes.pop(k) for k in ("num_shards", "endianness", "min_consumer")
              if k in changes}  # fmt: skip
    data = changes.pop("data", raw)
    fields.update(changes)
    items = [(b"", _header(**header)), (b"x", _entry(**fields))]
    return _write(tmp_path / "ckpt", items, {0: data}, header.get("num_shards", 1))


def test_the_writer_makes_bundles_tensorflow_reads(tf, tmp_path):
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    prefix = _one_tensor(tmp_path, value)
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(prefix)).get_tensor("x"), value)
    np.testing.assert_array_equal(tb.read_tensors(prefix)["x"], value)


def test_prefix_compressed_keys_across_restarts(tmp_path):
    names = sorted(f"model/layer_{i:03d}/kernel" for i in range(40))
    items = [(b"", _header())]
    data = bytearray()
    for i, name in enumerate(names):
        raw = np.full(3, i, "<f4").tobytes()
        items.append(
            (name.encode(), _entry(1, (3,), 0, len(data), len(raw), tb.masked_crc32c(raw)))
        )
        data += raw
    prefix = _write(tmp_path / "ckpt", items, {0: bytes(data)})
    values = tb.read_tensors(prefix)
    assert list(values) == names
    assert [float(v[0]) for v in values.values()] == list(range(40))


def test_big_endian_bundles_are_byte_swapped(tmp_path):
    value = np.linspace(-2, 2, 6, dtype=np.float32)
    raw = value.astype(">f4").tobytes()
    prefix = _one_tensor(tmp_path, value, endianness=1, data=raw, crc=tb.masked_crc32c(raw))
    out = tb.read_tensors(prefix)["x"]
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # A lying size, consistent with its shape: refused before anything is allocated.
        ({"shape": (1 << 58,), "size": 1 << 60}, "needs bytes up to"),
        ({"offset": 1 << 62}, "needs bytes up to"),
        ({"offset": -8}, "negative offset"),
        ({"size": 8}, "bytes for shape"),  # disagrees with shape x dtype
        ({"shape": (1 << 40, 1 << 40)}, "bytes for shape"),
        ({"shape": (3, -1)}, "dimension of size -1"),
        ({"unknown_rank": True}, "unknown rank"),
        ({"shard": 1}, "shard 1 of 1"),
        ({"num_shards": 0}, "0 data shards"),
        ({"num_shards": 10**9}, "data shards"),
        ({"endianness": 7}, "byte order"),
        ({"min_consumer": 5}, "format version 5"),
        ({"crc": 12345}, "fails its checksum"),
        ({"dtype": 20}, "dtype resource"),
        ({"dtype": 99}, "dtype 99"),
    ],
)
def test_lying_entries_are_refused(tmp_path, changes, message):
    prefix = _one_tensor(tmp_path, np.ones((3, 4), np.float32), **changes)
    with pytest.raises(CheckpointError, match=message) as excinfo:
        tb.read_tensors(prefix, ["x"])
    assert "\n" not in str(excinfo.value)


def test_a_string_tensor_whose_lengths_lie_is_refused(tmp_path):
    raw = _varint(1000) + bytes(4) + b"abc"
    items = [(b"", _header()), (b"s", _entry(7, (), 0, 0, len(raw), 0))]
    prefix = _write(tmp_path / "ckpt", items, {0: raw})
    with pytest.raises(CheckpointError, match="string lengths disagree"):
        tb.read_tensors(prefix, verify_checksums=False)
    # A shape of more strings than there are bytes cannot be allocated for.
    items = [(b"", _header()), (b"s", _entry(7, (1 << 50,), 0, 0, len(raw), 0))]
    prefix = _write(tmp_path / "big" / "ckpt", items, {0: raw})
    with pytest.raises(CheckpointError, match="more strings than bytes"):
        tb.read_tensors(prefix, verify_checksums=False)


def _valid_items() -> list[tuple[bytes, bytes]]:
    return [(b"", _header()), (b"x", _entry(1, (1,), 0, 0, 4, tb.masked_crc32c(bytes(4))))]


@pytest.mark.parametrize(
    ("items", "kind", "message"),
    [
        ([(b"x", _entry(1, (1,)))], 0, "no bundle header"),
        ([(b"", _header()), (b"b", _entry(1, ())), (b"a", _entry(1, ()))], 0, "increasing"),
        ([(b"", _header()), (b"\xff\xfe", _entry(1, ()))], 0, "not UTF-8"),
        ([(b"", _header()), (b"x", b"\x0b\x00")], 0, "wire type 3"),
        ([(b"", _header()), (b"x", b"\x08" + b"\xff" * 11)], 0, "varint"),
        ([(b"", _header()), (b"x", b"\x12\x50abc")], 0, "longer than its message"),
        ([(b"", _header()), (b"x", b"\x0a\x01x")], 0, "dtype has the wrong wire type"),
        ([(b"", _header()), (b"x", b"\x12\x01\x02")], 0, "field number is 0"),
        (_valid_items(), 9, "unknown block compression"),
    ],
)
def test_malformed_indexes_are_refused(tmp_path, items, kind, message):
    prefix = _write(tmp_path / "ckpt", items, kind=kind)
    with pytest.raises(CheckpointError, match=f"corrupt checkpoint index ckpt.index: .*{message}"):
        tb.read_index(prefix)


def test_snappy_compressed_indexes_read_as_plain_ones(tmp_path):
    # The 2020 fixtures use snappy blocks too (compared with TensorFlow above); this one has
    # long literals and every copy form, overlapping ones included.
    items = [(b"", _header())]
    data = bytearray()
    for i in range(120):
        raw = np.full(2, i, "<f4").tobytes()
        key = f"model/{'abc' * (i % 5)}/{'z' * 70}/{bytes(range(65, 65 + i % 60)).decode()}/{i}"
        items.append((key.encode(), _entry(1, (2,), 0, len(data), 8, tb.masked_crc32c(raw))))
        data += raw
    items.sort()
    block = _block(items)
    packed = _snappy(block)
    assert len(packed) < len(block) // 2 and {b & 3 for b in packed} >= {0, 1, 2, 3}
    plain = tb.read_tensors(_write(tmp_path / "plain" / "ckpt", items, {0: bytes(data)}))
    packed = tb.read_tensors(_write(tmp_path / "packed" / "ckpt", items, {0: bytes(data)}, kind=1))
    assert list(packed) == list(plain) and len(plain) == 120
    for name, value in plain.items():
        np.testing.assert_array_equal(packed[name], value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_varint(100) + b"\x0cabcd", "shorter than it claims"),
        (_varint(4) + b"\x1cabcdefgh", "literal runs past"),
        (_varint(10) + b"\x0cabcd" + b"\x0a\x00\x00", "copy points outside"),  # offset 0
        (_varint(10) + b"\x0cabcd" + b"\x0a\x09\x00", "copy points outside"),  # behind start
        (_varint(10) + b"\x0cabcd" + b"\x0a", "cut off"),
        (_varint(10) + b"\xf4", "cut off"),  # a 61+ byte literal without its length
        (_varint(1 << 31), "claims"),  # more than any index may hold
        (b"\xff\xff\xff\xff\xff\x0f", "varint"),
    ],
)
def test_malformed_snappy_blocks_are_refused(tmp_path, payload, message):
    handle = _varint(0) + _varint(len(payload))
    body = payload + b"\x01" + struct.pack("<I", tb.masked_crc32c(payload + b"\x01"))
    footer = (handle + handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    (tmp_path / "ckpt.index").write_bytes(body + footer)
    with pytest.raises(CheckpointError, match=message):
        tb.read_index(tmp_path / "ckpt")


def test_malformed_blocks_are_refused(tmp_path):
    def index_with(block: bytes) -> Path:
        body = _with_trailer(block)
        handle = _varint(0) + _varint(len(block))
        footer = (handle + handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
        (tmp_path / "ckpt.index").write_bytes(body + footer)
        return tmp_path / "ckpt"

    for block, message in [
        (b"\x01", "too short"),
        (struct.pack("<I", 1 << 30), "restart array"),
        (b"\x05\x01\x01x" + struct.pack("<II", 0, 1), "runs past its block"),
        (b"\x00\x01\x40x" + struct.pack("<II", 0, 1), "runs past its block"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            tb.read_index(index_with(block))
    # A handle pointing past the end of the file.
    footer = (_varint(0) + _varint(5) + _varint(1 << 40) + _varint(9)).ljust(40, b"\0")
    (tmp_path / "ckpt.index").write_bytes(footer + struct.pack("<Q", 0xDB4775248B80FB57))
    with pytest.raises(CheckpointError, match="past the end"):
        tb.read_index(tmp_path / "ckpt")


def test_an_oversized_index_is_refused_unread(tmp_path, monkeypatch):
    prefix = _write(tmp_path / "ckpt", _valid_items(), {0: bytes(4)})
    monkeypatch.setattr(tb, "MAX_INDEX_BYTES", 100)
    with pytest.raises(CheckpointError, match="more than the 100 allowed"):
        tb.read_index(prefix)


def test_missing_index(tmp_path):
    with pytest.raises(CheckpointError, match=r"ckpt\.index"):
        tb.read_index(tmp_path / "ckpt")


# ---------------------------------------------------------------- damaged real files


def _copy_default(tmp_path: Path) -> Path:
    for path in DEFAULT_PREFIX.parent.glob(f"{DEFAULT_PREFIX.name}.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / DEFAULT_PREFIX.name


def test_every_truncation_of_the_index_is_refused(tmp_path):
    data = DEFAULT_PREFIX.with_name(DEFAULT_PREFIX.name + ".index").read_bytes()
    prefix = tmp_path / "ckpt"
    for length in [*range(0, len(data), 7), *range(len(data) - 64, len(data))]:
        prefix.with_name("ckpt.index").write_bytes(data[:length])
        with pytest.raises(CheckpointError, match="corrupt checkpoint index"):
            tb.read_index(prefix)


def test_every_flipped_byte_of_the_index_is_refused_or_harmless(tmp_path):
    data = bytearray(DEFAULT_PREFIX.with_name(DEFAULT_PREFIX.name + ".index").read_bytes())
    original = tb.list_tensors(DEFAULT_PREFIX)
    prefix = tmp_path / "ckpt"
    refused = 0
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << (pos % 8)
        prefix.with_name("ckpt.index").write_bytes(damaged)
        try:
            listed = tb.list_tensors(prefix)
        except CheckpointError:
            refused += 1
            continue
        # Only bytes nothing reads (the footer's padding) may change without notice.
        assert listed == original, pos
    # Unread: the footer's padding and the metaindex block (TensorFlow does not read it either).
    assert refused > len(data) - 60


def test_garbage_indexes_are_refused(tmp_path):
    rng = np.random.default_rng(7)
    magic = struct.pack("<Q", 0xDB4775248B80FB57)
    prefix = tmp_path / "ckpt"
    for trial in range(300):
        garbage = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        if trial % 2:
            garbage += magic  # get past the magic check, into the handles and blocks
        prefix.with_name("ckpt.index").write_bytes(garbage)
        with pytest.raises(CheckpointError):
            tb.read_index(prefix)


def test_a_truncated_data_file_is_found_by_size_and_by_reading(tmp_path):
    prefix = _copy_default(tmp_path)
    index = tb.read_index(prefix)
    data = index.data_path(0)
    full = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(full // 2)
    (problem,) = tb.data_file_problems(index)
    assert "truncated" in problem and f"{full // 2:,} bytes" in problem and f"{full:,}" in problem
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint data"):
        tb.read_tensors(index)


def test_a_flipped_data_byte_fails_its_checksum(tmp_path):
    prefix = _copy_default(tmp_path)
    index = tb.read_index(prefix)
    entry = index.entries["model/decoder/rnn/rnn/cell/recurrent_kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    with open(index.data_path(0), "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    assert tb.data_file_problems(index) == []  # the size is right
    with pytest.raises(CheckpointError, match=r"recurrent_kernel.* fails its checksum"):
        tb.read_tensors(index)
    # Without the check the damaged value is read as it is.
    damaged = tb.read_tensors(index, [entry.name], verify_checksums=False)[entry.name]
    good = tb.read_tensors(DEFAULT_PREFIX, [entry.name])[entry.name]
    assert (damaged != good).sum() == 1


def test_unknown_names_are_refused():
    with pytest.raises(CheckpointError, match="no tensor nope"):
        tb.read_tensors(DEFAULT_PREFIX, ["nope"])


def test_mutated_entries_with_valid_checksums_fail_only_cleanly(tmp_path):
    """Random damage inside the protobuf values and keys, re-sealed with correct block CRCs:
    the parser itself must refuse or cope, and reading must never raise anything else."""
    index_bytes = DEFAULT_PREFIX.with_name(DEFAULT_PREFIX.name + ".index").read_bytes()
    items = [(key, bytes(value)) for key, value in tb._table_entries(index_bytes)]
    data = DEFAULT_PREFIX.with_name(DEFAULT_PREFIX.name + ".data-00000-of-00001")
    rng = np.random.default_rng(11)
    outcomes = {"refused": 0, "read": 0}
    for trial in range(300):
        damaged = list(items)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(damaged)))
            key, value = damaged[i]
            if value and rng.random() < 0.8:
                pos = int(rng.integers(0, len(value)))
                value = value[:pos] + bytes([int(rng.integers(0, 256))]) + value[pos + 1 :]
            elif rng.random() < 0.5:
                value = value[: int(rng.integers(0, len(value) + 1))]
            else:
                key = key + bytes([int(rng.integers(0, 256))])
            damaged[i] = (key, value)
        damaged.sort(key=lambda item: item[0])
        prefix = tmp_path / f"t{trial}" / "ckpt"
        _write(prefix, damaged)
        prefix.with_name("ckpt.data-00000-of-00001").symlink_to(data)
        try:
            tb.read_tensors(prefix)
            outcomes["read"] += 1
        except CheckpointError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100
