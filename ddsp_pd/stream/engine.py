"""The live engine: ``process(block) -> block`` at any host rate and block size.

One :class:`StreamEngine` per stream. Audio in at the host's rate is resampled to the
model's (:class:`~ddsp_pd.stream.resample.StreamResampler`), analysed frame by frame
(:class:`~ddsp_pd.stream.analysis.StreamAnalyzer`), or replaced by notes in ``"midi"`` mode
(:class:`~ddsp_pd.stream.midi.NoteSynth`); the controls are applied per frame
(:class:`~ddsp_pd.stream.controls.LiveControls`); the model gives synthesizer controls with
its recurrent state carried (the model-kind seam, :class:`~ddsp_pd.stream.models.LiveModel`);
:class:`~ddsp_pd.stream.synth.StreamSynth` makes the audio; it is resampled to the host's
rate and returned through a FIFO primed with :attr:`StreamEngine.prime` samples of silence,
so that every call returns exactly as many samples as it was given.

The engine is pure: no threads, no audio I/O, no clock. Its output depends only on the
input samples and on when (at which frame) commands arrived, not on the block sizes; the
same seed gives the same output. Commands (:meth:`set_control`, :meth:`note_on`, ...) may
come from any thread: they are queued and take effect at the start of the next
:meth:`process` call, i.e. at the next frame.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ddsp_pd.controls import ControlSettings
from ddsp_pd.errors import ControlError
from ddsp_pd.kinds.controls import SynthControls
from ddsp_pd.stream.analysis import FrameFeatures, StreamAnalyzer
from ddsp_pd.stream.controls import ADJUST_MODES, LiveAdjust, LiveControls
from ddsp_pd.stream.midi import NoteSynth, note_level_db
from ddsp_pd.stream.models import LiveModel
from ddsp_pd.stream.pitch import StreamingYin
from ddsp_pd.stream.resample import StreamResampler
from ddsp_pd.stream.synth import NOISE_PHASES, StreamSynth

__all__ = [
    "AUTO_STEP_MS",
    "LARGE_MODEL_PARAMETERS",
    "LARGE_STEP_MS",
    "MODES",
    "EngineSettings",
    "EngineStats",
    "FramePipeline",
    "StreamEngine",
    "auto_frames_per_step",
]

MODES = ("audio", "midi")
#: Milliseconds of frames per model step when ``frames_per_step`` is 0 (auto).
AUTO_STEP_MS = 12.0
#: The auto step of large models (more parameters than :data:`LARGE_MODEL_PARAMETERS`):
#: shorter, because their answer to an attack builds up later, so 12 ms steps put the
#: solo-size model's at 50.5 ms at block 256; with one compiled call per step its 2-frame
#: steps take 0.21 of a core at 48 kHz, exact (0.15 fast), within issue 12's 0.3.
LARGE_STEP_MS, LARGE_MODEL_PARAMETERS = 8.0, 2_000_000


def auto_frames_per_step(model: LiveModel) -> int:
    """Frames per model step when the settings say 0 (auto): :data:`AUTO_STEP_MS` worth,
    or for a large model :data:`LARGE_STEP_MS` worth; at least 1."""
    inner = model.model
    count = getattr(inner, "parameter_count", 0)
    size = count() if callable(count) else count
    step_ms = LARGE_STEP_MS if int(size or 0) > LARGE_MODEL_PARAMETERS else AUTO_STEP_MS
    return max(1, round(step_ms * model.frame_rate / 1000.0))


MIN_BLOCK, MAX_BLOCK = 1, 1 << 16


@dataclass(frozen=True)
class EngineSettings:
    """How a stream is set up (what cannot change while it runs, and the start values of
    what can).

    ``controls``: the render controls; ``adjust_mode``/``hold_seconds``/``window_seconds``:
    live auto-adjust (:mod:`ddsp_pd.stream.controls`); ``ramp_seconds``: how long changes
    take; ``mode``: ``"audio"`` (timbre transfer of the input) or ``"midi"`` (notes drive
    the model; the input is ignored); ``seed``: the noise; ``fmin``/``fmax``: the f0
    tracker's range; ``frames_per_step``: frames the model takes at a time (more: less
    CPU per frame, as every step costs a fixed overhead and a large model reads all its
    weights once per step; ``frames_per_step - 1`` frames more latency); 0 (the default)
    means :func:`auto_frames_per_step` (3 frames at 250 frames/s, 2 for a large model, 1
    at 50); ``noise_phase``: the noise filter, ``"minimum"`` (no delay,
    the default) or ``"linear"`` (ddsp's, 3.9 ms later at 65 bands; the stream is then the
    offline render, later): see :mod:`ddsp_pd.stream.synth`.
    """

    controls: ControlSettings = field(default_factory=ControlSettings)
    mode: str = "audio"
    seed: int = 0
    adjust_mode: str = "hold"
    hold_seconds: float = 4.0
    window_seconds: float = 10.0
    ramp_seconds: float = 0.05
    fmin: float = 50.0
    fmax: float = 2000.0
    portamento: float = 0.0
    frames_per_step: int = 0
    noise_phase: str = "minimum"

    def validate(self) -> EngineSettings:
        """Check every value; returns ``self``. Raises ControlError."""
        self.controls.validate()
        if self.mode not in MODES:
            raise ControlError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.adjust_mode not in ADJUST_MODES:
            raise ControlError(f"adjust mode must be one of {ADJUST_MODES}")
        if not 0 <= int(self.seed) <= 2**31 - 1:
            raise ControlError(f"seed must be in [0, 2147483647], got {self.seed}")
        if not (0.0 < self.ramp_seconds <= 1.0):
            raise ControlError(f"ramp must be in (0, 1] seconds, got {self.ramp_seconds}")
        if not (0.5 <= self.hold_seconds <= 600 and 1.0 <= self.window_seconds <= 600):
            raise ControlError("hold and window seconds must be in [0.5, 600] and [1, 600]")
        if not 0 <= int(self.frames_per_step) <= 64:
            raise ControlError(f"frames per step must be in [1, 64], got {self.frames_per_step}")
        if self.noise_phase not in NOISE_PHASES:
            raise ControlError(f"noise phase must be one of {NOISE_PHASES}: {self.noise_phase!r}")
        if not (20.0 <= self.fmin < self.fmax <= 4000.0):
            raise ControlError(f"f0 range {self.fmin}-{self.fmax} Hz is outside 20-4000 Hz")
        return self


@dataclass
class EngineStats:
    """Counters of a stream (read them from any thread; the engine updates them)."""

    blocks: int = 0
    samples_in: int = 0
    frames: int = 0
    busy_seconds: float = 0.0  # time spent in process()
    underruns: int = 0  # output samples the FIFO lacked (stays 0: the prime covers it)
    dropouts: int = 0  # blocks the runner answered with silence (set by the runner)
    overruns: int = 0  # input blocks the runner dropped (set by the runner)
    # Dropouts in a burst of callbacks (set by the runner): the block that was due went in
    # less than half the slack before, because the host woke the callback late and it
    # caught up; no worker is on time for those.
    burst_dropouts: int = 0


class FramePipeline:
    """Frames of features -> audio at the model's rate: controls, model, synthesis.

    This is the part of the engine that streaming and offline runs share: fed the same
    frame features, it gives the offline render of them (``synth.delay`` samples later;
    with ``noise_phase="minimum"``, the same with the noise's phase changed and no delay).
    """

    def __init__(
        self,
        model: LiveModel,
        controls: LiveControls,
        seed: int = 0,
        backend: str = "numpy",
        noise_phase: str = "linear",
    ) -> None:
        self.model = model
        self.controls = controls
        self.state = model.initial_state()
        bands = _noise_bands(model)
        self.synth = StreamSynth(model.synth, bands, model.reverb_ir(seed), seed, "accurate",
                                 backend, noise_phase)  # fmt: skip
        #: Called with each batch of controls (for tests and inspection).
        self.on_controls: Callable[[SynthControls], None] | None = None

    def run(self, f0_hz: np.ndarray, confidence: np.ndarray, level_db: np.ndarray) -> np.ndarray:
        """Audio of the frames now complete after these frames."""
        if len(f0_hz) == 0:
            return np.zeros(0, np.float32)
        f0, level = self.controls.apply(f0_hz, confidence, level_db)
        ctl, self.state = self.model.controls(f0, level, self.state)
        if self.on_controls is not None:
            self.on_controls(ctl)
        return self.synth.push(ctl)


def _noise_bands(model: LiveModel) -> int:
    """Noise bands of the model's controls (one frame of silence through the model)."""
    ctl, _ = model.controls(
        np.zeros(1, np.float32), np.full(1, model.min_db, np.float32), model.initial_state()
    )
    return ctl.n_noise_bands


class StreamEngine:
    """Timbre transfer (or MIDI-driven synthesis) of one stream, block by block.

    ``host_rate`` is the stream's sample rate; ``model`` a :class:`LiveModel`. See the
    module notes. Public state: :attr:`latency_samples` (input to output, host samples),
    :attr:`stats`, :attr:`settings`.
    """

    def __init__(
        self,
        model: LiveModel,
        host_rate: int,
        settings: EngineSettings | None = None,
        backend: str | None = None,
    ) -> None:
        self.settings = (settings or EngineSettings()).validate()
        if not 8000 <= int(host_rate) <= 192000:
            raise ControlError(f"sample rate {host_rate} is out of range [8000, 192000]")
        self.model = model
        self.host_rate = int(host_rate)
        self.model_rate = model.sample_rate
        self.hop = model.hop
        if backend is None:
            from ddsp_pd.inference import kernels

            backend = kernels.resolve_backend("auto")
        s = self.settings
        self.mode = s.mode
        self.frames_per_step = int(s.frames_per_step) or auto_frames_per_step(model)
        tracker = StreamingYin(self.model_rate, s.fmin, s.fmax)
        self.analyzer = StreamAnalyzer(
            self.model_rate, self.hop, model.level, tracker, model.power_frame_size
        )
        adjust = LiveAdjust(
            model.frame_rate,
            model.min_db,
            model.statistics,
            model.ranges,
            s.adjust_mode,
            s.hold_seconds,
            s.window_seconds,
        )
        # Notes are what they are: auto-adjust is for audio input only.
        start = replace(s.controls, adjust=False) if s.mode == "midi" else s.controls
        self.controls = LiveControls(model.frame_rate, model.min_db, start, adjust, s.ramp_seconds)
        self.notes = NoteSynth(
            model.frame_rate,
            note_level_db(model.statistics, model.ranges),
            model.min_db,
            portamento=s.portamento,
        )
        self.pipeline = FramePipeline(model, self.controls, s.seed, backend, s.noise_phase)
        self._in = StreamResampler(self.host_rate, self.model_rate)
        self._out = StreamResampler(self.model_rate, self.host_rate)
        self._commands: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()
        self._lock = threading.Lock()  # one process() at a time
        self.stats = EngineStats()
        #: Silence the output FIFO starts with: the most the pipeline ever lags behind.
        self.prime = self._worst_lag()
        ratio = self.host_rate / self.model_rate
        #: Input-to-output latency in host samples (what an impulse in takes to come out).
        self.latency_samples = self.prime + round(self.pipeline.synth.delay * ratio)
        self._fifo = np.zeros(self.prime, np.float32)
        self._model_in = 0  # model-rate samples received
        self._midi_frames = 0
        self._analysis_buffer: list[np.ndarray] = []  # model-rate input not yet analysed
        self._analysis_received = 0
        self._waiting: list[FrameFeatures] = []  # frames waiting for a whole step
        self._waiting_frames = 0
        # Host-rate input held back while it cannot complete a step (see _can_defer).
        self._deferred: list[np.ndarray] = []
        self._host_in = 0  # host samples received, deferred ones included

    # ------------------------------------------------------------ latency
    def _frames_ready(self, model_samples: np.ndarray) -> np.ndarray:
        if self.mode == "midi":
            return model_samples // self.hop
        lookahead = self.analyzer.lookahead
        ready = (model_samples - lookahead) // self.hop + 1
        return np.where(model_samples < lookahead, 0, ready)

    def _worst_lag(self) -> int:
        """The largest number of host samples by which the pipeline's output trails its
        input, over every input length (the pattern repeats; two periods are checked)."""
        period = self.hop * self.host_rate // np.gcd(self.hop * self.host_rate, self.model_rate)
        step = self.frames_per_step * self.hop * self.host_rate // self.model_rate
        span = int(2 * self.frames_per_step * period + 4 * self.host_rate // 10 + 8 * step + 1024)
        c = np.arange(1, span + 1, dtype=np.int64)
        rs_in, rs_out = self._in, self._out
        if rs_in.identity:
            model_in = c
        else:
            model_in = np.maximum(0, -(-(c - rs_in.reach) * rs_in.up // rs_in.down))
        frames = self._frames_ready(model_in)
        frames = frames // self.frames_per_step * self.frames_per_step
        synthesised = np.maximum(frames - 1, 0) * self.hop
        if rs_out.identity:
            out = synthesised
        else:
            out = np.maximum(0, -(-(synthesised - rs_out.reach) * rs_out.up // rs_out.down))
        return int(np.max(c - out))

    @property
    def latency_ms(self) -> float:
        """:attr:`latency_samples` in milliseconds."""
        return 1000.0 * self.latency_samples / self.host_rate

    def describe_latency(self) -> dict[str, float]:
        """Where the latency comes from, in milliseconds at the host rate."""
        to_ms = 1000.0 / self.host_rate
        model_ms = 1000.0 / self.model_rate
        lookahead = 0 if self.mode == "midi" else self.analyzer.lookahead
        return {
            "analysis_lookahead_ms": lookahead * model_ms,
            "frame_ms": self.hop * model_ms,
            "step_wait_ms": (self.frames_per_step - 1) * self.hop * model_ms,
            "noise_filter_ms": self.pipeline.synth.delay * model_ms,
            "resampling_ms": (self._in.reach * to_ms if not self._in.identity else 0.0)
            + (self._out.reach * model_ms if not self._out.identity else 0.0),
            "total_ms": self.latency_ms,
        }

    # ------------------------------------------------------------ commands
    def set_control(self, name: str, value: Any) -> None:
        """Change a control at the next frame: ``octave``, ``loudness``, ``confidence``,
        ``adjust``, ``quiet``, ``autotune``, ``note_threshold`` (checked now, ControlError
        if out of range), ``seed``, ``portamento``."""
        if name in ("loudness", "loudness_db", "octave", "confidence", "adjust", "quiet",
                    "autotune", "note_threshold"):  # fmt: skip
            key = "loudness_db" if name == "loudness" else name
            _ = ControlSettings(**{key: bool(value) if key == "adjust" else float(value)})
            _.validate()
        elif name == "seed":
            if not 0 <= int(value) <= 2**31 - 1:
                raise ControlError(f"seed must be in [0, 2147483647], got {value}")
        elif name == "portamento":
            NoteSynth(1.0).set_portamento(float(value))
        else:
            raise ControlError(f"unknown control {name!r}")
        self._commands.append(("set", (name, value)))

    def note_on(self, pitch: float, velocity: float) -> None:
        """A note starts (velocity 0: it ends), at the next frame."""
        if not (0 <= pitch <= 127 and 0 <= velocity <= 127):
            raise ControlError(f"note {pitch} velocity {velocity}: both must be in [0, 127]")
        self._commands.append(("note_on", (pitch, velocity)))

    def note_off(self, pitch: float) -> None:
        """A note ends, at the next frame."""
        self._commands.append(("note_off", (pitch,)))

    def bend(self, amount: float) -> None:
        """Pitch bend in [-1, 1] (+-2 semitones), at the next frame."""
        if not -1.0 <= amount <= 1.0:
            raise ControlError(f"bend must be in [-1, 1], got {amount}")
        self._commands.append(("bend", (amount,)))

    def set_adsr(self, attack: float, decay: float, sustain: float, release: float) -> None:
        """The MIDI mode's envelope, at the next frame."""
        NoteSynth(1.0).set_adsr(attack, decay, sustain, release)  # checks the values
        self._commands.append(("adsr", (attack, decay, sustain, release)))

    def _apply_commands(self) -> None:
        while self._commands:
            kind, args = self._commands.popleft()
            if kind == "note_on":
                self.notes.note_on(*args)
            elif kind == "note_off":
                self.notes.note_off(*args)
            elif kind == "bend":
                self.notes.bend(*args)
            elif kind == "adsr":
                self.notes.set_adsr(*args)
            else:
                name, value = args
                if name == "adjust" and self.mode == "midi":
                    continue
                if name == "seed":
                    self.pipeline.synth.reseed(int(value))
                elif name == "portamento":
                    self.notes.set_portamento(float(value))
                else:
                    self.controls.set(name, value)

    # ------------------------------------------------------------ streaming
    def _frames(self, model_samples: np.ndarray) -> FrameFeatures:
        if self.mode == "audio":
            # Analyse only when a whole step of frames is there: a call with nothing to do
            # costs nothing but the buffering.
            self._analysis_buffer.append(model_samples)
            self._analysis_received += model_samples.size
            ready = self.analyzer.frames_ready(self._analysis_received)
            k = self.frames_per_step
            if ready // k <= self.analyzer.frames_emitted // k:  # no new whole step yet
                empty = np.zeros(0, np.float32)
                return FrameFeatures(empty, empty, empty, self.analyzer.frames_emitted)
            pending = np.concatenate(self._analysis_buffer)
            self._analysis_buffer = []
            return self.analyzer.push(pending)
        # MIDI mode: frame i is made once the input clock has passed its end.
        self._model_in += model_samples.size
        ready = self._model_in // self.hop
        count = ready - self._midi_frames
        f0, conf, level = self.notes.frames(max(0, count))
        first = self._midi_frames
        self._midi_frames = max(ready, self._midi_frames)
        return FrameFeatures(f0, conf, level, first)

    def _step(self, features: FrameFeatures) -> FrameFeatures:
        """The frames to run now: whole steps of ``frames_per_step`` frames."""
        k = self.frames_per_step
        if k == 1:
            return features
        if features.n_frames:
            self._waiting.append(features)
            self._waiting_frames += features.n_frames
        take = self._waiting_frames // k * k
        if take == 0:
            empty = np.zeros(0, np.float32)
            return FrameFeatures(empty, empty, empty)
        joined = [np.concatenate([getattr(f, name) for f in self._waiting])
                  for name in ("f0_hz", "f0_confidence", "level_db")]  # fmt: skip
        first = self._waiting[0].first
        rest = [x[take:] for x in joined]
        self._waiting = [FrameFeatures(*rest, first + take)] if rest[0].size else []
        self._waiting_frames = rest[0].size
        return FrameFeatures(*(x[:take] for x in joined), first)

    def _can_defer(self, n: int) -> bool:
        """Whether ``n`` more host samples leave the model with nothing to do.

        Then they are only held (no resampling, no analysis): the model works once per
        step, so a small block that completes no step changes nothing downstream, and the
        resampler and the analyser give the same results however their input is cut. This
        keeps the cost of a 64-sample block near that of its share of the model's steps.
        """
        if self.mode != "audio" or self._commands or self._fifo.size < n:
            return False
        model_total = self._in.output_count(self._host_in + n)
        ready = self.analyzer.frames_ready(model_total)
        k = self.frames_per_step
        return ready // k <= self.analyzer.frames_emitted // k

    def process(self, block: np.ndarray) -> np.ndarray:
        """Mono input samples at the host rate -> as many output samples (float32)."""
        x = np.asarray(block, np.float32).reshape(-1)
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        n = x.size
        with self._lock:
            started = time.perf_counter()
            frames = 0
            if self._can_defer(n):
                self._deferred.append(x)
                self._host_in += n
                out, self._fifo = self._fifo[:n], self._fifo[n:]
            else:
                self._host_in += n
                if self._deferred:
                    x = np.concatenate([*self._deferred, x])
                    self._deferred = []
                self._apply_commands()
                model_in = self._in.process(x)
                features = self._step(self._frames(model_in))
                frames = features.n_frames
                audio = self.pipeline.run(features.f0_hz, features.f0_confidence, features.level_db)
                host = self._out.process(audio)
                fifo = np.concatenate([self._fifo, host])
                if fifo.size < n:  # cannot happen with the computed prime; never fail live
                    self.stats.underruns += n - fifo.size
                    fifo = np.concatenate([fifo, np.zeros(n - fifo.size, np.float32)])
                out, self._fifo = fifo[:n], fifo[n:]
            st = self.stats
            st.blocks += 1
            st.samples_in += n
            st.frames += frames
            st.busy_seconds += time.perf_counter() - started
        return np.array(out, np.float32)

    def warm_up(self) -> None:
        """Run the model, the analysis and the resamplers once on a little audio (compiling
        or loading their kernels) without touching the stream's state."""
        model = self.model
        # Loading the tracker's and the resamplers' kernels from numba's cache on the
        # stream's first frame took 20-35 ms: a dropout at the start of every stream.
        s = self.settings
        n = 4 * self.analyzer.lookahead + 8 * self.hop + 2048
        t = np.arange(n, dtype=np.float32) / np.float32(self.model_rate)
        tone = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        tracker = StreamingYin(self.model_rate, s.fmin, s.fmax)
        StreamAnalyzer(
            self.model_rate, self.hop, model.level, tracker, model.power_frame_size
        ).push(tone)
        StreamResampler(self.host_rate, self.model_rate).process(tone[:1024])
        StreamResampler(self.model_rate, self.host_rate).process(tone[:1024])
        frames = 8
        ctl, _ = model.controls(
            np.full(frames, 220.0, np.float32),
            np.full(frames, model.min_db + 20.0, np.float32),
            model.initial_state(),
        )
        own = self.pipeline.synth
        synth = StreamSynth(model.synth, ctl.n_noise_bands, model.reverb_ir(0), 0, "accurate",
                            own.backend, own.noise_phase)  # fmt: skip
        synth.push(ctl)
