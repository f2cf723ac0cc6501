"""The shipped default model renders the README's example inputs sensibly.

Each file in ``examples/`` goes through ``transfer.Engine`` with the default controls
(auto-adjust on, confidence gate 0.2) and no normalisation, so the level checked is the
model's own. Then:

- the output is audible (RMS above -40 dBFS) and not clipped (peak below 0 dBFS);
- its f0, tracked by our default tracker, is within 50 cents of the f0 the model was asked
  to play (the input's tracked f0 after auto-adjust's octave shift) on at least 90 % of the
  frames the tracker calls clearly voiced in the input (confidence >= 0.5 and not gated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ddsp_pd.checkpoint import load_checkpoint
from ddsp_pd.controls import ControlSettings
from ddsp_pd.pitch import get_tracker
from ddsp_pd.transfer import Engine, RenderSettings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "default"
EXAMPLES = sorted((ROOT / "examples").glob("*.wav"))

MIN_RMS_DB = -40.0
MAX_CENTS = 50.0
MIN_TRACKED = 0.90
VOICED_CONFIDENCE = 0.5


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(tracker="praat", checkpoint_dirs=[ROOT / "checkpoints"])


def test_default_model_is_shipped_small_and_complete():
    ckpt = load_checkpoint(DEFAULT)
    assert ckpt.config.era == "2.x"
    assert ckpt.statistics_path is not None
    size = sum(p.stat().st_size for p in DEFAULT.iterdir() if p.is_file())
    assert size < 25e6, f"{size / 1e6:.1f} MB"
    assert (DEFAULT / "MODEL_CARD.md").is_file()
    # Model variables only, like ddsp's exported checkpoints: no optimizer state.
    keys = [k for k, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(DEFAULT)))]
    assert len(keys) > 1
    assert all(k.startswith("model/") or k == "_CHECKPOINTABLE_OBJECT_GRAPH" for k in keys)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_default_model_follows_the_input_pitch(engine, path):
    loaded = engine.load_model(DEFAULT)
    settings = RenderSettings(controls=ControlSettings(), sample_rate=None, normalize=False)
    result = engine.render(loaded, settings, input_path=path)
    config = loaded.model.config
    audio = result.audio
    assert result.sample_rate == config.sample_rate  # the examples are 16 kHz

    rms_db = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) + 1e-20)
    peak = float(np.max(np.abs(audio)))
    assert rms_db > MIN_RMS_DB, f"output RMS {rms_db:.1f} dBFS"
    assert peak < 1.0, f"output peak {peak:.3f}"

    tracker = get_tracker("praat")
    n = len(audio) // config.hop
    out_f0, out_conf = tracker.track(audio, config.sample_rate, config.frame_rate, n)
    asked = result.adjusted.f0_hz[:n]
    voiced = (result.features.f0_confidence[:n] >= VOICED_CONFIDENCE) & (asked > 0)
    assert voiced.sum() > 0.3 * n, "the example should be mostly voiced"
    cents = 1200 * np.abs(np.log2(np.maximum(out_f0[voiced], 1e-3) / asked[voiced]))
    tracked = np.mean((cents <= MAX_CENTS) & (out_conf[voiced] > 0))
    print(f"{path.name}: {tracked:.1%} of {voiced.sum()} voiced frames within {MAX_CENTS:g} "
          f"cents; RMS {rms_db:.1f} dBFS, peak {peak:.2f}")  # fmt: skip
    assert tracked >= MIN_TRACKED
