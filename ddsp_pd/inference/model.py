"""One ddsp checkpoint for rendering, without TensorFlow: preprocessor, decoder and synthesis.

:class:`InferenceModel` holds a checkpoint's weights as numpy arrays and renders frame
features to audio; the work is done by the pure functions of :mod:`.decoder`,
:mod:`.synth` and :mod:`.synthesis` (the synthesis path every model kind shares). It has
the inference API of :class:`ddsp_pd.model.DdspModel` (the TensorFlow model kept for
training), with numpy arrays in and out, so the same parity tests run against both.

Two kinds of checkpoint (:attr:`InferenceModel.kind`):

- ``"solo"``: the ``solo_instrument`` family (ddsp 0.x to 3.7): loudness in,
  ``ld_scaled``; a trainable reverb IR; ``T * hop`` samples out.
- ``"vst"``: ``models/vst/vst.gin`` (DDSP-VST checkpoints): power in (``pw_scaled``,
  :mod:`ddsp_pd.power`); a ``FilteredNoiseReverb`` whose IR is made from noise drawn from
  the render's seed (or given, for parity tests); then ``Crop``, so ``T`` frames of
  centred power features render ``(T - 1) * hop`` samples.

Both fit :class:`ddsp_pd.kinds.controls.ControlModel` (:meth:`InferenceModel.synth_controls`).
Arguments named ``loudness_db`` carry the model's level: power for a ``"vst"`` model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError, InputError
from ddsp_pd.inference import kernels as kernels_module
from ddsp_pd.inference import synth as isynth
from ddsp_pd.inference import synthesis
from ddsp_pd.inference.decoder import PRECISIONS, DecoderWeights, StackCache, decode
from ddsp_pd.inference.synthesis import ModelControls
from ddsp_pd.kinds.controls import ReverbSpec, SynthConfig, SynthControls

__all__ = [
    "INTERMEDIATE_NAMES",
    "STREAM_BLOCK_FRAMES",
    "VST_INTERMEDIATE_NAMES",
    "InferenceModel",
    "ModelControls",
    "synth_config",
]

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
#: The stages of a ``"vst"`` model's :meth:`InferenceModel.render` (``pw_scaled`` for
#: ``ld_scaled``; the reverb's IR, its noise, and the cropped output added).
VST_INTERMEDIATE_NAMES = (
    *(("pw_scaled" if n == "ld_scaled" else n) for n in INTERMEDIATE_NAMES),
    "reverb_ir",
    "crop_signal",
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


def synth_config(config: ModelConfig, variables: Mapping[str, np.ndarray]) -> SynthConfig:
    """How a checkpoint's controls become audio: its synthesizers' settings, its reverb
    (the trainable IR, or FilteredNoiseReverb's scaled magnitudes) and its crop."""
    reverb = ReverbSpec()
    if config.reverb and config.reverb_type == "ir":
        name = config.reverb_ir_name or "processor_group/reverb/ir"
        if name not in variables:
            raise CheckpointError(f"checkpoint lacks the reverb impulse response {name}")
        ir = np.asarray(variables[name], np.float32).reshape(-1)
        if ir.shape[0] != config.reverb_length:
            raise CheckpointError(
                f"reverb ir has {ir.shape[0]} samples, the config says {config.reverb_length}"
            )
        reverb = ReverbSpec("ir", ir=ir.copy(), add_dry=config.reverb_add_dry, source="learned")
    elif config.reverb and config.reverb_type == "filtered_noise":
        name = config.reverb_magnitudes_name or "processor_group/reverb/magnitudes"
        if name not in variables:
            raise CheckpointError(f"checkpoint lacks the reverb magnitudes {name}")
        grid = np.asarray(variables[name], np.float32)
        expected = (config.reverb_n_frames, config.reverb_n_filter_banks)
        if grid.shape != expected:
            raise CheckpointError(
                f"reverb magnitudes have shape {list(grid.shape)}, the config says {list(expected)}"
            )
        scaled = isynth.exp_sigmoid(
            grid + np.float32(config.reverb_initial_bias),
            config.exp_sigmoid_exponent,
            config.exp_sigmoid_max_value,
            config.exp_sigmoid_threshold,
        )
        reverb = ReverbSpec(
            "filtered_noise",
            magnitudes=scaled,
            length=config.reverb_length,
            window_size=config.reverb_window_size,
            add_dry=config.reverb_add_dry,
            source="learned magnitudes",
        )
    return SynthConfig(
        sample_rate=config.sample_rate,
        hop=config.hop,
        amp_resample_method=config.amp_resample_method,
        noise_window_size=config.noise_window_size,
        reverb=reverb,
        crop_size=config.crop_size,
        crop_location=config.crop_location,
    )


class InferenceModel:
    """A ddsp checkpoint (decoder + harmonic + filtered noise + reverb [+ crop]) in numpy.

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
        precision: str = "exact",
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
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.config = config
        #: ``"exact"`` (float32) or ``"fast"`` (see :data:`.decoder.PRECISIONS`).
        self.precision = precision
        self.phase_mode = phase_mode
        self.kernels = kernels_module.check_backend(kernels)
        #: Unique per model object in this process: caches of its outputs key on it.
        self.serial = next(_serials)
        self.weights = DecoderWeights.from_variables(config, variables)
        #: Stack products of recent whole-clip decodes (see :class:`.decoder.StackCache`).
        self.stack_cache = StackCache()
        #: How the controls become audio (the synthesis every kind shares).
        self.synth = synth_config(config, variables)
        #: The trainable reverb's impulse response (``"ir"`` reverbs), else None.
        self.reverb_ir: np.ndarray | None = self.synth.reverb.ir

    # ------------------------------------------------------------ the kind
    @property
    def kind(self) -> str:
        """``"vst"`` for a ``vst.gin`` checkpoint, ``"solo"`` otherwise."""
        return "vst" if self.config.era == "vst" else "solo"

    @property
    def era(self) -> str:
        """The ddsp era of the checkpoint (``"0.x"``, ``"1.x"``, ``"2.x"``, ``"vst"``)."""
        return self.config.era

    @property
    def level(self) -> str:
        """The level feature the model takes: ``"loudness"`` or ``"power"``."""
        return self.config.level

    @property
    def power_frame_size(self) -> int | None:
        """Samples per power frame (power models), else None."""
        return self.config.power_frame_size

    @property
    def sample_rate(self) -> int:
        """Audio rate in Hz."""
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.config.frame_rate

    @property
    def hop(self) -> int:
        """Samples per frame."""
        return self.config.hop

    def backend(self, n_frames: int, kernels: str | None = None) -> str:
        """The kernel backend (``"numpy"`` or ``"compiled"``) a call on ``n_frames`` frames
        uses: ``kernels`` if given, else the model's; ``"auto"`` is decided by length."""
        name = kernels_module.check_backend(kernels or self.kernels)
        return kernels_module.auto_backend(n_frames) if name == "auto" else name

    @property
    def parameter_count(self) -> int:
        """Number of trainable scalars (decoder and the reverb's IR or magnitudes)."""
        reverb = self.synth.reverb
        extra = 0
        if reverb.ir is not None:
            extra = int(reverb.ir.size)
        elif reverb.magnitudes is not None:
            extra = int(reverb.magnitudes.size)
        return self.weights.parameter_count + extra

    # ------------------------------------------------------------ stages
    def preprocess(self, f0_hz: Any, loudness_db: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(f0_scaled, ld_scaled)``: MIDI / 127 and ``ld / range + 1`` (range 120 dB for
        0.x and 1.x models, 80 dB from 2.0). For a ``"vst"`` model ``loudness_db`` is
        power and the second is ``pw_scaled = pw / 80 + 1``."""
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
        *,
        with_state: bool = False,
    ) -> Any:
        """Raw decoder outputs ``{name: [B, T, size]}``; inputs ``[T]`` or ``[B, T]``
        (``ld_scaled`` is ``pw_scaled`` for a ``"vst"`` model). ``with_state``: also the
        GRU state after the last frame (``(outputs, state)``). Every decoding of this
        model goes through here; a decode from the start of a clip (``state`` None) keeps
        its stack products in :attr:`stack_cache` for the next one."""
        f0s, _ = _as_batch(f0_scaled, "f0_scaled")
        lds, _ = _as_batch(ld_scaled, self.config.level_scaled_key)
        scaled = {"f0_scaled": f0s, self.config.level_scaled_key: lds}
        inputs = {key: scaled[key] for key in self.config.input_keys}
        out = decode(
            self.weights,
            inputs,
            state,
            self.backend(f0s.shape[1], kernels),
            precision=self.precision,
            cache=self.stack_cache if state is None else None,
        )
        return out if with_state else out[0]

    def decode_with_state(
        self,
        f0_scaled: Any,
        ld_scaled: Any,
        state: np.ndarray | None = None,
        kernels: str | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`decode` from GRU state ``state`` (zeros: None), and the state after it."""
        return self.decode(f0_scaled, ld_scaled, state, kernels, with_state=True)

    def controls(self, raw: Mapping[str, np.ndarray], f0_hz: Any) -> dict[str, np.ndarray]:
        """Scaled synthesiser controls from raw decoder outputs."""
        c = self.config
        scale = (c.exp_sigmoid_exponent, c.exp_sigmoid_max_value, c.exp_sigmoid_threshold)
        few = kernels_module.scaled_controls(raw, f0_hz, c.sample_rate / 2.0,
                                            c.normalize_below_nyquist, c.noise_initial_bias,
                                            *scale)  # fmt: skip
        if few is not None:
            amps, dist, mags = few
            return {"harmonic_amplitudes": amps, "harmonic_distribution": dist,
                    "noise_magnitudes": mags}  # fmt: skip
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
        f0_hz = np.asarray(f0_hz, np.float32)
        out, _ = synthesis.harmonic(
            controls["harmonic_amplitudes"],
            controls["harmonic_distribution"],
            f0_hz,
            self.synth,
            self.phase_mode,
            self.backend(f0_hz.shape[-1] if f0_hz.ndim < 3 else f0_hz.shape[1], kernels),
        )
        return out

    def synthesize(
        self,
        controls: Mapping[str, np.ndarray],
        f0_hz: Any,
        seed: int = 0,
        noise: Any | None = None,
        harmonic: np.ndarray | None = None,
        kernels: str | None = None,
        reverb_noise: Any | None = None,
    ) -> dict[str, np.ndarray]:
        """Signals ``[B, N]`` from scaled controls: harmonic, white and filtered noise,
        dry (their sum) and, when the model has them, the reverb (``reverb_ir`` too) and
        the crop; ``audio`` is the output (see :func:`.synthesis.synthesize`).
        ``harmonic`` reuses a harmonic signal already made from these controls (then only
        ``noise_magnitudes`` of ``controls`` is read); ``reverb_noise`` replaces the
        seed's noise of a filtered-noise reverb's IR."""
        f0 = np.asarray(f0_hz, np.float32)
        if f0.ndim == 1:
            f0 = f0[np.newaxis]
        if f0.ndim == 3:
            f0 = f0[..., 0]
        if harmonic is None:
            harmonic = self.harmonic(controls, f0, kernels)
        return synthesis.synthesize(
            harmonic, controls["noise_magnitudes"], self.synth, seed, noise, reverb_noise
        )

    def prepare_stream(self) -> None:
        """Before a live stream: compute now what its steps would otherwise compute on
        first use. In ``precision="fast"`` that is the decoder's input tables
        (:mod:`ddsp_pd.inference.stack_table`) over every value a feature takes: f0 from
        0 (unvoiced) to MIDI 127, the level from its floor to 12 dB above full scale."""
        if self.precision != "fast":
            return
        config = self.config
        top = 12.0 / config.ld_range_db + 1.0
        floor = config.min_db / config.ld_range_db + 1.0
        for key, table in zip(config.input_keys, self.weights.stack_tables, strict=True):
            if key.startswith("f0"):
                table.fill_range(0.0, 1.0)
            else:
                table.fill_range(floor, top)

    # ------------------------------------------------------------ the model-kind seam
    def initial_state(self) -> np.ndarray:
        """The GRU state at the start of a clip: zeros ``[rnn_channels]``."""
        return np.zeros(self.config.rnn_channels, np.float32)

    def synth_controls(
        self,
        f0_hz: Any,
        level_db: Any,
        state: Any = None,
        *,
        kernels: str | None = None,
    ) -> tuple[SynthControls, np.ndarray]:
        """:class:`SynthControls` of one clip's frames (``[T]`` each: f0 and the model's
        level, loudness or power) from GRU ``state`` (None: zeros), and the state after
        the last frame (:class:`ddsp_pd.kinds.controls.ControlModel`)."""
        f0, ld, _ = self._check_features(f0_hz, level_db)
        if f0.shape[0] != 1:
            raise InputError("synth_controls takes one clip ([frames] arrays)")
        if state is not None:
            state = np.asarray(state, np.float32).reshape(1, self.config.rnn_channels)
        raw, h = self.decode(*self.preprocess(f0, ld), state, kernels, with_state=True)
        c = self.controls(raw, f0)
        controls = SynthControls.from_model_outputs(
            f0[0], c["harmonic_amplitudes"], c["harmonic_distribution"], c["noise_magnitudes"]
        )
        return controls, h[0]

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
        one = None
        if squeeze:
            one = SynthControls.from_model_outputs(
                f0[0],
                controls["harmonic_amplitudes"],
                controls["harmonic_distribution"],
                controls["noise_magnitudes"],
            )
        return ModelControls(f0, controls["noise_magnitudes"], harmonic, squeeze, one)

    def render_controls(
        self, prepared: ModelControls, seed: int = 0, noise: Any | None = None
    ) -> np.ndarray:
        """Audio from :meth:`model_controls` and a noise seed (``[N]`` or ``[B, N]`` as the
        features were given)."""
        return synthesis.render_prepared(prepared, self.synth, seed, noise)

    def render_blocks(
        self,
        f0_hz: Any,
        loudness_db: Any,
        seed: int = 0,
        noise: Any | None = None,
        block_frames: int = STREAM_BLOCK_FRAMES,
        kernels: str | None = None,
        on_controls: Any | None = None,
    ) -> Iterator[np.ndarray]:
        """:meth:`render` of one clip (``[T]`` features) in consecutive pieces of audio,
        with memory bounded by the block (:func:`.synthesis.render_blocks`).

        Decodes ``block_frames`` frames at a time, carrying the GRU state, the oscillator
        phase, the noise stream and the noise filter's and the reverb's tails from block to
        block, so that the pieces joined equal :meth:`render` of the whole clip (to float
        rounding). ``on_controls`` receives each block's :class:`SynthControls`. Yields
        ``[N_i]`` float32 pieces.
        """
        f0, ld, _ = self._check_features(f0_hz, loudness_db)
        if f0.shape[0] != 1:
            raise InputError("render_blocks renders one clip ([frames] arrays)")
        backend = self.backend(f0.shape[1], kernels)
        # Zeros, not None, for the first block: a long render's blocks are not kept in
        # the stack cache (memory stays that of one block).
        start = np.zeros(self.config.rnn_channels, np.float32)

        def controls_fn(f: np.ndarray, level: np.ndarray, state: Any) -> tuple[Any, Any]:
            return self.synth_controls(f, level, start if state is None else state, kernels=backend)

        return synthesis.render_blocks(
            controls_fn,
            f0[0],
            ld[0],
            self.synth,
            seed,
            noise=noise,
            block_frames=block_frames,
            phase_mode=self.phase_mode,
            backend=backend,
            on_controls=on_controls,
        )

    def render(
        self,
        f0_hz: Any,
        loudness_db: Any,
        seed: int = 0,
        noise: Any | None = None,
        return_intermediates: bool = False,
        kernels: str | None = None,
        reverb_noise: Any | None = None,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Audio at ``config.sample_rate`` for frame features at ``config.frame_rate``.

        ``f0_hz`` (0 = unvoiced) and ``loudness_db`` (power for a ``"vst"`` model) are
        ``[T]`` (or ``[B, T]``) of equal length; the output has ``T * hop`` samples less
        the model's crop (``vst.gin``: ``(T - 1) * hop``). The filtered noise uses
        ``noise`` if given (``[T * hop]``), else uniform noise drawn from ``seed``
        (deterministic); a filtered-noise reverb's IR likewise uses ``reverb_noise``
        (``[reverb_length]``) or the seed. With ``return_intermediates`` also returns every
        stage under the names in :data:`INTERMEDIATE_NAMES` (``"vst"``:
        :data:`VST_INTERMEDIATE_NAMES`; batch axis dropped for 1-D input).
        """
        f0, ld, squeeze = self._check_features(f0_hz, loudness_db)
        f0_scaled, ld_scaled = self.preprocess(f0, ld)
        raw = self.decode(f0_scaled, ld_scaled, kernels=kernels)
        controls = self.controls(raw, f0)
        signals = self.synthesize(
            controls, f0, seed=seed, noise=noise, kernels=kernels, reverb_noise=reverb_noise
        )
        audio = signals.pop("audio")
        audio = audio[0] if squeeze else audio
        if not return_intermediates:
            return audio
        stages: dict[str, np.ndarray] = {
            "f0_scaled": f0_scaled,
            self.config.level_scaled_key: ld_scaled,
        }
        stages.update({f"raw_{k}": v for k, v in raw.items()})
        stages.update(controls)
        stages.update(signals)
        unbatched = ("reverb_ir",)  # one IR for the batch
        return audio, {
            k: (v[0] if squeeze and k not in unbatched else v) for k, v in stages.items()
        }
