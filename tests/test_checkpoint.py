"""Checkpoint finding and reading, gin parsing, eras and sizes, and ``ddsp-pd info``.

Eras expected for the real fixtures come from the fixtures README (0.x: Google 2020
models, 1.x: the ddsp 1.6.2 viola, 2.x: the ddsp 3.7 reference); sizes are checked
against the shapes in each checkpoint index, never against numbers typed here.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import REAL, REFERENCE_CHECKPOINT, needs_fixtures

from ddsp_pd.checkpoint import (
    GIN_NAME,
    inspect_checkpoint,
    load_checkpoint,
    model_variable_name,
)
from ddsp_pd.config import ModelConfig, config_from_gin, detect_era, parameter_count
from ddsp_pd.decoder import decoder_variable_shapes
from ddsp_pd.errors import CheckpointError, DdspPdError
from ddsp_pd.gin_config import GinMacro, GinReference, lookup, parse_gin, read_gin

REAL_ERAS = {
    "google_2020_violin": "0.x",
    "google_2020_original_config": "0.x",
    "ddsp162_viola": "1.x",
}
REF_PREFIX = "ckpt-100"


@pytest.fixture(scope="module")
def reference():
    return load_checkpoint(REFERENCE_CHECKPOINT)


def _index_shapes(prefix: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for key, shape in tf.train.list_variables(str(prefix)):
        name = model_variable_name(key)
        if name is not None:
            out[name] = tuple(shape)
    return out


def _link_reference(dest: Path, prefix: str = REF_PREFIX, gin: bool = True) -> None:
    """A checkpoint folder in ``dest`` whose files link to the reference ones."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in REFERENCE_CHECKPOINT.glob(f"{REF_PREFIX}.*"):
        (dest / src.name.replace(REF_PREFIX, prefix)).symlink_to(src)
    if gin:
        shutil.copy(REFERENCE_CHECKPOINT / GIN_NAME, dest / GIN_NAME)


# ---------------------------------------------------------------- gin parsing


def test_parse_gin_values_macros_references_and_continuations():
    text = """
import ddsp
import ddsp.training as ddsp2

# Macros:
n = 8
Foo.size = %n
Foo.sizes = \\
    (1, 2,
     3)
Foo.items = [@synths.Harmonic(), @core.exp_sigmoid]
Foo.name = 'x'
Foo.flag = True
Foo.nothing = None
scope/Foo.size = 3
Foo.missing = %undefined
"""
    b = parse_gin(text)
    assert b["n"] == 8
    assert b["Foo.size"] == 8
    assert b["Foo.sizes"] == (1, 2, 3)
    assert b["Foo.items"] == [
        GinReference("synths.Harmonic", True),
        GinReference("core.exp_sigmoid", False),
    ]
    assert str(b["Foo.items"][0]) == "@synths.Harmonic()"
    assert b["Foo.name"] == "x" and b["Foo.flag"] is True and b["Foo.nothing"] is None
    assert b["scope/Foo.size"] == 3
    assert lookup(b, "Foo", "size") == 8  # the scoped binding does not leak out
    assert b["Foo.missing"] == GinMacro("undefined")


def test_lookup_matches_module_qualified_selectors():
    b = parse_gin("processors.Add.name = 'add'\nddsp.synths.Harmonic.sample_rate = 22050\n")
    assert lookup(b, "Add", "name") == "add"
    assert lookup(b, "Harmonic", "sample_rate") == 22050
    assert lookup(b, "Harmonic", "n_samples", "default") == "default"


@pytest.mark.parametrize("text", ["Foo.x = (1,", "Foo.x = 1 2", "@@@", "Foo.x = [1, 2"])
def test_bad_gin_raises_checkpoint_error(text):
    with pytest.raises(CheckpointError, match="gin config is not valid"):
        parse_gin(text)


@needs_fixtures
def test_reference_gin_parses_without_ddsp():
    b = read_gin(REFERENCE_CHECKPOINT / GIN_NAME)
    # `train.batch_size = %batch_size` resolves to the macro defined in the same file.
    assert b["train.batch_size"] == b["batch_size"]
    dag = lookup(b, "ProcessorGroup", "dag")
    assert [step[0].short_name for step in dag] == ["Harmonic", "FilteredNoise", "Add", "Reverb"]


# ---------------------------------------------------------------- eras and sizes


@needs_fixtures
def test_reference_is_2x_and_sizes_match_its_variables(reference):
    c = reference.config
    assert c.era == "2.x" and c.loudness_version == "v3" and c.ld_range_db == 80.0
    shapes = {k: v.shape for k, v in reference.variables.items()}
    stack0 = "decoder/input_stacks/0/layer_with_weights-0/layer_with_weights-0/kernel"
    assert c.ch == shapes[stack0][1]
    assert c.rnn_channels == shapes["decoder/rnn/rnn/cell/recurrent_kernel"][0]
    assert c.n_outputs == shapes["decoder/dense_out/kernel"][1]
    assert c.reverb_length == shapes["processor_group/reverb/ir"][0]
    assert c.hop * c.frame_rate == c.sample_rate
    # Every decoder variable the config implies is in the checkpoint with that shape.
    for name, shape in decoder_variable_shapes(c).items():
        assert shapes[name] == shape, name


@needs_fixtures
@pytest.mark.parametrize("name", sorted(REAL_ERAS))
def test_real_checkpoints_recognised_with_their_era(name):
    info = inspect_checkpoint(REAL / name)
    assert info.era == REAL_ERAS[name]
    assert info.refusal is None, info.refusal
    assert not info.has_data  # the fixtures ship indexes only
    c = info.config
    assert c.era == REAL_ERAS[name]
    assert c.loudness_version == "v1" and c.ld_range_db == 120.0 and c.min_db == -120.0
    for var_name, shape in decoder_variable_shapes(c).items():
        assert info.shapes[var_name] == shape, var_name
    if c.reverb:
        assert info.shapes[c.reverb_ir_name] == (c.reverb_length,)
    assert info.parameter_count == parameter_count(info.shapes)


@needs_fixtures
def test_0x_layout_uses_the_legacy_variable_names():
    info = inspect_checkpoint(REAL / "google_2020_original_config")
    c = info.config
    assert c.stack_names == ("decoder/f_stack", "decoder/l_stack")  # input_keys f0, ld
    assert c.input_keys == ("f0_scaled", "ld_scaled")
    assert c.rnn_name == "decoder/rnn/cell"
    assert c.reverb_ir_name == "processor_group/processors/3/ir"
    assert c.sample_rate * 4 == c.n_samples


@needs_fixtures
def test_bare_ckpt_index_is_accepted():
    info = inspect_checkpoint(REAL / "google_2020_violin")
    assert info.name == "ckpt"
    # The publisher's 44.1 kHz edit: 100 time steps per 44100-sample clip.
    c = info.config
    assert c.sample_rate == 44100 and c.hop * c.frame_rate == c.sample_rate


@needs_fixtures
@pytest.mark.parametrize("name", ["google_2020_flute", "google_2020_trumpet"])
def test_statistics_only_folders_are_refused(name):
    with pytest.raises(CheckpointError, match="no checkpoint index"):
        inspect_checkpoint(REAL / name)


VST_GIN = """
frame_size = 320
Autoencoder.preprocessor = @preprocessing.OnlineF0PowerPreprocessor()
OnlineF0PowerPreprocessor.frame_rate = 50
OnlineF0PowerPreprocessor.frame_size = %frame_size
ProcessorGroup.dag = [(@synths.Harmonic(), ['amps', 'harmonic_distribution', 'f0_hz'])]
"""


def test_vst_config_is_refused_with_its_era_named():
    bindings = parse_gin(VST_GIN)
    assert detect_era(bindings) == "vst"
    with pytest.raises(CheckpointError, match="DDSP-VST"):
        config_from_gin(bindings)


def test_unknown_era_is_refused():
    with pytest.raises(CheckpointError, match="cannot tell the ddsp version"):
        detect_era(parse_gin("Autoencoder.preprocessor = @preprocessing.Mystery()\n"))


def _viola_with_gin(tmp_path: Path, old: str, new: str) -> Path:
    src = REAL / "ddsp162_viola"
    dest = tmp_path / "viola"
    dest.mkdir()
    (dest / "ckpt-1800.index").symlink_to(src / "ckpt-1800.index")
    text = (src / GIN_NAME).read_text()
    assert old in text
    (dest / GIN_NAME).write_text(text.replace(old, new))
    return dest


@needs_fixtures
def test_gin_size_disagreeing_with_variables_is_refused(tmp_path):
    folder = _viola_with_gin(tmp_path, "RnnFcDecoder.ch = 512", "RnnFcDecoder.ch = 256")
    info = inspect_checkpoint(folder)
    assert info.refusal is not None and "RnnFcDecoder.ch = 256" in info.refusal


@needs_fixtures
def test_size_missing_from_gin_is_taken_from_variables(tmp_path):
    folder = _viola_with_gin(tmp_path, "RnnFcDecoder.rnn_channels = 512\n", "")
    info = inspect_checkpoint(folder)
    assert info.refusal is None
    assert info.config.rnn_channels == info.shapes["decoder/rnn/rnn/cell/recurrent_kernel"][0]
    assert any("rnn_channels" in note for note in info.config.notes)


@needs_fixtures
def test_output_splits_disagreeing_with_dense_out_is_refused(tmp_path):
    folder = _viola_with_gin(tmp_path, "('noise_magnitudes', 65)", "('noise_magnitudes', 64)")
    assert "dense_out" in inspect_checkpoint(folder).refusal


@needs_fixtures
def test_unsupported_processor_is_refused(tmp_path):
    folder = _viola_with_gin(
        tmp_path, "(@effects.Reverb(), ['add/signal'])", "(@effects.ModDelay(), ['add/signal'])"
    )
    assert "ModDelay" in inspect_checkpoint(folder).refusal


def test_solo_instrument_config_is_valid_and_validated():
    config = ModelConfig.solo_instrument()
    assert config.n_harmonics + config.n_noise_bands + 1 == config.n_outputs
    with pytest.raises(CheckpointError):
        config.with_sizes(hop=65)  # 16000 Hz is not 250 frames of 65 samples
    with pytest.raises(CheckpointError):
        config.with_sizes(input_keys=("z",), stack_names=("decoder/input_stacks/0",))


# ---------------------------------------------------------------- loading


@needs_fixtures
def test_load_reads_only_model_variables_by_ddsp_name(reference):
    index = _index_shapes(REFERENCE_CHECKPOINT / REF_PREFIX)
    assert set(reference.variables) == set(index)
    for name, value in reference.variables.items():
        assert not name.startswith("model/") and ".ATTRIBUTES" not in name
        assert value.dtype == np.float32 and value.shape == index[name]
    assert reference.name == REF_PREFIX
    assert reference.statistics_path == REFERENCE_CHECKPOINT / "dataset_statistics.pkl"
    assert reference.parameter_count == parameter_count(index)


def test_model_variable_name_filters_optimizer_state():
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    assert model_variable_name("model/decoder/dense_out/bias" + suffix) == "decoder/dense_out/bias"
    assert model_variable_name("optimizer/iter" + suffix) is None
    slot = "model/decoder/dense_out/bias/.OPTIMIZER_SLOT/optimizer/m" + suffix
    assert model_variable_name(slot) is None


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


@needs_fixtures
def test_directory_without_index(tmp_path):
    shutil.copy(REFERENCE_CHECKPOINT / GIN_NAME, tmp_path / GIN_NAME)
    with pytest.raises(CheckpointError, match="no checkpoint index"):
        load_checkpoint(tmp_path)


@needs_fixtures
def test_missing_gin(tmp_path):
    _link_reference(tmp_path, gin=False)
    with pytest.raises(CheckpointError, match=GIN_NAME):
        load_checkpoint(tmp_path)


@needs_fixtures
def test_index_without_data(tmp_path):
    (tmp_path / "ckpt-100.index").symlink_to(REFERENCE_CHECKPOINT / "ckpt-100.index")
    shutil.copy(REFERENCE_CHECKPOINT / GIN_NAME, tmp_path / GIN_NAME)
    with pytest.raises(CheckpointError, match=r"no \.data file"):
        load_checkpoint(tmp_path)


@needs_fixtures
def test_truncated_data_file(tmp_path):
    (tmp_path / "ckpt-100.index").symlink_to(REFERENCE_CHECKPOINT / "ckpt-100.index")
    shutil.copy(REFERENCE_CHECKPOINT / GIN_NAME, tmp_path / GIN_NAME)
    data = (REFERENCE_CHECKPOINT / "ckpt-100.data-00000-of-00001").read_bytes()
    (tmp_path / "ckpt-100.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path)


@needs_fixtures
def test_corrupt_index(tmp_path):
    (tmp_path / "ckpt-100.index").write_bytes(b"this is not a checkpoint index" * 10)
    (tmp_path / "ckpt-100.data-00000-of-00001").symlink_to(
        REFERENCE_CHECKPOINT / "ckpt-100.data-00000-of-00001"
    )
    shutil.copy(REFERENCE_CHECKPOINT / GIN_NAME, tmp_path / GIN_NAME)
    with pytest.raises(CheckpointError, match="corrupt checkpoint index"):
        load_checkpoint(tmp_path)


@needs_fixtures
def test_checkpoint_file_choice_beats_highest_number(tmp_path):
    _link_reference(tmp_path, "ckpt-100")
    _link_reference(tmp_path, "ckpt-300", gin=False)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "/train/run1/ckpt-100"\n'
        'all_model_checkpoint_paths: "/train/run1/ckpt-100"\n'
    )
    assert inspect_checkpoint(tmp_path).name == "ckpt-100"
    (tmp_path / "checkpoint").unlink()
    assert inspect_checkpoint(tmp_path).name == "ckpt-300"
    # A `checkpoint` file naming a ckpt that is not there falls back to the highest N.
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-200"\n')
    assert load_checkpoint(tmp_path).name == "ckpt-300"


@needs_fixtures
def test_highest_number_is_numeric_not_lexical(tmp_path):
    _link_reference(tmp_path, "ckpt-900")
    _link_reference(tmp_path, "ckpt-1200", gin=False)
    assert inspect_checkpoint(tmp_path).name == "ckpt-1200"


@needs_fixtures
def test_index_file_path_selects_that_checkpoint(tmp_path):
    _link_reference(tmp_path, "ckpt-100")
    _link_reference(tmp_path, "ckpt-300", gin=False)
    assert load_checkpoint(tmp_path / "ckpt-100.index").name == "ckpt-100"


def _zip_dir(folder: Path, archive: Path, arcroot: str = "my_model") -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path.resolve(), f"{arcroot}/{path.name}")


@needs_fixtures
def test_zip_loads_like_the_directory(tmp_path, reference):
    archive = tmp_path / "model.zip"
    _zip_dir(REFERENCE_CHECKPOINT, archive)
    ckpt = load_checkpoint(archive)
    assert ckpt.name == reference.name and ckpt.config == reference.config
    for name, value in reference.variables.items():
        np.testing.assert_array_equal(ckpt.variables[name], value)
    assert ckpt.statistics_path is not None and ckpt.statistics_path.is_file()


def test_zip_with_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/operative_config-0.gin", "x = 1\n")
        zf.writestr("../escaped.txt", "gotcha")
    with pytest.raises(CheckpointError, match="unsafe path"):
        load_checkpoint(archive)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_zip_with_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("model/ckpt-1.index")
    info.external_attr = 0o120777 << 16  # a symbolic link
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(CheckpointError, match="link"):
        load_checkpoint(archive)


def test_fake_zip_and_empty_zip(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK not really")
    with pytest.raises(CheckpointError, match="zip"):
        load_checkpoint(fake)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(empty)


def test_errors_are_one_line_ddsp_pd_errors(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(DdspPdError) as excinfo:
            load_checkpoint(path)
        assert "\n" not in str(excinfo.value)


# ---------------------------------------------------------------- ddsp-pd info


def _info(*args: str):
    from ddsp_pd.cli import main

    return CliRunner().invoke(main, ["info", *args])


@needs_fixtures
def test_info_describes_the_reference(reference):
    result = _info(str(REFERENCE_CHECKPOINT))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "era: 2.x" in out
    assert f"parameters: {reference.parameter_count:,}" in out
    assert f"sample rate: {reference.config.sample_rate} Hz" in out
    assert "chosen: ckpt-100" in out
    assert "statistics: dataset_statistics.pkl" in out


@needs_fixtures
def test_info_on_index_only_folder_reports_and_fails():
    result = _info(str(REAL / "ddsp162_viola"))
    assert result.exit_code != 0
    assert "era: 1.x" in result.output
    assert "weights" in result.output.strip().splitlines()[-1]


def test_info_on_missing_path_is_one_line_error(tmp_path):
    result = _info(str(tmp_path / "nothing"))
    assert result.exit_code != 0
    assert result.output.strip().count("\n") == 0
    assert "not found" in result.output


@needs_fixtures
@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_info_works_on_a_zip(tmp_path):
    archive = tmp_path / "m.zip"
    _zip_dir(REFERENCE_CHECKPOINT, archive)
    result = _info(str(archive))
    assert result.exit_code == 0, result.output
    assert "era: 2.x" in result.output


# ---------------------------------------------------------------- without TensorFlow


def test_loading_and_inspecting_never_import_tensorflow():
    import subprocess
    import sys

    from conftest import ROOT

    code = (
        "import sys\n"
        "from ddsp_pd.checkpoint import inspect_checkpoint, load_checkpoint\n"
        f"ckpt = load_checkpoint({str(ROOT / 'checkpoints' / 'default')!r})\n"
        "assert ckpt.parameter_count > 0\n"
        f"assert inspect_checkpoint({str(ROOT / 'checkpoints' / 'default')!r}).has_data\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- damaged weights (issue 9.9)


def _truncated_reference(folder: Path, keep: float = 0.5) -> Path:
    (folder / "ckpt-100.index").symlink_to(REFERENCE_CHECKPOINT / "ckpt-100.index")
    shutil.copy(REFERENCE_CHECKPOINT / GIN_NAME, folder / GIN_NAME)
    data = (REFERENCE_CHECKPOINT / "ckpt-100.data-00000-of-00001").read_bytes()
    (folder / "ckpt-100.data-00000-of-00001").write_bytes(data[: int(len(data) * keep)])
    return folder


@needs_fixtures
def test_inspect_checks_data_sizes_against_the_index(tmp_path):
    info = inspect_checkpoint(REFERENCE_CHECKPOINT)
    assert info.has_data and info.data_problems == () and not info.index_only
    info = inspect_checkpoint(_truncated_reference(tmp_path))
    assert not info.has_data and not info.index_only
    (problem,) = info.data_problems
    assert problem.startswith("ckpt-100.data-00000-of-00001 is truncated")
    assert inspect_checkpoint(REAL / "ddsp162_viola").index_only


@needs_fixtures
def test_info_says_damaged_for_a_truncated_data_file(tmp_path):
    # One byte short is enough: the last tensor's bytes are not all there.
    result = _info(str(_truncated_reference(tmp_path, keep=0.99999995)))
    assert result.exit_code != 0
    assert "weights: present" not in result.output
    assert "weights: damaged - ckpt-100.data-00000-of-00001 is truncated" in result.output
    last = result.output.strip().splitlines()[-1]
    assert "cannot be rendered: the weights are damaged" in last


# ---------------------------------------------------------------- zips (issue 9.7)


@pytest.fixture(scope="module")
def zeros_zip(tmp_path_factory) -> Path:
    """The reference checkpoint zipped beside 64 MiB of zeros (a 64 KB deflate)."""
    archive = tmp_path_factory.mktemp("zips") / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(REFERENCE_CHECKPOINT.iterdir()):
            zf.write(path, f"my_model/{path.name}")
        with zf.open("my_model/zeros.bin", "w") as out:
            for _ in range(64):
                out.write(bytes(1 << 20))
    return archive


def _files_under(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Point the temporary folder (where zips are extracted) at a folder of the test's own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@needs_fixtures
def test_a_zip_leaves_only_its_small_files_extracted_while_loaded(zeros_zip, private_tmp):
    ckpt = load_checkpoint(zeros_zip)
    try:
        reference = load_checkpoint(REFERENCE_CHECKPOINT)
        for name, value in reference.variables.items():
            np.testing.assert_array_equal(ckpt.variables[name], value)
        files = _files_under(private_tmp)
        # The zeros were never needed; the weights are in memory, their files already gone.
        assert set(files) == {GIN_NAME, "dataset_statistics.pkl"}
        assert sum(files.values()) < 100_000
        assert ckpt.statistics_path is not None and ckpt.statistics_path.is_file()
    finally:
        ckpt.close()
    assert _files_under(private_tmp) == {}
    ckpt.close()  # twice is fine


@needs_fixtures
def test_zip_extraction_takes_only_the_chosen_checkpoint(tmp_path, zeros_zip):
    from ddsp_pd.checkpoint import _extract_checkpoint

    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(zeros_zip) as src, zipfile.ZipFile(archive, "w") as zf:
        for info in src.infolist():
            if info.filename.endswith(("zeros.bin", "/checkpoint")):
                continue
            zf.writestr(info.filename, src.read(info))
            if ".index" in info.filename or ".data-" in info.filename:
                zf.writestr(info.filename.replace("ckpt-100", "ckpt-300"), src.read(info))
        zf.writestr("my_model/checkpoint", 'model_checkpoint_path: "/train/ckpt-100"\n')
    target = tmp_path / "out"
    target.mkdir()
    name, available = _extract_checkpoint(archive, target, with_data=True)
    assert name == "ckpt-100" and set(available) == {"ckpt-100", "ckpt-300"}
    assert set(_files_under(target)) == {
        GIN_NAME,
        "dataset_statistics.pkl",
        "ckpt-100.index",
        "ckpt-100.data-00000-of-00001",
    }
    assert inspect_checkpoint(archive).available == ("ckpt-100", "ckpt-300")


@needs_fixtures
def test_a_data_shard_is_copied_only_as_far_as_its_index_reaches(tmp_path, private_tmp):
    from ddsp_pd.checkpoint import _extract_checkpoint

    data = (REFERENCE_CHECKPOINT / "ckpt-100.data-00000-of-00001").read_bytes()
    archive = tmp_path / "padded.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("ckpt-100.index", GIN_NAME):
            zf.write(REFERENCE_CHECKPOINT / name, f"m/{name}")
        with zf.open("m/ckpt-100.data-00000-of-00001", "w") as out:
            out.write(data)
            for _ in range(32):
                out.write(bytes(1 << 20))  # 32 MiB that no tensor lives in
    target = tmp_path / "out"
    target.mkdir()
    _extract_checkpoint(archive, target, with_data=True)
    assert _files_under(target)["ckpt-100.data-00000-of-00001"] == len(data)
    assert load_checkpoint(archive).name == "ckpt-100"
    # For info the shard is only counted: a sparse file of the right length.
    info = inspect_checkpoint(archive)
    assert info.has_data and _files_under(private_tmp) == {}


@needs_fixtures
def test_a_truncated_data_shard_in_a_zip_is_reported(tmp_path):
    folder = _truncated_reference(tmp_path)
    archive = tmp_path / "short.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix != ".zip":
                zf.write(path.resolve(), f"m/{path.name}")
    info = inspect_checkpoint(archive)
    assert not info.has_data and "is truncated" in info.data_problems[0]
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(archive)


@needs_fixtures
def test_an_oversized_small_file_in_a_zip_is_refused(tmp_path, private_tmp):
    archive = tmp_path / "big_gin.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(REFERENCE_CHECKPOINT / "ckpt-100.index", "m/ckpt-100.index")
        zf.writestr(f"m/{GIN_NAME}", b"#" * (17 << 20))
    with pytest.raises(CheckpointError, match=f"{GIN_NAME} is 17,825,792 bytes or more, over"):
        load_checkpoint(archive)
    assert _files_under(private_tmp) == {}


@needs_fixtures
def test_a_lying_size_in_a_zip_is_caught_while_copying(tmp_path, private_tmp, monkeypatch):
    from ddsp_pd import checkpoint as ckpt_module

    archive = tmp_path / "lying.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(REFERENCE_CHECKPOINT / "ckpt-100.index", "m/ckpt-100.index")
        zf.write(REFERENCE_CHECKPOINT / GIN_NAME, f"m/{GIN_NAME}")
    gin = (REFERENCE_CHECKPOINT / GIN_NAME).read_bytes()
    monkeypatch.setitem(ckpt_module._SMALL_FILE_LIMITS, GIN_NAME, 1000)
    real_infolist, real_open = zipfile.ZipFile.infolist, zipfile.ZipFile.open

    def lying_infolist(self):
        infos = real_infolist(self)
        for info in infos:
            if info.filename.endswith(".gin"):
                info.file_size = 10  # the header's claim
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    # zipfile itself stops at the claimed size and then fails the member's CRC.
    with pytest.raises(CheckpointError, match="Bad CRC-32"):
        load_checkpoint(archive)
    assert _files_under(private_tmp) == {}

    # A reader that trusted the claim and streamed on is stopped by the count of the copy.
    def streaming_open(self, member, *args, **kwargs):
        if getattr(member, "filename", "").endswith(".gin"):
            return io.BytesIO(gin)
        return real_open(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", streaming_open)
    with pytest.raises(CheckpointError, match=f"{GIN_NAME} is 1,001 bytes or more, over the 1,000"):
        load_checkpoint(archive)
    assert _files_under(private_tmp) == {}


def test_a_zip_model_leaving_the_engine_cache_takes_its_files(tmp_path, private_tmp):
    from conftest import ROOT

    from ddsp_pd.transfer import Engine

    default = ROOT / "checkpoints" / "default"
    archive = tmp_path / "default.zip"
    _zip_dir(default, archive)
    engine = Engine(max_models=1)
    first = engine.load_model(archive)
    assert _files_under(private_tmp)  # its gin and statistics, while cached
    engine.load_model(default)  # evicts the zip's model, though `first` is still referenced
    assert _files_under(private_tmp) == {}
    assert first.checkpoint.variables  # the weights themselves stay usable


def test_a_zip_extraction_is_removed_at_exit(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    archive = tmp_path / "default.zip"
    _zip_dir(ROOT / "checkpoints" / "default", archive)
    code = (
        "from ddsp_pd.checkpoint import load_checkpoint\n"
        f"KEEP = load_checkpoint({str(archive)!r})\n"
        "print(KEEP.directory)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("ddsp-pd-ckpt-") and not folder.exists()
