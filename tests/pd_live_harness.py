"""Running ``[ddsp.live~]`` in a headless, real-time Pd: a test patch, a take, its measurements.

Used by ``tests/test_pd_live.py`` and ``benchmarks/bench_pd_live.py``. The test patch plays an
array (``src``, loaded from a WAV) into ``[ddsp.live~ BLOCK DELAY PORT]`` and records what comes
out into another array (``rec``) that starts in the same DSP tick, so sample ``i`` of the take
is what the object played ``i`` samples after input sample 0 went in: the take's lag behind the
input is the object's true input-to-output latency. Everything the object's right outlet says
is printed as ``live: ...``.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from pd_harness import PATCHES, PdSession

ABSTRACTIONS = PATCHES / "abstractions"
PD_RATE = 48000


def _escape(text: str) -> str:
    return text.replace("$", "\\$").replace(",", " \\,").replace(";", " \\;")


def _suffix(k: int) -> str:
    """Names of instance k: ``live``, ``live-ctl``, ``src``, ``rec`` for 1; ``live2`` ... for 2."""
    return "" if k == 1 else str(k)


def live_patch(block: int, delay: int, port: int, record_s: float, instances: int = 1) -> str:
    """The test patch: ``live-test load K PATH | start | loop 0/1 | save K PATH``.

    Instance K is ``[ddsp.live~ BLOCK DELAY PORT]`` between ``[tabplay~ srcK]`` and
    ``[tabwrite~ recK]`` (K = 1 has no suffix: ``src``, ``rec``), its inlet listens on
    ``live-ctlK`` and its right outlet prints as ``liveK: ...``. ``load`` reads PATH into
    ``srcK`` (``live-test: loaded FRAMES``), ``start`` plays every ``srcK`` into its object and
    records ``record_s`` seconds of the outputs from the same tick, ``loop 1`` plays the
    sources again and again, ``save`` writes ``recK`` as a float WAV (``live-test: saved N``).
    """
    boxes: list[str] = []
    connections: list[tuple[int, int, int, int]] = []

    def box(text: str) -> int:
        boxes.append(text)
        return len(boxes) - 1

    def chain(*ids: int) -> None:
        connections.extend((a, 0, b, 0) for a, b in itertools.pairwise(ids))

    box(f"obj 10 10 declare -path {ABSTRACTIONS}")
    # The remote sends 'symbol start' for a bare word: [list] [list trim] make it 'start'.
    cmd = box("obj 10 40 r live-test")
    route = box("obj 10 100 route load start save loop")
    chain(cmd, box("obj 10 70 list"), box("obj 60 70 list trim"), route)
    load_k = box("obj 10 130 route " + " ".join(str(k) for k in range(1, instances + 1)))
    save_k = box("obj 300 130 route " + " ".join(str(k) for k in range(1, instances + 1)))
    connections += [(route, 0, load_k, 0), (route, 2, save_k, 0)]
    loaded = box("obj 10 280 list prepend loaded")
    saved = box("obj 300 280 list prepend saved")
    chain(loaded, box("obj 10 310 list trim"), box("obj 10 340 print live-test"))
    chain(saved, box("obj 300 310 list trim"), box("obj 300 340 print live-test"))
    start = box("obj 600 100 t b")
    loop = box("obj 700 100 f")
    connections += [(route, 1, start, 0), (route, 3, loop, 0)]
    for k in range(1, instances + 1):
        n, x = _suffix(k), 600 + 200 * k
        box(f"obj {x} 10 array define src{n} 10")
        box(f"obj {x} 40 array define rec{n} {int(record_s * PD_RATE)}")
        rd = box(f"msg 10 {160 + 30 * k} read -resize $1 src{n}")
        connections.append((load_k, k - 1, box(f"obj 10 {145 + 30 * k} list"), 0))
        chain(len(boxes) - 1, rd, box(f"obj 10 {175 + 30 * k} soundfiler"), loaded)
        wr = box(f"msg 300 {160 + 30 * k} write -wave -bytes 4 $1 rec{n}")
        connections.append((save_k, k - 1, box(f"obj 300 {145 + 30 * k} list"), 0))
        chain(len(boxes) - 1, wr, box(f"obj 300 {175 + 30 * k} soundfiler"), saved)
        go = box(f"obj {x} 160 t b b")
        play = box(f"obj {x} 200 tabplay~ src{n}")
        live = box(f"obj {x} 240 ddsp.live~ {block} {delay} {port}")
        rec = box(f"obj {x} 280 tabwrite~ rec{n}")
        again = box(f"obj {x + 100} 200 spigot")
        connections += [(start, 0, go, 0), (go, 0, play, 0), (go, 1, rec, 0), (play, 0, live, 0)]
        connections += [(live, 0, rec, 0), (play, 1, again, 0), (again, 0, play, 0)]
        connections += [(loop, 0, again, 1)]
        chain(box(f"obj {x + 100} 240 r live-ctl{n}"), live)
        connections.append((live, 1, box(f"obj {x} 320 print live{n}"), 0))
    chain(box("obj 10 400 loadbang"), box("msg 10 430 ; pd dsp 1"))
    lines = ["#N canvas 0 50 1000 520 12;", f"#X declare -path {ABSTRACTIONS};"]
    lines += [f"#X {_escape(text)};" for text in boxes]
    lines += [f"#X connect {a} {b} {c} {d};" for a, b, c, d in connections]
    return "\n".join(lines) + "\n"


@dataclass
class Take:
    """One recording through an instance: what went in, what came out, what it reported."""

    source: np.ndarray
    output: np.ndarray
    latency_samples: int
    latency_ms: float
    dropouts: int  # during the take (the object's count at its end minus at its start)
    stats: list[list[float]] = field(default_factory=list)  # the server's, during the take


class LivePd:
    """A headless real-time Pd with the test patch (``instances`` objects) against ``port``."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        *,
        block: int = 256,
        delay: int = 0,
        record_s: float = 11.0,
        instances: int = 1,
        timeout_s: float = 900.0,
    ) -> None:
        self.workdir = workdir
        self.record_s = record_s
        self.instances = instances
        patch = workdir / f"live_test_{block}_{instances}.pd"
        patch.write_text(live_patch(block, delay, port, record_s, instances))
        # -sleepgrain 1: Pd polls its sockets every 1 ms instead of 5 (replies are read sooner).
        args = ("-r", str(PD_RATE), "-sleepgrain", "1")
        self.pd = PdSession(patch, workdir, extra_args=args, timeout_s=timeout_s)

    def _values(self, key: str, k: int, since: int = 0) -> list[list[str]]:
        regex = re.compile(rf"^live{_suffix(k)}: {key} ?(.*)$")
        lines = list(self.pd.lines[since:])
        return [m.group(1).split() for line in lines if (m := regex.match(line))]

    def wait_state(self, state: str, k: int = 1, *, timeout: float = 60.0, since: int = 0) -> None:
        """Wait until instance ``k`` reports ``state STATE`` (audio, midi, waiting, off)."""
        self.pd.wait_for(rf"^live{_suffix(k)}: state {state}$", timeout=timeout, since=since)

    def wait_open(self, k: int = 1, timeout: float = 120.0) -> tuple[int, float]:
        """Wait until instance ``k``'s stream is open; return its latency (samples, ms)."""
        self.wait_state("audio", k, timeout=timeout)
        return self.latency(k)

    def latency(self, k: int = 1, since: int = 0) -> tuple[int, float]:
        """The last ``latency MS SAMPLES`` instance ``k`` reported."""
        found = self._values("latency", k, since)
        if not found:
            raise AssertionError(f"instance {k} never reported its latency")
        return int(float(found[-1][1])), float(found[-1][0])

    def dropouts(self, k: int = 1) -> int:
        """Instance ``k``'s dropout count as last reported (0 before the first)."""
        found = self._values("dropouts", k)
        return int(float(found[-1][0])) if found else 0

    def stats(self, k: int = 1, since: int = 0) -> list[list[float]]:
        """The server's ``stats`` lines for instance ``k``'s stream (BLOCKS LOST LATE ...)."""
        return [[float(v) for v in row] for row in self._values("stats", k, since)]

    def load(self, source: np.ndarray, name: str, k: int = 1) -> None:
        """Put ``source`` (float, at 48 kHz) into instance ``k``'s source array."""
        path = self.workdir / f"{name}-in.wav"
        sf.write(path, source.astype(np.float32), PD_RATE, subtype="FLOAT")
        mark = self.pd.mark()
        self.pd.send("live-test", "load", k, path)
        self.pd.wait_for(r"^live-test: loaded ", since=mark)

    def play(self, seconds: float, *, loop: bool = False) -> tuple[list[int], int]:
        """Start every source (looped or not), wait ``seconds``; return the dropouts of each
        instance during that time and the log index at the start."""
        self.pd.send("live-test", "loop", int(loop))
        time.sleep(0.3)  # the dropout count is reported at most 4 times a second
        before = [self.dropouts(k) for k in range(1, self.instances + 1)]
        mark = self.pd.mark()
        self.pd.send("live-test", "start")
        time.sleep(seconds + 0.3)
        self.pd.send("live-test", "loop", 0)
        after = [self.dropouts(k) for k in range(1, self.instances + 1)]
        return [b - a for a, b in zip(before, after, strict=True)], mark

    def save(self, name: str, k: int = 1) -> np.ndarray:
        """Instance ``k``'s recording (``record_s`` seconds from the last start)."""
        out_path = self.workdir / f"{name}-out.wav"
        mark = self.pd.mark()
        self.pd.send("live-test", "save", k, out_path)
        self.pd.wait_for(r"^live-test: saved ", since=mark)
        output, rate = sf.read(out_path, dtype="float32")
        assert rate == PD_RATE
        return output

    def take(self, source: np.ndarray, name: str, seconds: float | None = None) -> Take:
        """Play ``source`` through instance 1 and record its output (``record_s`` seconds,
        of which the first ``seconds`` are waited for)."""
        self.load(source, name)
        samples, ms = self.latency()
        dropouts, mark = self.play(self.record_s if seconds is None else seconds)
        output = self.save(name)
        return Take(source, output, samples, ms, dropouts[0], self.stats(1, mark))

    def send(self, *atoms: object, k: int = 1) -> None:
        """A message to instance ``k``'s inlet (``note 60 100``, ``delay 6`` ...)."""
        self.pd.send(f"live-ctl{_suffix(k)}", *atoms)

    def mark(self) -> int:
        return self.pd.mark()

    def bad_lines(self) -> list[str]:
        return self.pd.bad_lines()

    def close(self) -> None:
        self.pd.close()

    def __enter__(self) -> LivePd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def impulse_train(seconds: float, period: float = 0.5, first: float = 0.25) -> np.ndarray:
    """Clicks of 0.9 every ``period`` seconds from ``first`` on, at 48 kHz."""
    x = np.zeros(int(seconds * PD_RATE), np.float32)
    x[int(first * PD_RATE) :: int(period * PD_RATE)] = 0.9
    return x


def xcorr_lag(source: np.ndarray, output: np.ndarray, max_lag_s: float = 0.25) -> int:
    """Input-to-output lag (samples) of an impulse train's answer, as benchmarks/bench_live.py
    measures it: the lag, in 0..``max_lag_s``, at which the output's magnitude summed at the
    impulses is largest. The first impulse is left out: it also meets the stream's start."""
    spikes = np.flatnonzero(source)[1:]
    lags = np.arange(int(max_lag_s * PD_RATE))
    spikes = spikes[spikes + lags[-1] < output.size]
    magnitude = np.abs(output)
    return int(np.argmax([magnitude[spikes + lag].sum() for lag in lags]))
