"""One DDSP model for rendering, without TensorFlow: preprocessor, decoder and synthesis.

:class:`InferenceModel` holds a checkpoint's weights as numpy arrays and renders frame
features to audio; the work is done by the pure functions of :mod:`.decoder` and
:mod:`.synth`. It has the inference API of :class:`ddsp_pd.model.DdspModel` (the
TensorFlow model kept for training), with numpy arrays in and out, so the same parity
tests run against both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.inference import kernels as kernels_module
from ddsp_pd.inference import synth as isynth
from ddsp_pd.inference.decoder import DecoderWeights, decode

__all__ = ["INTERMEDIATE_NAMES", "STREAM_BLOCK_FRAMES", "InferenceModel", "ModelControls"]

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
_serials = itertools.count()
#: Frames per block of :meth:`InferenceModel.render_blocks` (16 s at 250 frames/s).
STREAM_BLOCK_FRAMES = 4000


def _as_batch(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """``[T]`` or ``[B, T]`` float32, and whether a batch axis was added."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        return arr[np.newaxis], True
    if arr.ndim != 2:
        raise InputError(f"{name} must have shape [frames] or [batch, frames], got {arr.shape}")
    return arr, False


@dataclass(frozen=True)
class ModelControls:
    """What a render keeps of the decoder's work on a clip, so that a change of noise seed
    needs only the noise filter and the reverb: the noise filter's magnitudes
    ``[B, T, bands]`` and the harmonic signal ``[B, N]`` (it needs no noise)."""

    f0_hz: np.ndarray
    noise_magnitudes: np.ndarray
    harmonic: np.ndarray
    squeeze: bool = False

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return int(self.f0_hz.nbytes + self.noise_magnitudes.nbytes + self.harmonic.nbytes)


class InferenceModel:
    """A ddsp solo-instrument model (decoder + harmonic + filtered noise + reverb) in numpy.

    Build it from a :class:`~ddsp_pd.checkpoint.Checkpoint`, a checkpoint path, or a
    :class:`ModelConfig` with ``variables`` ``{ddsp name: array}``. ``phase_mode`` selects
    the harmonic phase accumulator: ``"accurate"`` (float64, no drift; the default) or
    ``"ddsp"`` (the library's float32 accumulation, identical to its output).
    ``kernels`` is the backend of the inner loops (``"numpy"``, ``"compiled"`` or
    ``"auto"``: chosen per render by its length, see :mod:`ddsp_pd.inference.kernels`);
    the stages also take a ``kernels`` argument that overrides it for one call.
    """

    def __init__(
        self,
        checkpoint_or_config: Any,
        variables: Mapping[str, np.ndarray] | None = None,
        *,
        phase_mode: str = "accurate",
        kernels: str = "numpy",
    ) -> None:
        from ddsp_pd.checkpoint import Checkpoint, load_checkpoint

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
            raise TypeError("InferenceModel needs a Checkpoint, a path or a ModelConfig")
        if variables is None:
            raise TypeError("InferenceModel needs the model's variables")
        if phase_mode not in isynth.PHASE_MODES:
            raise ValueError(f"phase_mode must be one of {isynth.PHASE_MODES}")
        self.config = config
        self.phase_mode = phase_mode
        self.kernels = kernels_module.check_backend(kernels)
        #: Unique per model object in this process: caches of its outputs key on it.
        self.serial = next(_serials)
        self.weights = DecoderWeights.from_variables(config, variables)
        self.reverb_ir: np.ndarray | None = None
        if config.reverb:
            name = config.reverb_ir_name or "processor_group/reverb/ir"
            if name not in variables:
                raise CheckpointError(f"checkpoint lacks the reverb impulse response {name}")
            ir = np.asarray(variables[name], np.float32).reshape(-1)
            if ir.shape[0] != config.reverb_length:
                raise CheckpointError(
                    f"reverb ir has {ir.shape[0]} samples, the config says {config.reverb_length}"
                )
            self.reverb_ir = ir.copy()

    def backend(self, n_frames: int, kernels: str | None = None) -> str:
        """The kernel backend (``"numpy"`` or ``"compiled"``) a call on ``n_frames`` frames
        uses: ``kernels`` if given, else the model's; ``"auto"`` is decided by length."""
        name = kernels_module.check_backend(kernels or self.kernels)
        return kernels_module.auto_backend(n_frames) if name == "auto" else name

    @property
    def parameter_count(self) -> int:
        """Number of trainable scalars (decoder and reverb impulse response)."""
        ir = 0 if self.reverb_ir is None else int(self.reverb_ir.size)
        return self.weights.parameter_count + ir

    # ------------------------------------------------------------ stages
    def preprocess(self, f0_hz: Any, loudness_db: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(f0_scaled, ld_scaled)``: MIDI / 127 and ``ld / range + 1`` (range 120 dB for
        0.x and 1.x models, 80 dB from 2.0)."""
        f0_scaled = isynth.hz_to_midi(f0_hz) / np.float32(_F0_RANGE)
        ld = np.asarray(loudness_db, np.float32)
        ld_scaled = ld / np.float32(self.config.ld_range_db) + np.float32(1.0)
        return f0_scaled.astype(np.float32), ld_scaled.astype(np.float32)

    def decode(
        self,
        f0_scaled: Any,
        ld_scaled: Any,
        state: np.ndarray | None = None,
        kernels: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw decoder outputs ``{name: [B, T, size]}``; inputs ``[T]`` or ``[B, T]``."""
        return self.decode_with_state(f0_scaled, ld_scaled, state, kernels)[0]

    def decode_with_state(
        self,
        f0_scaled: Any,
        ld_scaled: Any,
        state: np.ndarray | None = None,
        kernels: str | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`decode` from GRU state ``state`` (zeros: None), and the state after it."""
        f0s, _ = _as_batch(f0_scaled, "f0_scaled")
        lds, _ = _as_batch(ld_scaled, "ld_scaled")
        scaled = {"f0_scaled": f0s, "ld_scaled": lds}
        inputs = {key: scaled[key] for key in self.config.input_keys}
        return decode(self.weights, inputs, state, self.backend(f0s.shape[1], kernels))

    def controls(self, raw: Mapping[str, np.ndarray], f0_hz: Any) -> dict[str, np.ndarray]:
        """Scaled synthesiser controls from raw decoder outputs."""
        c = self.config
        scale = (c.exp_sigmoid_exponent, c.exp_sigmoid_max_value, c.exp_sigmoid_threshold)
        amps, dist = isynth.harmonic_controls(
            raw["amps"],
            raw["harmonic_distribution"],
            f0_hz,
            c.sample_rate,
            c.normalize_below_nyquist,
            *scale,
        )
        mags = isynth.noise_magnitudes(raw["noise_magnitudes"], c.noise_initial_bias, *scale)
        return {
            "harmonic_amplitudes": amps,
            "harmonic_distribution": dist,
            "noise_magnitudes": mags,
        }

    def harmonic(
        self, controls: Mapping[str, np.ndarray], f0_hz: np.ndarray, kernels: str | None = None
    ) -> np.ndarray:
        """The harmonic signal ``[B, N]`` of scaled controls."""
        c = self.config
        f0_hz = np.asarray(f0_hz, np.float32)
        out, _ = isynth.harmonic_synth(
            controls["harmonic_amplitudes"],
            controls["harmonic_distribution"],
            f0_hz,
            c.hop,
            c.sample_rate,
            c.amp_resample_method,
            self.phase_mode,
            self.backend(f0_hz.shape[-1] if f0_hz.ndim < 3 else f0_hz.shape[1], kernels),
        )
        return out

    def _noise(self, batch: int, n_frames: int, seed: int, noise: Any | None) -> np.ndarray:
        n_samples = n_frames * self.config.hop
        if noise is None:
            return isynth.white_noise(batch, n_samples, seed)
        noise = np.asarray(noise, np.float32)
        if noise.ndim == 1:
            noise = noise[np.newaxis]
        if noise.shape != (batch, n_samples):
            raise InputError(
                f"noise must have {n_samples} samples per item ({n_frames} frames x hop "
                f"{self.config.hop}), got shape {tuple(noise.shape)}"
            )
        return noise

    def synthesize(
        self,
        controls: Mapping[str, np.ndarray],
        f0_hz: Any,
        seed: int = 0,
        noise: Any | None = None,
        harmonic: np.ndarray | None = None,
        kernels: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Signals ``[B, N]`` from scaled controls: harmonic, white and filtered noise,
        dry (their sum) and, when the model has a reverb, reverb (the output).
        ``harmonic`` reuses a harmonic signal already made from these controls (then only
        ``noise_magnitudes`` of ``controls`` is read)."""
        f0 = np.asarray(f0_hz, np.float32)
        if f0.ndim == 1:
            f0 = f0[np.newaxis]
        if f0.ndim == 3:
            f0 = f0[..., 0]
        batch, n_frames = f0.shape
        if harmonic is None:
            harmonic = self.harmonic(controls, f0, kernels)
        white = self._noise(batch, n_frames, seed, noise)
        filtered, _ = isynth.filtered_noise(
            controls["noise_magnitudes"], white, self.config.hop, self.config.noise_window_size
        )
        dry = harmonic + filtered
        out = {
            "harmonic_signal": harmonic,
            "white_noise": white,
            "filtered_noise_signal": filtered,
            "dry_signal": dry,
        }
        if self.reverb_ir is not None:
            out["reverb_signal"], _ = isynth.reverb(dry, self.reverb_ir, self.config.reverb_add_dry)
        return out

    # ------------------------------------------------------------ end to end
    def _check_features(self, f0_hz: Any, loudness_db: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        f0, squeeze = _as_batch(f0_hz, "f0_hz")
        ld, _ = _as_batch(loudness_db, "loudness_db")
        if f0.shape != ld.shape:
            raise InputError(f"f0_hz and loudness_db differ in shape: {f0.shape} vs {ld.shape}")
        if f0.shape[1] < 1:
            raise InputError("no frames to render")
        if not (np.all(np.isfinite(f0)) and np.all(np.isfinite(ld))):
            raise InputError("f0_hz and loudness_db must be finite (no NaN or infinity)")
        return f0, ld, squeeze

    def model_controls(
        self, f0_hz: Any, loudness_db: Any, kernels: str | None = None
    ) -> ModelControls:
        """Everything a render needs that does not depend on the noise (the decoder's
        work and the harmonic signal), for ``[T]`` or ``[B, T]`` features."""
        f0, ld, squeeze = self._check_features(f0_hz, loudness_db)
        raw = self.decode(*self.preprocess(f0, ld), kernels=kernels)
        controls = self.controls(raw, f0)
        harmonic = self.harmonic(controls, f0, kernels)
        return ModelControls(f0, controls["noise_magnitudes"], harmonic, squeeze)

    def render_controls(
        self, prepared: ModelControls, seed: int = 0, noise: Any | None = None
    ) -> np.ndarray:
        """Audio from :meth:`model_controls` and a noise seed (``[N]`` or ``[B, N]`` as the
        features were given)."""
        signals = self.synthesize(
            {"noise_magnitudes": prepared.noise_magnitudes},
            prepared.f0_hz,
            seed=seed,
            noise=noise,
            harmonic=prepared.harmonic,
        )
        audio = signals.get("reverb_signal", signals["dry_signal"])
        return audio[0] if prepared.squeeze else audio

    def render_blocks(
        self,
        f0_hz: Any,
        loudness_db: Any,
        seed: int = 0,
        noise: Any | None = None,
        block_frames: int = STREAM_BLOCK_FRAMES,
        kernels: str | None = None,
    ) -> Iterator[np.ndarray]:
        """:meth:`render` in consecutive pieces of audio, with memory bounded by the block.

        Decodes ``block_frames`` frames at a time, carrying the GRU state, the oscillator
        phase, the noise stream and the noise filter's and the reverb's tails from block to
        block, so that the pieces joined equal :meth:`render` of the whole clip (to float
        rounding). Each frame's synthesis needs the next frame's controls, so a block's
        last frame is synthesised with the next block; pieces therefore do not line up with
        blocks. Yields ``[N_i]`` (or ``[B, N_i]``) float32 pieces.
        """
        f0, ld, squeeze = self._check_features(f0_hz, loudness_db)
        batch, n_frames = f0.shape
        hop = self.config.hop
        block = max(1, int(block_frames))
        backend = self.backend(n_frames, kernels)
        if noise is not None:
            noise = self._noise(batch, n_frames, seed, noise)
        stream = isynth.noise_stream(seed) if noise is None else None
        c = self.config
        gru_state = harmonic_state = noise_state = reverb_state = None
        held: tuple[np.ndarray, ...] | None = None  # the last decoded frame, not yet synthesised
        pending = np.zeros((batch, 0), np.float32)  # harmonic samples ahead of the noise
        done_frames = 0
        for start in range(0, n_frames, block):
            stop = min(start + block, n_frames)
            f0_b = f0[:, start:stop]
            raw, gru_state = self.decode_with_state(
                *self.preprocess(f0_b, ld[:, start:stop]), gru_state, backend
            )
            ctl = self.controls(raw, f0_b)
            frames = (
                f0_b,
                ctl["harmonic_amplitudes"],
                ctl["harmonic_distribution"],
                ctl["noise_magnitudes"],
            )
            if held is not None:
                frames = tuple(
                    np.concatenate([h, x], axis=1) for h, x in zip(held, frames, strict=True)
                )
            final = stop == n_frames
            if final:
                now, after, held = frames, None, None
            else:  # keep the last frame for the next block, which gives its successor
                now = tuple(x[:, :-1] for x in frames)
                after = tuple(x[:, -1] for x in frames)
                held = tuple(x[:, -1:] for x in frames)
            f0_now, amps_now, dist_now, mags_now = now
            count = f0_now.shape[1]
            if count == 0:  # a first block of one frame: it waits for its successor
                continue
            harmonic, harmonic_state = isynth.harmonic_synth(
                amps_now,
                dist_now,
                f0_now,
                hop,
                c.sample_rate,
                c.amp_resample_method,
                self.phase_mode,
                backend,
                harmonic_state,
                None if after is None else after[0],
                None if after is None else after[1] * after[2],
            )
            if noise is None:
                white = stream.draw(batch, count * hop)
            else:
                white = noise[:, done_frames * hop : (done_frames + count) * hop]
            done_frames += count
            filtered, noise_state = isynth.filtered_noise(
                mags_now, white, hop, c.noise_window_size, noise_state, final=final
            )
            # The noise filter's delay holds back its first samples: dry audio exists only
            # where both signals do.
            pending = np.concatenate([pending, harmonic], axis=1)
            dry = pending[:, : filtered.shape[1]] + filtered
            pending = pending[:, filtered.shape[1] :]
            out = dry
            if self.reverb_ir is not None:
                out, reverb_state = isynth.reverb(
                    dry, self.reverb_ir, c.reverb_add_dry, reverb_state
                )
            if out.shape[1]:
                yield out[0] if squeeze else out

    def render(
        self,
        f0_hz: Any,
        loudness_db: Any,
        seed: int = 0,
        noise: Any | None = None,
        return_intermediates: bool = False,
        kernels: str | None = None,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Audio at ``config.sample_rate`` for frame features at ``config.frame_rate``.

        ``f0_hz`` (0 = unvoiced) and ``loudness_db`` are ``[T]`` (or ``[B, T]``) of equal
        length; the output has ``T * hop`` samples. The filtered noise uses ``noise`` if
        given (``[T * hop]``), else uniform noise drawn from ``seed`` (deterministic).
        With ``return_intermediates`` also returns every stage under the names in
        :data:`INTERMEDIATE_NAMES` (batch axis dropped for 1-D input).
        """
        f0, ld, squeeze = self._check_features(f0_hz, loudness_db)
        f0_scaled, ld_scaled = self.preprocess(f0, ld)
        raw = self.decode(f0_scaled, ld_scaled, kernels=kernels)
        controls = self.controls(raw, f0)
        signals = self.synthesize(controls, f0, seed=seed, noise=noise, kernels=kernels)
        audio = signals.get("reverb_signal", signals["dry_signal"])
        audio = audio[0] if squeeze else audio
        if not return_intermediates:
            return audio
        stages: dict[str, np.ndarray] = {"f0_scaled": f0_scaled, "ld_scaled": ld_scaled}
        stages.update({f"raw_{k}": v for k, v in raw.items()})
        stages.update(controls)
        stages.update(signals)
        return audio, {k: (v[0] if squeeze else v) for k, v in stages.items()}
