"""``ddsp-pd train``: the ddsp-format writer, the training loop, resume, and the CLI.

The checkpoint layout is checked against the real ddsp 3.7 checkpoint of the reference
fixture (its key set under ``model/``), and a written checkpoint is read back through
``ddsp_pd.checkpoint`` / ``ddsp_pd.statistics`` / ``ddsp_pd.config``, the readers every other
part of ddsp-pd uses. Training runs the tiny config on a generated tone with 1 s examples
so the whole file stays well under a minute on two cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from click.testing import CliRunner
from conftest import REFERENCE_CHECKPOINT, needs_fixtures

from ddsp_pd.checkpoint import GIN_NAME, STATISTICS_NAME, load_checkpoint
from ddsp_pd.config import config_from_gin
from ddsp_pd.errors import InputError
from ddsp_pd.gin_config import parse_gin, read_gin
from ddsp_pd.model import DdspModel
from ddsp_pd.statistics import load_statistics
from ddsp_pd.training.dataset import CACHE_NAME, find_audio_files, prepare_examples
from ddsp_pd.training.graph import architecture_of
from ddsp_pd.training.loop import STATE_PATTERN, TrainOptions, preset_config, train
from ddsp_pd.training.losses import spectral_loss
from ddsp_pd.training.stats import compute_dataset_statistics
from ddsp_pd.training.writer import (
    SAVE_COUNTER_KEY,
    TrainSettings,
    list_checkpoints,
    operative_config_text,
    read_save_counter,
    write_checkpoint_state,
    write_model_checkpoint,
)

SR = 16000
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _model_keys(prefix: str | Path) -> set[str]:
    return {k for k, _ in tf.train.list_variables(str(prefix)) if k.startswith("model/")}


def _reference_prefix() -> Path:
    return (
        REFERENCE_CHECKPOINT
        / tf.train.get_checkpoint_state(str(REFERENCE_CHECKPOINT)).model_checkpoint_path.rsplit(
            "/", 1
        )[-1]
    )


def _tone(seconds: float, f0_start: float, seed: int) -> np.ndarray:
    """A harmonic tone: 5.5 Hz vibrato, a slow glide, swells and a gap, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = f0_start * 2 ** (0.3 * t / seconds) * 2 ** (0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    harmonics = sum((0.6**k) * np.sin(k * phase) for k in range(1, 9))
    envelope = 0.5 + 0.4 * np.sin(2 * np.pi * 0.7 * t) ** 2
    envelope[(t > 0.45 * seconds) & (t < 0.55 * seconds)] = 0.0  # a rest
    audio = 0.3 * envelope * harmonics + 0.003 * rng.standard_normal(len(t))
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train_audio")
    for i, f0 in enumerate((220.0, 330.0)):
        sf.write(folder / f"tone{i}.wav", _tone(3.0, f0, i), SR)
    return folder


@pytest.fixture(scope="module")
def trained(audio_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    options = TrainOptions(
        steps=30, batch_size=4, config="tiny", seed=3, save_every=15, log_every=15,
        example_secs=1.0, hop_secs=0.25,
    )  # fmt: skip
    lines: list[str] = []
    result = train(audio_dir, out, options, say=lines.append)
    return result, out, lines


@needs_fixtures
def test_written_keys_match_ddsp_reference(tmp_path):
    """Every variable key ddsp 3.7 writes under model/, the root's save_counter, nothing else
    (sizes may differ). The object graph itself is checked in test_checkpoint_graph.py."""
    config = preset_config("tiny")
    model = DdspModel(config, seed=0)
    prefix = write_model_checkpoint(tmp_path, model.ddsp_variables(), 5, architecture_of(config))
    assert _model_keys(prefix) == _model_keys(_reference_prefix())
    all_keys = {k for k, _ in tf.train.list_variables(str(prefix))}
    assert all_keys - _model_keys(prefix) == {"_CHECKPOINTABLE_OBJECT_GRAPH", SAVE_COUNTER_KEY}
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert Path(state.model_checkpoint_path).name == "ckpt-5"


@needs_fixtures
def test_operative_config_has_the_reference_selectors():
    """Our gin binds every selector of the reference's that describes the model, and
    config_from_gin reads it back to the same sizes (the training-data provider is ours)."""
    config = preset_config("small")
    ours = parse_gin(operative_config_text(config, TrainSettings()))
    reference = read_gin(REFERENCE_CHECKPOINT / GIN_NAME)
    missing = set(reference) - set(ours)
    assert missing <= {"train.data_provider", "TFRecordProvider.file_pattern"}
    solo = parse_gin(operative_config_text(preset_config("solo"), TrainSettings()))
    model_keys = [k for k in reference if not k.startswith(("train.", "Trainer.", "TFRecord"))]
    assert {k: solo[k] for k in model_keys} == {k: reference[k] for k in model_keys}
    back = config_from_gin(ours)
    for field in ("ch", "rnn_channels", "output_splits", "reverb_length", "sample_rate", "hop"):
        assert getattr(back, field) == getattr(config, field), field
    assert back.era == "2.x"


def test_statistics_match_definitions_and_load_back(tmp_path):
    """A 440 Hz example has MIDI 69 everywhere; the file reads back in the ddsp-1.6 layout
    under ddsp's class path."""
    from ddsp_pd.training.writer import write_statistics

    n = 2
    audio = np.tile(0.5 * np.sin(2 * np.pi * 440 * np.arange(64000) / SR), (n, 1))
    f0 = np.full((n, 1000), 440.0)
    loudness = np.linspace(-60, -10, 1000)[None].repeat(n, axis=0)
    stats = compute_dataset_statistics(audio, f0, np.ones_like(f0), loudness)
    assert stats.values["mean_pitch"] == pytest.approx(69.0, abs=1e-4)
    assert stats.values["std_pitch_note"] == pytest.approx(0.0, abs=1e-4)
    # A sine of amplitude 0.5 has mean square 0.125 (-9.03 dB) away from the padded edges;
    # 1024-sample frames hold 28.16 periods, so a frame's mean square is off by <= 0.6 %.
    assert stats.values["max_power"] == pytest.approx(10 * np.log10(0.125), abs=0.05)
    transform = stats.quantile_transform
    write_statistics(tmp_path, stats.values, transform.quantiles, transform.references)
    loaded = load_statistics(tmp_path / STATISTICS_NAME)
    assert loaded.layout == "ddsp-1.6"
    assert loaded.transformer_class == "ddsp.training.postprocessing.QuantileTransformer"
    assert loaded.extra["mean_pitch"] == pytest.approx(69.0, abs=1e-4)
    np.testing.assert_allclose(loaded.quantile_transform.quantiles, transform.quantiles)


def test_spectral_loss_is_zero_only_for_equal_audio():
    x = tf.random.stateless_uniform([2, 4096], seed=[1, 2], minval=-0.5, maxval=0.5)
    assert float(spectral_loss(x, x)) == 0.0
    assert float(spectral_loss(x, 0.5 * x)) > 0.1


def test_training_lowers_the_loss(trained):
    result, _out, lines = trained
    losses = np.array([loss for _, loss in result.losses])
    assert len(losses) == 30
    first, last = losses[:8].mean(), losses[-8:].mean()
    # The tiny model on a plain tone: the loss must drop by well over its batch noise.
    print(f"loss {first:.3f} -> {last:.3f}")
    assert last < 0.85 * first, (first, last)
    assert any("steps/s" in line and "ETA" in line for line in lines)


@needs_fixtures
def test_checkpoint_loads_back_with_identical_output(trained):
    """The written checkpoint, read by load_checkpoint into DdspModel, renders exactly what
    the model in memory renders (same noise)."""
    result, out, _ = trained
    assert list_checkpoints(out) == [15, 30]
    assert _model_keys(out / "ckpt-30") == _model_keys(_reference_prefix())
    ckpt = load_checkpoint(out)
    assert ckpt.config.era == "2.x"
    assert ckpt.config.ch == result.config.ch
    loaded = DdspModel(ckpt)
    frames = 300
    f0 = np.geomspace(200.0, 400.0, frames).astype(np.float32)
    loudness = np.linspace(-50.0, -10.0, frames).astype(np.float32)
    expected = result.model.render(f0, loudness, seed=7)
    got = loaded.render(f0, loudness, seed=7)
    # Same variables, same code: equal to float32 rounding of the graph (atol 1e-6).
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.max(np.abs(expected)) > 1e-4
    stats = load_statistics(out / STATISTICS_NAME)
    assert stats.layout == "ddsp-1.6"


def test_resume_continues_exactly(audio_dir, trained, tmp_path):
    """A run stopped at step 15 (its files copied from the full run) and resumed to 30 ends
    with the same weights as the uninterrupted run: batches and noise depend on the step."""
    result, out, _ = trained
    for name in ("ckpt-15.index", "ckpt-15.data-00000-of-00001", STATE_PATTERN.format(15),
                 CACHE_NAME, "train_log.csv"):  # fmt: skip
        shutil.copy2(out / name, tmp_path / name)
    write_checkpoint_state(tmp_path, [15])
    options = TrainOptions(
        steps=30, batch_size=4, config="tiny", seed=3, save_every=15, log_every=15,
        example_secs=1.0, hop_secs=0.25,
    )  # fmt: skip
    lines: list[str] = []
    resumed = train(audio_dir, tmp_path, options, say=lines.append)
    assert resumed.start_step == 15 and resumed.final_step == 30
    # save_counter counts the saves of the run across the resume, as ddsp's manager does.
    assert [read_save_counter(tmp_path / f"ckpt-{s}") for s in (15, 30)] == [1, 2]
    assert read_save_counter(out / "ckpt-30") == 2
    assert any("resuming from step 15" in line for line in lines)
    assert any("from the cache" in line for line in lines)
    want = result.model.ddsp_variables()
    for name, var in resumed.model.ddsp_variables().items():
        # Same arithmetic in the same order: only float32 rounding may differ.
        np.testing.assert_allclose(var.numpy(), want[name].numpy(), rtol=1e-4, atol=1e-6)


def test_examples_are_cut_and_cached(audio_dir, tmp_path):
    ex = prepare_examples(audio_dir, tmp_path, example_secs=1.0, hop_secs=0.5)
    # Two 3 s files, 1 s windows every 0.5 s: starts 0, 0.5, ..., 2.0 -> 5 per file.
    assert len(ex) == 10
    assert ex.audio.shape == (10, SR) and ex.f0_hz.shape == (10, 250)
    voiced = ex.f0_confidence > 0.5
    # The tone starts at 220 Hz (file 0): the tracker agrees within a semitone.
    first = ex.f0_hz[0][voiced[0]]
    assert np.median(np.abs(12 * np.log2(first / 220.0))) < 1.0
    again = prepare_examples(audio_dir, tmp_path, example_secs=1.0, hop_secs=0.5)
    np.testing.assert_array_equal(again.audio, ex.audio)


def test_missing_or_empty_audio_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        find_audio_files(tmp_path / "nope")
    with pytest.raises(InputError, match="no audio files"):
        find_audio_files(tmp_path)
    from ddsp_pd.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["train", str(tmp_path), "-o", str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "no audio files" in res.output
    assert "Traceback" not in res.output
