"""The one synthesis path: synthesizer controls to audio, the same for every model kind.

Every model kind (a ddsp solo or DDSP-VST checkpoint, a DDSP-VST ``.tflite``) turns frame
features into :class:`~ddsp_pd.kinds.controls.SynthControls` and describes its synthesis
with a :class:`~ddsp_pd.kinds.controls.SynthConfig`; this module renders them:

1. the harmonic oscillators (:func:`harmonic`), which need no noise and so are what a
   render keeps when only the seed changes (:class:`ModelControls`, :func:`prepare`);
2. filtered noise from the seed's white noise, the dry sum;
3. the reverb: a fixed impulse response, or ``FilteredNoiseReverb``'s IR made from seeded
   noise (:func:`impulse_response`), or none;
4. ddsp's ``Crop`` (DDSP-VST checkpoints drop the last hop; so does a ``.tflite``'s render,
   so that power features of L samples render to L samples).

:func:`render_blocks` renders a long clip block by block with bounded memory, carrying
every state (the model's recurrent state, the oscillators' phase, the noise stream and the
noise filter's and reverb's tails); the pieces joined equal the whole render to float
rounding. Arrays carry a batch axis here (``[B, T, C]`` controls, ``[B, N]`` audio);
:class:`SynthControls` are one clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddsp_pd.errors import InputError
from ddsp_pd.inference import synth as isynth
from ddsp_pd.kinds.controls import ReverbSpec, SynthConfig, SynthControls

__all__ = [
    "ControlsFn",
    "ModelControls",
    "harmonic",
    "impulse_response",
    "prepare",
    "render",
    "render_blocks",
    "render_prepared",
    "synthesize",
]

#: ``controls_fn(f0_hz [t], level_db [t], state) -> (SynthControls, state)``: a kind's
#: controls for a block of frames (see ``ControlModel.synth_controls``).
ControlsFn = Callable[[np.ndarray, np.ndarray, Any], tuple[SynthControls, Any]]


@dataclass(frozen=True)
class ModelControls:
    """What a render keeps of the model's work on a clip, so that a change of noise seed
    needs only the noise filter and the reverb: the noise filter's magnitudes
    ``[B, T, bands]`` and the harmonic signal ``[B, N]`` (it needs no noise), with the f0
    ``[B, T]`` and, for one clip, the controls themselves (for ``--controls-out``)."""

    f0_hz: np.ndarray
    noise_magnitudes: np.ndarray
    harmonic: np.ndarray
    squeeze: bool = False
    controls: SynthControls | None = None

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        held = self.f0_hz.nbytes + self.noise_magnitudes.nbytes + self.harmonic.nbytes
        if self.controls is not None:
            held += self.controls.amplitudes.nbytes + self.controls.harmonic_distribution.nbytes
        return int(held)


def impulse_response(
    reverb: ReverbSpec, seed: int = 0, noise: np.ndarray | None = None
) -> np.ndarray | None:
    """The reverb's impulse response ``[L]`` (before its first sample is zeroed), or None.

    A ``"filtered_noise"`` reverb filters ``noise`` (``[L]``) if given, else noise drawn
    from ``seed`` (:func:`ddsp_pd.inference.synth.reverb_noise`).
    """
    if reverb.kind == "none":
        return None
    if reverb.kind == "ir":
        assert reverb.ir is not None
        return reverb.ir
    if noise is None:
        noise = isynth.reverb_noise(reverb.length, seed)
    noise = np.asarray(noise, np.float32).reshape(-1)
    if noise.shape[0] != reverb.length:
        raise InputError(f"reverb noise must have {reverb.length} samples, got {noise.shape[0]}")
    assert reverb.magnitudes is not None
    return isynth.noise_reverb_ir(reverb.magnitudes, noise, reverb.window_size)


def harmonic(
    amplitudes: np.ndarray,
    harmonic_distribution: np.ndarray,
    f0_hz: np.ndarray,
    synth: SynthConfig,
    phase_mode: str = "accurate",
    backend: str = "numpy",
    state: isynth.HarmonicState | None = None,
    f0_after: np.ndarray | None = None,
    amplitudes_after: np.ndarray | None = None,
) -> tuple[np.ndarray, isynth.HarmonicState]:
    """The harmonic signal ``[B, T * hop]`` of scaled controls ``[B, T, 1]``,
    ``[B, T, K]``, ``[B, T]`` (see :func:`ddsp_pd.inference.synth.harmonic_synth`)."""
    return isynth.harmonic_synth(
        amplitudes,
        harmonic_distribution,
        f0_hz,
        synth.hop,
        synth.sample_rate,
        synth.amp_resample_method,
        phase_mode,
        backend,
        state,
        f0_after,
        amplitudes_after,
    )


def _white(batch: int, n_frames: int, hop: int, seed: int, noise: Any | None) -> np.ndarray:
    n_samples = n_frames * hop
    if noise is None:
        return isynth.white_noise(batch, n_samples, seed)
    noise = np.asarray(noise, np.float32)
    if noise.ndim == 1:
        noise = noise[np.newaxis]
    if noise.shape != (batch, n_samples):
        raise InputError(
            f"noise must have {n_samples} samples per item ({n_frames} frames x hop "
            f"{hop}), got shape {tuple(noise.shape)}"
        )
    return noise


def synthesize(
    harmonic_signal: np.ndarray,
    noise_magnitudes: np.ndarray,
    synth: SynthConfig,
    seed: int = 0,
    noise: Any | None = None,
    reverb_noise: Any | None = None,
) -> dict[str, np.ndarray]:
    """Every signal after the oscillators, ``[B, N]``: ``white_noise``,
    ``filtered_noise_signal``, ``dry_signal`` (with ``harmonic_signal``), and when the
    kind has a reverb ``reverb_ir`` ``[L]`` and ``reverb_signal``, when it crops
    ``crop_signal``; ``audio`` is the output (the last of these).

    The white noise is ``noise`` (``[N]`` or ``[B, N]``) if given, else drawn from
    ``seed``; a filtered-noise reverb's IR noise likewise (``reverb_noise`` ``[L]``).
    """
    harmonic_signal = np.asarray(harmonic_signal, np.float32)
    mags = np.asarray(noise_magnitudes, np.float32)
    batch, n_frames = mags.shape[:2]
    white = _white(batch, n_frames, synth.hop, seed, noise)
    filtered, _ = isynth.filtered_noise(mags, white, synth.hop, synth.noise_window_size)
    dry = harmonic_signal + filtered
    out = {
        "harmonic_signal": harmonic_signal,
        "white_noise": white,
        "filtered_noise_signal": filtered,
        "dry_signal": dry,
    }
    wet = dry
    ir = impulse_response(synth.reverb, seed, reverb_noise)
    if ir is not None:
        out["reverb_ir"] = ir
        wet, _ = isynth.reverb(dry, ir, synth.reverb.add_dry)
        out["reverb_signal"] = wet
    if synth.crop_size:
        start, stop = synth.crop_span(n_frames)
        wet = wet[:, start:stop]
        out["crop_signal"] = wet
    out["audio"] = wet
    return out


def prepare(
    controls: SynthControls,
    synth: SynthConfig,
    phase_mode: str = "accurate",
    backend: str = "numpy",
) -> ModelControls:
    """What :func:`render_prepared` needs of one clip's controls (the harmonic signal is
    made here, once for every seed)."""
    f0 = controls.f0_hz[np.newaxis]
    signal, _ = harmonic(
        controls.amplitudes[np.newaxis],
        controls.harmonic_distribution[np.newaxis],
        f0,
        synth,
        phase_mode,
        backend,
    )
    return ModelControls(f0, controls.noise_magnitudes[np.newaxis], signal, True, controls)


def render_prepared(
    prepared: ModelControls,
    synth: SynthConfig,
    seed: int = 0,
    noise: Any | None = None,
    reverb_noise: Any | None = None,
) -> np.ndarray:
    """Audio from :func:`prepare` (or a model's ``model_controls``) and a noise seed:
    ``[N]`` for one clip, else ``[B, N]``."""
    signals = synthesize(
        prepared.harmonic, prepared.noise_magnitudes, synth, seed, noise, reverb_noise
    )
    audio = signals["audio"]
    return audio[0] if prepared.squeeze else audio


def render(
    controls: SynthControls,
    synth: SynthConfig,
    seed: int = 0,
    *,
    noise: Any | None = None,
    reverb_noise: Any | None = None,
    phase_mode: str = "accurate",
    backend: str = "numpy",
) -> np.ndarray:
    """Audio ``[synth.output_samples(T)]`` at ``synth.sample_rate`` of one clip's controls."""
    prepared = prepare(controls, synth, phase_mode, backend)
    return render_prepared(prepared, synth, seed, noise, reverb_noise)


def _frames(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, np.float32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise InputError(f"{name} must have shape [frames] (one clip), got {list(arr.shape)}")
    return arr


class _Cropper:
    """Passes the samples of ``[start, stop)`` of a stream given in consecutive pieces."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop, self.seen = start, stop, 0

    def __call__(self, piece: np.ndarray) -> np.ndarray:
        begin = self.seen
        self.seen += piece.shape[-1]
        lo = max(self.start - begin, 0)
        hi = min(self.stop - begin, piece.shape[-1])
        return piece[..., lo:hi] if hi > lo else piece[..., :0]


def render_blocks(
    controls_fn: ControlsFn,
    f0_hz: Any,
    level_db: Any,
    synth: SynthConfig,
    seed: int = 0,
    *,
    noise: Any | None = None,
    reverb_noise: Any | None = None,
    block_frames: int = 4000,
    phase_mode: str = "accurate",
    backend: str = "numpy",
    on_controls: Callable[[SynthControls], None] | None = None,
) -> Iterator[np.ndarray]:
    """Render one clip block by block: the pieces joined equal :func:`render` of the
    controls of the whole clip (to float rounding), with memory bounded by the block.

    ``controls_fn`` gives each block's controls from the state the previous block left.
    Each frame's synthesis needs the next frame's controls, so a block's last frame is
    synthesised with the next block; pieces therefore do not line up with blocks.
    ``on_controls`` is called with each block's controls as they are made. Yields
    ``[N_i]`` float32 pieces (some may be empty).
    """
    f0 = _frames("f0_hz", f0_hz)
    level = _frames("level_db", level_db)
    if f0.shape != level.shape:
        raise InputError(f"f0_hz and level differ in length: {f0.shape[0]} vs {level.shape[0]}")
    n_frames = f0.shape[0]
    if n_frames < 1:
        raise InputError("no frames to render")
    hop = synth.hop
    block = max(1, int(block_frames))
    if noise is not None:
        noise = _white(1, n_frames, hop, seed, noise)
    stream = isynth.noise_stream(seed) if noise is None else None
    ir = impulse_response(synth.reverb, seed, reverb_noise)
    crop = _Cropper(*synth.crop_span(n_frames))
    model_state = harmonic_state = noise_state = reverb_state = None
    held: tuple[np.ndarray, ...] | None = None  # the last frame made, not yet synthesised
    pending = np.zeros((1, 0), np.float32)  # harmonic samples ahead of the noise
    done_frames = 0
    for start in range(0, n_frames, block):
        stop = min(start + block, n_frames)
        ctl, model_state = controls_fn(f0[start:stop], level[start:stop], model_state)
        if on_controls is not None:
            on_controls(ctl)
        frames = (
            ctl.f0_hz[np.newaxis],
            ctl.amplitudes[np.newaxis],
            ctl.harmonic_distribution[np.newaxis],
            ctl.noise_magnitudes[np.newaxis],
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
        signal, harmonic_state = harmonic(
            amps_now,
            dist_now,
            f0_now,
            synth,
            phase_mode,
            backend,
            harmonic_state,
            None if after is None else after[0],
            None if after is None else after[1] * after[2],
        )
        if stream is not None:
            white = stream.draw(1, count * hop)
        else:
            white = noise[:, done_frames * hop : (done_frames + count) * hop]
        done_frames += count
        filtered, noise_state = isynth.filtered_noise(
            mags_now, white, hop, synth.noise_window_size, noise_state, final=final
        )
        # The noise filter's delay holds back its first samples: dry audio exists only
        # where both signals do.
        pending = np.concatenate([pending, signal], axis=1)
        dry = pending[:, : filtered.shape[1]] + filtered
        pending = pending[:, filtered.shape[1] :]
        out = dry
        if ir is not None:
            out, reverb_state = isynth.reverb(dry, ir, synth.reverb.add_dry, reverb_state)
        out = crop(out)
        if out.shape[1]:
            yield out[0]
