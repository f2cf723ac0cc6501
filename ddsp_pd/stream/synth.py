"""Synthesis of a live stream: controls frame by frame in, audio out with every state kept.

The same synthesizers as offline renders (:mod:`ddsp_pd.inference.synth`), run frame by
frame: the harmonic oscillators keep their phase; the filtered noise is drawn from one
seeded stream and overlap-added across calls; the reverb is a partitioned FFT convolution
(:class:`~ddsp_pd.stream.convolution.PartitionedConvolver`) with one partition per frame, so
a long impulse response costs one small transform per frame and its tail runs on across
any number of calls.

Each frame's audio interpolates towards the next frame's controls, so frame i is
synthesised when frame i + 1 arrives. Two noise filters (``noise_phase``):

- ``"linear"``: ddsp's linear-phase FIRs. Their output is ``delay`` samples late (half the
  FIR: 62 samples, 3.9 ms, for 65 bands), and the harmonic part is delayed by as much to stay
  aligned. The stream is then the offline render of the same controls, ``delay`` samples
  later (to float rounding), whatever the number of frames per call.
- ``"minimum"`` (what live streams use): the minimum-phase FIRs of the same magnitude
  responses (:func:`ddsp_pd.inference.synth.minimum_phase_spectra`), which need no delay.
  The harmonic part is then the offline render's, sample for sample, and the noise has the
  offline noise's colour and level with another phase: the same sound, ``delay`` sooner.
"""

from __future__ import annotations

import numpy as np

from ddsp_pd.inference import synth as isynth
from ddsp_pd.kinds.controls import SynthConfig, SynthControls
from ddsp_pd.stream.convolution import PartitionedConvolver

__all__ = ["NOISE_PHASES", "StreamSynth", "noise_filter_delay"]

NOISE_PHASES = isynth.NOISE_PHASES


def noise_filter_delay(bands: int, hop: int, window_size: int) -> int:
    """Samples by which :func:`ddsp_pd.inference.synth.filtered_noise` advances its output
    (the filter's linear-phase delay), measured through its piecewise interface."""
    out, state = isynth.filtered_noise(
        np.zeros((1, 1, bands), np.float32),
        np.zeros((1, hop), np.float32),
        hop,
        window_size,
        None,
        final=False,
    )
    return hop - out.shape[1] + state.to_drop


class StreamSynth:
    """Audio at the model's rate from consecutive frames of :class:`SynthControls`.

    ``ir`` is the reverb's impulse response (None: no reverb; its first sample is treated
    as 0, as offline); ``seed`` seeds the noise; ``noise_phase`` picks the noise filter (see
    the module notes). :meth:`push` returns ``hop`` samples per frame, one frame behind.
    """

    def __init__(
        self,
        synth: SynthConfig,
        n_noise_bands: int,
        ir: np.ndarray | None = None,
        seed: int = 0,
        phase_mode: str = "accurate",
        backend: str = "numpy",
        noise_phase: str = "linear",
    ) -> None:
        if noise_phase not in NOISE_PHASES:
            raise ValueError(f"noise phase must be one of {NOISE_PHASES}, got {noise_phase!r}")
        self.config = synth
        self.noise_phase = noise_phase
        self.hop = int(synth.hop)
        self.phase_mode = phase_mode
        self.backend = backend
        self.n_noise_bands = int(n_noise_bands)
        #: Samples by which the output trails the offline render (the noise filter's delay).
        self.delay = (
            noise_filter_delay(self.n_noise_bands, self.hop, synth.noise_window_size)
            if noise_phase == "linear"
            else 0
        )
        self._ir = None
        if ir is not None:
            self._ir = np.array(ir, np.float32).reshape(-1)
            self._ir[0] = 0.0
        self.seed = int(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start a new stream (silence, phase 0, the noise from its seed)."""
        if seed is not None:
            self.seed = int(seed)
        self._noise = isynth.noise_stream(self.seed)
        self._harmonic_state: isynth.HarmonicState | None = None
        # No samples dropped for the filter's delay: the stream is offline audio, later.
        self._noise_state = isynth.NoiseState(np.zeros((1, 0), np.float32), 0)
        self._pending = np.zeros((1, self.delay), np.float32)
        self._held: tuple[np.ndarray, ...] | None = None
        # The filter's ringing before the clip's first sample is not part of the render.
        self._blank = self.delay
        self._reverb = None if self._ir is None else PartitionedConvolver(self._ir, self.hop)
        self.frames_synthesised = 0

    def reseed(self, seed: int) -> None:
        """Draw the noise from ``seed`` from the next frame on (the stream goes on)."""
        self.seed = int(seed)
        self._noise = isynth.noise_stream(self.seed)

    def push(self, controls: SynthControls) -> np.ndarray:
        """Add frames; returns the audio (float32) of every frame now complete."""
        if controls.n_frames == 0:
            return np.zeros(0, np.float32)
        frames = (
            controls.f0_hz[np.newaxis],
            controls.amplitudes[np.newaxis],
            controls.harmonic_distribution[np.newaxis],
            controls.noise_magnitudes[np.newaxis],
        )
        if self._held is not None:
            frames = tuple(
                np.concatenate([h, x], axis=1) for h, x in zip(self._held, frames, strict=True)
            )
        now = tuple(x[:, :-1] for x in frames)
        after = tuple(x[:, -1] for x in frames)
        self._held = tuple(x[:, -1:] for x in frames)
        f0_now, amps_now, dist_now, mags_now = now
        count = f0_now.shape[1]
        if count == 0:
            return np.zeros(0, np.float32)
        c = self.config
        harmonic, self._harmonic_state = isynth.harmonic_synth(
            amps_now,
            dist_now,
            f0_now,
            self.hop,
            c.sample_rate,
            c.amp_resample_method,
            self.phase_mode,
            self.backend,
            self._harmonic_state,
            after[0],
            after[1] * after[2],
        )
        white = self._noise.draw(1, count * self.hop)
        filtered, self._noise_state = isynth.filtered_noise(
            mags_now,
            white,
            self.hop,
            c.noise_window_size,
            self._noise_state,
            final=False,
            phase=self.noise_phase,
        )
        pending = np.concatenate([self._pending, harmonic], axis=1)
        dry = pending[:, : filtered.shape[1]] + filtered
        self._pending = pending[:, filtered.shape[1] :]
        out = dry[0]
        if self._blank:
            cut = min(self._blank, out.shape[0])
            out[:cut] = 0.0
            self._blank -= cut
        if self._reverb is not None:
            wet = self._reverb.process(out)
            out = wet + out if c.reverb.add_dry else wet
        self.frames_synthesised += count
        return out.astype(np.float32, copy=False)
