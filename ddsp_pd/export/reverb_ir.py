"""The reverb impulse response an export writes beside the ``.tflite``.

The ``.tflite`` makes only the synthesizer controls; the model's own reverb goes beside it
as ``reverb_ir_<sample rate>_hz.wav``, as ddsp_export writes it (from
``Reverb.get_controls``, before the first tap is masked). ddsp-pd renders a ``.tflite``
with that IR; the DDSP-VST plugin itself ignores the file (it has its own algorithmic
``juce::Reverb``). For a ``FilteredNoiseReverb``
(vst.gin) that is ``reverb_length`` samples of uniform white noise in [-1, 1) filtered by
``FilteredNoise`` with the learned magnitudes: frame j of ``reverb_length / n_frames``
samples through the linear-phase FIR of ``exp_sigmoid(magnitudes[j] + initial_bias)``
(``window_size`` taps at most). ddsp draws the noise anew on every export; here it is drawn
from a seed, so the same checkpoint and seed give the same file (and the IR ddsp-pd
renders the checkpoint with for that seed). A trainable ``Reverb``'s
IR is its variable.

The WAV is 16-bit PCM as ddsp writes it (``note_seq``'s int16 scaling by 32767; rounded
here rather than truncated).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError
from ddsp_pd.inference import synth as isynth

__all__ = ["reverb_ir", "reverb_ir_name", "wav_bytes"]

_INT16_SCALE = 32767.0


def reverb_ir_name(sample_rate: int) -> str:
    """The file name the plugin and ddsp-pd look for: ``reverb_ir_16000_hz.wav``."""
    return f"reverb_ir_{int(sample_rate)}_hz.wav"


def reverb_ir(
    config: ModelConfig,
    variables: Mapping[str, np.ndarray],
    seed: int = 0,
    noise: np.ndarray | None = None,
) -> np.ndarray | None:
    """The model's reverb IR, float32 ``[reverb_length]``, or None without a reverb.

    ``noise`` (``[reverb_length]``) replaces the white noise drawn from ``seed``
    (:func:`ddsp_pd.inference.synth.reverb_noise`, the noise ddsp-pd's renders draw for
    the same seed, so the exported IR is the one ``ddsp-pd render --seed`` uses), e.g. to
    reproduce ddsp's IR from stored noise.
    """
    if not config.reverb:
        return None
    if config.reverb_type == "ir":
        name = config.reverb_ir_name or "processor_group/reverb/ir"
        if name not in variables:
            raise CheckpointError(f"checkpoint lacks the reverb impulse response {name}")
        return np.asarray(variables[name], np.float32).reshape(-1).copy()
    name = config.reverb_magnitudes_name or "processor_group/reverb/magnitudes"
    if name not in variables:
        raise CheckpointError(f"checkpoint lacks the reverb magnitudes {name}")
    magnitudes = np.asarray(variables[name], np.float32)
    shape = (config.reverb_n_frames, config.reverb_n_filter_banks)
    if magnitudes.shape != shape:
        raise CheckpointError(
            f"reverb magnitudes have shape {list(magnitudes.shape)}, expected {list(shape)}"
        )
    length, n_frames = config.reverb_length, config.reverb_n_frames
    # ddsp's fft_convolve cuts the noise into frames of ceil(length / n_frames) samples.
    if -(-length // -(-length // n_frames)) != n_frames:
        raise CheckpointError(
            f"FilteredNoiseReverb: {length} samples do not split into {n_frames} frames"
        )
    if noise is None:
        noise = isynth.reverb_noise(length, seed)
    noise = np.asarray(noise, np.float32).reshape(-1)
    if noise.shape[0] != length:
        raise ValueError(f"noise must have {length} samples")
    scaled = isynth.noise_magnitudes(
        magnitudes,
        config.reverb_initial_bias,
        config.exp_sigmoid_exponent,
        config.exp_sigmoid_max_value,
        config.exp_sigmoid_threshold,
    )
    return isynth.noise_reverb_ir(scaled, noise, config.reverb_window_size)


def wav_bytes(ir: np.ndarray, sample_rate: int) -> bytes:
    """``ir`` as a mono 16-bit PCM WAV file (values clipped to the int16 range)."""
    import soundfile

    pcm = np.clip(np.round(np.asarray(ir, np.float64) * _INT16_SCALE), -32768, 32767)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm.astype(np.int16), int(sample_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()
