"""One DDSP model in TensorFlow: preprocessor, RnnFcDecoder and synthesis, for training.

``DdspModel`` is differentiable through ``__call__`` and exposes its variables under
ddsp's names for training. Rendering uses :class:`ddsp_pd.inference.InferenceModel`
(numpy, no TensorFlow); ``DdspModel.render(f0_hz, loudness_db, seed)`` computes the same
audio in TensorFlow (the same noise for the same seed), which the tests compare.

DDSP-VST configs (era ``"vst"``, ddsp's ``vst.gin``) take power instead of loudness
(``pw_scaled = power_db / 80 + 1``, the same formula), end in a ``FilteredNoiseReverb``
(a trainable ``[n_frames, bands]`` magnitude grid that filters fresh white noise into the
impulse response on every call, as ddsp does) and a ``Crop`` of the last samples; for them
the "loudness" arguments below carry power in dB.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ddsp_pd import synth
from ddsp_pd.checkpoint import Checkpoint, load_checkpoint
from ddsp_pd.config import ModelConfig
from ddsp_pd.decoder import Decoder
from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.inference import synth as inference_synth

__all__ = ["INTERMEDIATE_NAMES", "DdspModel"]

INTERMEDIATE_NAMES = (
    "f0_scaled",
    "ld_scaled",
    "raw_amps",
    "raw_harmonic_distribution",
    "raw_noise_magnitudes",
    "harmonic_amplitudes",
    "harmonic_distribution",
    "harmonic_signal",
    "noise_magnitudes",
    "white_noise",
    "filtered_noise_signal",
    "dry_signal",
    "reverb_signal",
)
_F0_RANGE = 127.0
# Harmonic synthesis works on [B, frames * hop, n_harmonics] tensors; chunking bounds
# their size for long renders (1000 frames x 64 x 60 harmonics = 15 MB each).
_CHUNK_FRAMES = 1000


def _as_batch(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """``[T]`` or ``[B, T]`` float32, and whether a batch axis was added."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        return arr[np.newaxis], True
    if arr.ndim != 2:
        raise InputError(f"{name} must have shape [frames] or [batch, frames], got {arr.shape}")
    return arr, False


class DdspModel:
    """A ddsp solo-instrument model (decoder + harmonic + filtered noise + reverb).

    Build it from a :class:`Checkpoint`, a checkpoint path, or a :class:`ModelConfig`
    (then freshly initialised, or from ``variables`` ``{ddsp name: array}``).
    ``phase_mode`` selects the harmonic phase accumulator: ``"accurate"`` (float64, no
    drift on long clips; the default for rendering) or ``"ddsp"`` (the library's float32
    accumulation, identical to its output sample for sample).
    """

    def __init__(
        self,
        checkpoint_or_config: Checkpoint | ModelConfig | str | Path,
        variables: Mapping[str, np.ndarray] | None = None,
        *,
        phase_mode: str = "accurate",
        seed: int | None = None,
    ) -> None:
        if isinstance(checkpoint_or_config, (str, Path)):
            checkpoint_or_config = load_checkpoint(checkpoint_or_config)
        self.checkpoint: Checkpoint | None = None
        if isinstance(checkpoint_or_config, Checkpoint):
            self.checkpoint = checkpoint_or_config
            config = checkpoint_or_config.config
            if variables is None:
                variables = checkpoint_or_config.variables
        elif isinstance(checkpoint_or_config, ModelConfig):
            config = checkpoint_or_config
        else:
            raise TypeError("DdspModel needs a Checkpoint, a path or a ModelConfig")
        if phase_mode not in synth.PHASE_MODES:
            raise ValueError(f"phase_mode must be one of {synth.PHASE_MODES}")
        self.config = config
        self.phase_mode = phase_mode
        self.decoder = Decoder(config, variables, seed=seed)
        self.reverb_ir: tf.Variable | None = None
        self.reverb_magnitudes: tf.Variable | None = None
        if config.reverb and config.reverb_type == "filtered_noise":
            self._reverb_name = config.reverb_magnitudes_name or "processor_group/reverb/magnitudes"
            self.reverb_magnitudes = tf.Variable(
                self._initial_magnitudes(config, variables, seed),
                trainable=True,
                name="reverb_magnitudes",
            )
        elif config.reverb:
            name = config.reverb_ir_name or "processor_group/reverb/ir"
            if variables is not None:
                if name not in variables:
                    raise CheckpointError(f"checkpoint lacks the reverb impulse response {name}")
                ir = np.asarray(variables[name], np.float32).reshape(-1)
                if ir.shape[0] != config.reverb_length:
                    raise CheckpointError(
                        f"reverb ir has {ir.shape[0]} samples, "
                        f"the config says {config.reverb_length}"
                    )
            else:
                # ddsp initialises the trainable IR with tiny normal noise.
                rng = np.random.default_rng(None if seed is None else seed + 1)
                ir = (rng.standard_normal(config.reverb_length) * 1e-6).astype(np.float32)
            self.reverb_ir = tf.Variable(ir, trainable=True, name="reverb_ir")
            self._reverb_name = name
        hop = config.hop
        audio_spec = tf.TensorSpec([None, None], tf.float32)
        self._synth_chunk = tf.function(
            self._harmonic_chunk,
            input_signature=[
                tf.TensorSpec([None, None], tf.float64),
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None, None, config.n_harmonics], tf.float32),
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None, None, config.n_harmonics], tf.float32),
            ],
        )
        self._noise_fn = tf.function(
            lambda mags, noise: synth.filtered_noise(mags, noise, hop, config.noise_window_size),
            input_signature=[
                tf.TensorSpec([None, None, config.n_noise_bands], tf.float32),
                audio_spec,
            ],
        )
        self._reverb_fn = tf.function(self._reverb, input_signature=[audio_spec])
        self._noise_reverb_fn = tf.function(
            self._reverb, input_signature=[audio_spec, tf.TensorSpec([None], tf.float32)]
        )

    @staticmethod
    def _initial_magnitudes(
        config: ModelConfig, variables: Mapping[str, np.ndarray] | None, seed: int | None
    ) -> np.ndarray:
        shape = (config.reverb_n_frames, config.reverb_n_filter_banks)
        name = config.reverb_magnitudes_name or "processor_group/reverb/magnitudes"
        if variables is None:
            # ddsp initialises FilteredNoiseReverb's grid with normal noise of std 1e-2.
            rng = np.random.default_rng(None if seed is None else seed + 1)
            return (rng.standard_normal(shape) * 1e-2).astype(np.float32)
        if name not in variables:
            raise CheckpointError(f"checkpoint lacks the reverb magnitudes {name}")
        value = np.asarray(variables[name], np.float32)
        if value.shape != shape:
            raise CheckpointError(
                f"reverb magnitudes have shape {list(value.shape)}, the config says {list(shape)}"
            )
        return value

    # ------------------------------------------------------------ variables
    @property
    def _reverb_variable(self) -> tf.Variable | None:
        return self.reverb_ir if self.reverb_ir is not None else self.reverb_magnitudes

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        """Decoder weights and the reverb's (impulse response, or FilteredNoiseReverb grid)."""
        out = list(self.decoder.ddsp_variables().values())
        if self._reverb_variable is not None:
            out.append(self._reverb_variable)
        return out

    def ddsp_variables(self) -> dict[str, tf.Variable]:
        """``{ddsp name: tf.Variable}`` for every model variable (checkpoint names)."""
        out = self.decoder.ddsp_variables()
        if self._reverb_variable is not None:
            out[self._reverb_name] = self._reverb_variable
        return out

    @property
    def parameter_count(self) -> int:
        """Number of trainable scalars."""
        return int(sum(int(np.prod(v.shape)) for v in self.trainable_variables))

    # ------------------------------------------------------------ stages
    def preprocess(self, f0_hz: Any, loudness_db: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """``(f0_scaled, ld_scaled)``: MIDI / 127 and ``ld / range + 1`` (range 120 dB for
        0.x and 1.x models, 80 dB from 2.0 and for power, ``pw_scaled``, of VST models)."""
        f0_scaled = synth.hz_to_midi(f0_hz) / _F0_RANGE
        ld = tf.convert_to_tensor(loudness_db, tf.float32)
        ld_scaled = ld / self.config.ld_range_db + 1.0
        return f0_scaled, ld_scaled

    def _scaled(self, f0_scaled: Any, level_scaled: Any) -> list[Any]:
        """The decoder's inputs in ``input_keys`` order (the level is ``ld_scaled`` or,
        for VST models, ``pw_scaled``)."""
        scaled = {"f0_scaled": f0_scaled, self.config.level_scaled_key: level_scaled}
        return [scaled[key] for key in self.config.input_keys]

    def decode(self, f0_scaled: Any, ld_scaled: Any) -> dict[str, tf.Tensor]:
        """Raw decoder outputs ``{name: [B, T, size]}`` (inference path)."""
        args = self._scaled(f0_scaled, ld_scaled)
        return self.decoder.decode(dict(zip(self.config.input_keys, args, strict=True)))

    def controls(self, raw: Mapping[str, tf.Tensor], f0_hz: Any) -> dict[str, tf.Tensor]:
        """Scaled synthesiser controls from raw decoder outputs."""
        c = self.config
        scale = (c.exp_sigmoid_exponent, c.exp_sigmoid_max_value, c.exp_sigmoid_threshold)
        amps, dist = synth.harmonic_controls(
            raw["amps"],
            raw["harmonic_distribution"],
            f0_hz,
            c.sample_rate,
            c.normalize_below_nyquist,
            *scale,
        )
        mags = synth.noise_magnitudes(raw["noise_magnitudes"], c.noise_initial_bias, *scale)
        return {
            "harmonic_amplitudes": amps,
            "harmonic_distribution": dist,
            "noise_magnitudes": mags,
        }

    def _harmonic_chunk(
        self,
        phase: tf.Tensor,
        f0: tf.Tensor,
        harmonic_amps: tf.Tensor,
        f0_next: tf.Tensor,
        amps_next: tf.Tensor,
    ) -> tf.Tensor:
        c = self.config
        return synth.harmonic_oscillators(
            phase,
            f0,
            harmonic_amps,
            c.hop,
            c.sample_rate,
            c.amp_resample_method,
            f0_next,
            amps_next,
        )

    def _harmonic(self, amps: tf.Tensor, dist: tf.Tensor, f0_hz: tf.Tensor) -> tf.Tensor:
        c = self.config
        if self.phase_mode == "ddsp":
            return synth.harmonic_synth(
                amps, dist, f0_hz, c.hop, c.sample_rate, c.amp_resample_method, "ddsp"
            )
        harmonic_amps = amps * dist
        phase = synth.fundamental_phase(f0_hz, c.hop, c.sample_rate)
        n_frames = int(f0_hz.shape[1])
        pieces = []
        for start in range(0, n_frames, _CHUNK_FRAMES):
            stop = min(start + _CHUNK_FRAMES, n_frames)
            nxt = slice(start + 1, min(stop + 1, n_frames))
            f0_next = f0_hz[:, nxt]
            amps_next = harmonic_amps[:, nxt]
            if stop == n_frames:  # the last frame is held
                f0_next = tf.concat([f0_next, f0_hz[:, -1:]], axis=1)
                amps_next = tf.concat([amps_next, harmonic_amps[:, -1:]], axis=1)
            pieces.append(
                self._synth_chunk(
                    phase[:, start * c.hop : stop * c.hop],
                    f0_hz[:, start:stop],
                    harmonic_amps[:, start:stop],
                    f0_next,
                    amps_next,
                )
            )
        return tf.concat(pieces, axis=1) if len(pieces) > 1 else pieces[0]

    def _reverb(self, dry: tf.Tensor, ir_noise: tf.Tensor | None = None) -> tf.Tensor:
        return synth.apply_reverb(dry, self.impulse_response(ir_noise), self.config.reverb_add_dry)

    def impulse_response(self, ir_noise: Any | None = None) -> tf.Tensor:
        """The reverb's IR ``[L]``: the trainable one, or a ``FilteredNoiseReverb``'s made
        from ``ir_noise`` ``[L]`` (needed for those)."""
        if self.reverb_ir is not None:
            return self.reverb_ir
        if self.reverb_magnitudes is None:
            raise ValueError("this model has no reverb")
        if ir_noise is None:
            raise ValueError("a FilteredNoiseReverb needs the noise of its impulse response")
        c = self.config
        noise = tf.reshape(tf.convert_to_tensor(ir_noise, tf.float32), [1, c.reverb_length])
        ir = synth.noise_reverb_ir(
            self.reverb_magnitudes, noise, c.reverb_initial_bias, c.reverb_window_size,
            c.exp_sigmoid_exponent, c.exp_sigmoid_max_value, c.exp_sigmoid_threshold,
        )  # fmt: skip
        return ir[0]

    def _crop(self, audio: tf.Tensor) -> tf.Tensor:
        return synth.crop(audio, self.config.crop_size, self.config.crop_location)

    def synthesize(
        self,
        controls: Mapping[str, tf.Tensor],
        f0_hz: Any,
        seed: int = 0,
        noise: Any | None = None,
        ir_noise: Any | None = None,
    ) -> dict[str, tf.Tensor]:
        """Signals ``[B, N]`` from scaled controls: harmonic, white and filtered noise,
        dry (their sum) and, when the model has a reverb, reverb; ``audio`` is the output
        (cropped for VST models). A ``FilteredNoiseReverb``'s IR is made from ``ir_noise``
        ``[L]`` if given, else from noise drawn from ``seed`` as the numpy path draws it."""
        f0 = tf.convert_to_tensor(f0_hz, tf.float32)
        if f0.shape.rank == 3:
            f0 = f0[..., 0]
        batch, n_frames = int(f0.shape[0]), int(f0.shape[1])
        n_samples = n_frames * self.config.hop
        harmonic = self._harmonic(
            controls["harmonic_amplitudes"], controls["harmonic_distribution"], f0
        )
        if noise is None:
            # The numpy path's noise, so that both models render the same audio per seed.
            noise = tf.convert_to_tensor(inference_synth.white_noise(batch, n_samples, seed))
        else:
            noise = tf.convert_to_tensor(np.asarray(noise, np.float32))
            if noise.shape.rank == 1:
                noise = noise[tf.newaxis]
            if tuple(noise.shape) != (batch, n_samples):
                raise InputError(
                    f"noise must have {n_samples} samples per item ({n_frames} frames x hop "
                    f"{self.config.hop}), got shape {tuple(noise.shape)}"
                )
        filtered = self._noise_fn(controls["noise_magnitudes"], noise)
        dry = harmonic + filtered
        out = {
            "harmonic_signal": harmonic,
            "white_noise": noise,
            "filtered_noise_signal": filtered,
            "dry_signal": dry,
        }
        if self.reverb_ir is not None:
            out["reverb_signal"] = self._reverb_fn(dry)
        elif self.reverb_magnitudes is not None:
            if ir_noise is None:
                ir_noise = inference_synth.reverb_noise(self.config.reverb_length, seed)
            ir_noise = tf.reshape(tf.convert_to_tensor(np.asarray(ir_noise, np.float32)), [-1])
            out["reverb_ir"] = self.impulse_response(ir_noise)
            out["reverb_signal"] = self._noise_reverb_fn(dry, ir_noise)
        out["audio"] = self._crop(out.get("reverb_signal", dry))
        return out

    # ------------------------------------------------------------ end to end
    def render(
        self,
        f0_hz: Any,
        loudness_db: Any,
        seed: int = 0,
        noise: Any | None = None,
        return_intermediates: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Audio at ``config.sample_rate`` for frame features at ``config.frame_rate``.

        ``f0_hz`` (0 = unvoiced) and ``loudness_db`` (power for VST models) are ``[T]``
        (or ``[B, T]``) of equal length; the output has ``T * hop`` samples (less the crop
        of VST models). The filtered noise uses ``noise`` if given (``[T * hop]``), else
        uniform noise drawn from ``seed`` (deterministic), as does a FilteredNoiseReverb.
        With ``return_intermediates`` also returns every stage under the names in
        :data:`INTERMEDIATE_NAMES` (batch axis dropped for 1-D input).
        """
        f0, squeeze = _as_batch(f0_hz, "f0_hz")
        ld, _ = _as_batch(loudness_db, "loudness_db")
        if f0.shape != ld.shape:
            raise InputError(f"f0_hz and loudness_db differ in shape: {f0.shape} vs {ld.shape}")
        if f0.shape[1] < 1:
            raise InputError("no frames to render")
        if not (np.all(np.isfinite(f0)) and np.all(np.isfinite(ld))):
            raise InputError("f0_hz and loudness_db must be finite (no NaN or infinity)")
        f0_scaled, ld_scaled = self.preprocess(f0, ld)
        raw = self.decode(f0_scaled, ld_scaled)
        controls = self.controls(raw, f0)
        signals = self.synthesize(controls, f0, seed=seed, noise=noise)
        audio = signals["audio"].numpy()
        audio = audio[0] if squeeze else audio
        if not return_intermediates:
            return audio
        stages: dict[str, Any] = {"f0_scaled": f0_scaled, "ld_scaled": ld_scaled}
        stages.update({f"raw_{k}": v for k, v in raw.items()})
        stages.update(controls)
        stages.update(signals)
        result = {}
        for name, value in stages.items():
            arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            result[name] = arr[0] if squeeze else arr
        return audio, result

    def __call__(
        self,
        f0_hz: tf.Tensor,
        loudness_db: tf.Tensor,
        noise: tf.Tensor,
        ir_noise: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """Differentiable forward pass for training: ``[B, T]`` features (loudness, or power
        for VST models), ``[B, T * hop]`` noise and, for a FilteredNoiseReverb, the ``[L]``
        noise of its IR -> dict with ``audio`` (the model output, cropped for VST models)
        and every intermediate signal."""
        c = self.config
        f0 = tf.convert_to_tensor(f0_hz, tf.float32)
        f0_scaled, ld_scaled = self.preprocess(f0, loudness_db)
        raw = self.decoder(*self._scaled(f0_scaled, ld_scaled))
        controls = self.controls(raw, f0)
        harmonic = synth.harmonic_synth(
            controls["harmonic_amplitudes"],
            controls["harmonic_distribution"],
            f0,
            c.hop,
            c.sample_rate,
            c.amp_resample_method,
            self.phase_mode,
        )
        filtered = synth.filtered_noise(
            controls["noise_magnitudes"], noise, c.hop, c.noise_window_size
        )
        dry = harmonic + filtered
        out = dict(controls)
        out.update({f"raw_{k}": v for k, v in raw.items()})
        out.update(harmonic_signal=harmonic, filtered_noise_signal=filtered, dry_signal=dry)
        if self._reverb_variable is not None:
            out["reverb_signal"] = self._reverb(dry, ir_noise)
        out["audio"] = self._crop(out.get("reverb_signal", dry))
        return out
