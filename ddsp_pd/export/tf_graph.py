"""One frame of a DDSP-VST model as a TensorFlow function, converted to a TFLite flatbuffer.

What ddsp's ``VSTStatelessPredictControls`` computes (facts read from ddsp 3.7, this is our
own code): inputs ``f0_scaled`` [1], ``pw_scaled`` [1] and the GRU ``state`` [512]; one step
of the ``RnnFcDecoder`` from that state; then the synthesizers' nonlinearities inside the
graph, with f0 recovered as ``midi_to_hz(127 f0_scaled)``: amplitudes
``exp_sigmoid(raw)``, the harmonic distribution ``exp_sigmoid(raw)`` with harmonics at or
above Nyquist zeroed and normalised, noise magnitudes ``exp_sigmoid(raw + initial_bias)``;
outputs those three and the next state, 1-D, in that order.

The tensor names the plugin looks up come from how the file is made, as with ddsp: the
function is saved as a SavedModel signature named ``call`` whose arguments are named
``f0_scaled``, ``pw_scaled`` and ``state``, which the converter names ``call_<arg>:0``; the
weights are variables, so the function is a stateful call and its outputs are
``StatefulPartitionedCall:0`` to ``:3`` (constants would make them ``PartitionedCall:N``,
and converting the concrete function directly would name the inputs
``serving_default_<arg>:0``: neither is what the plugin looks for). Conversion allows
builtin TFLite ops only: the plugin has no Flex delegate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from ddsp_pd import synth
from ddsp_pd.config import ModelConfig
from ddsp_pd.decoder import Decoder
from ddsp_pd.errors import CheckpointError

__all__ = ["SIGNATURE_KEY", "PluginStep", "convert_to_tflite"]

#: The SavedModel signature whose name prefixes the input tensors (``call_f0_scaled:0``).
SIGNATURE_KEY = "call"
_F0_RANGE = 127.0


class PluginStep(tf.Module):
    """A VST model's decoder and control scaling, one frame per call (see the module doc)."""

    def __init__(self, config: ModelConfig, variables: Mapping[str, np.ndarray]) -> None:
        super().__init__(name="vst_stateless_predict_controls")
        self.config = config
        self.decoder = Decoder(config, variables)

    @tf.function
    def call(
        self, f0_scaled: tf.Tensor, pw_scaled: tf.Tensor, state: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(amplitudes [1], harmonic distribution [K], noise magnitudes [bands],
        state [U])`` for one frame."""
        c = self.config
        f0_scaled = tf.reshape(f0_scaled, [1, 1])
        scaled = {"f0_scaled": f0_scaled, "pw_scaled": tf.reshape(pw_scaled, [1, 1])}
        raw, new_state = self.decoder.step(
            tf.reshape(state, [1, c.rnn_channels]), *(scaled[k] for k in c.input_keys)
        )
        f0_hz = 440.0 * 2.0 ** ((f0_scaled * _F0_RANGE - 69.0) / 12.0)
        scale = (c.exp_sigmoid_exponent, c.exp_sigmoid_max_value, c.exp_sigmoid_threshold)
        amps, dist = synth.harmonic_controls(
            raw["amps"],
            raw["harmonic_distribution"],
            f0_hz,
            c.sample_rate,
            c.normalize_below_nyquist,
            *scale,
        )
        noise = synth.noise_magnitudes(raw["noise_magnitudes"], c.noise_initial_bias, *scale)
        return amps[0, 0], dist[0, 0], noise[0, 0], new_state[0]

    def signature(self) -> tf.types.experimental.ConcreteFunction:
        """The ``call`` signature with the plugin's argument names and shapes."""
        return self.call.get_concrete_function(
            f0_scaled=tf.TensorSpec([1], tf.float32, name="f0_scaled"),
            pw_scaled=tf.TensorSpec([1], tf.float32, name="pw_scaled"),
            state=tf.TensorSpec([self.config.rnn_channels], tf.float32, name="state"),
        )


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # The converter's useful line names the op; the first one is often a generic header.
    useful = next((ln for ln in lines if "op" in ln.lower() and "not" in ln.lower()), None)
    text = useful or (lines[0] if lines else type(exc).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


def convert_to_tflite(step: PluginStep) -> bytes:
    """The TFLite flatbuffer of ``step`` (builtin ops only), via a temporary SavedModel."""
    with tempfile.TemporaryDirectory(prefix="ddsp-pd-export-") as tmp:
        saved = Path(tmp) / "saved_model"
        tf.saved_model.save(step, str(saved), signatures={SIGNATURE_KEY: step.signature()})
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved), signature_keys=[SIGNATURE_KEY]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises its own ConverterError types
            raise CheckpointError(
                f"cannot convert the model to builtin TFLite ops: {_one_line(exc)}"
            ) from exc
