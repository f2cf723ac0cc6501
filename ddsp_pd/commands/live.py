"""``ddsp-pd live``: timbre transfer (or MIDI-driven synthesis) as you play.

Audio in -> streaming engine -> audio out through PortAudio (any device, JACK included),
controlled over OSC with the namespace of ``serve``. ``--file IN --output OUT`` streams a
file through exactly the same path without a device (what a listener would hear).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import click

from ddsp_pd.commands.options import precision_option
from ddsp_pd.errors import DdspPdError

_MODES = ("audio", "midi")


def _settings(
    octave: float,
    loudness: float,
    confidence: float,
    adjust: bool,
    quiet: float,
    autotune: float,
    note_threshold: float,
    mode: str,
    seed: int,
    adjust_mode: str,
    hold_seconds: float,
    portamento: float,
    frames: int,
    noise_phase: str = "minimum",
):
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.stream.engine import EngineSettings

    controls = ControlSettings(
        octave=octave,
        loudness_db=loudness,
        confidence=confidence,
        adjust=adjust,
        quiet=quiet,
        autotune=autotune,
        note_threshold=note_threshold,
    ).validate()
    return EngineSettings(
        controls=controls,
        mode=mode,
        seed=seed,
        adjust_mode=adjust_mode,
        hold_seconds=hold_seconds,
        portamento=portamento,
        frames_per_step=frames,
        noise_phase=noise_phase,
    ).validate()


def _schedule_notes(engine, notes_path: Path):
    """``on_block`` for :func:`run_file` that sends a MIDI file's line as note commands
    (the path ``/ddsp/note`` takes) when the stream reaches each note."""
    from ddsp_pd.stream.midi import mono_events, read_midi_notes

    events = mono_events(read_midi_notes(notes_path))
    position = [0]
    sounding: list[int] = []

    def on_block(k: int, t: float) -> None:
        while position[0] < len(events) and events[position[0]].time <= t:
            event = events[position[0]]
            position[0] += 1
            if event.velocity == 0:
                engine.note_on(event.pitch, 0)
                sounding.clear()
            else:
                for pitch in sounding:
                    engine.note_on(pitch, 0)
                sounding[:] = [event.pitch]
                engine.note_on(event.pitch, event.velocity)

    return on_block


def dropout_hint(
    dropouts: int, realtime_factor: float, slack_blocks: int, burst: int = 0
) -> str | None:
    """What to change after a run with ``dropouts`` (None without any): a model that needs
    most of real time wants a lighter setting; otherwise the machine held the worker off for
    longer than the slack, which more slack covers at the cost of latency. ``burst`` of the
    dropouts came in bursts of late callbacks (the host woke the audio thread late), which
    only more slack covers."""
    if dropouts <= 0:
        return None
    if burst >= dropouts:
        return (
            f"{dropouts} blocks came too late, all in bursts of late callbacks: the machine "
            f"woke the audio thread later than the {slack_blocks} blocks of slack allow; "
            f"--buffer {2 * slack_blocks} trades latency for fewer dropouts, --max-buffer "
            f"{2 * slack_blocks} only once they come"
        )
    if realtime_factor >= 0.8:
        return (
            f"{dropouts} blocks came too late: the model needs {realtime_factor:.0%} of real "
            "time here; try --precision fast, more --frames or a smaller model"
        )
    return (
        f"{dropouts} blocks came too late: the machine held the worker off for longer than the "
        f"{slack_blocks} blocks of slack; --buffer {2 * slack_blocks} trades latency for fewer "
        f"dropouts, --max-buffer {2 * slack_blocks} only once they come"
    )


def _bursts(dropouts: int, burst: int) -> str:
    """`` (N in bursts of late callbacks)`` where there are any."""
    return f" ({burst} in bursts of late callbacks)" if dropouts and burst else ""


def _grew(start_blocks: int, grown: int, latency_ms: float) -> str:
    """The line that says the slack grew (empty when it did not)."""
    if grown <= 0:
        return ""
    return (
        f"the slack grew from {start_blocks} to {start_blocks + grown} blocks at dropouts "
        f"(--max-buffer): latency now {latency_ms:.1f} ms"
    )


def _report(run, start_blocks: int) -> None:
    click.echo(
        f"real-time factor {run.realtime_factor:.3f}, latency {run.latency_ms:.1f} ms, "
        f"dropouts {run.dropouts}{_bursts(run.dropouts, run.burst_dropouts)}, "
        f"overruns {run.overruns}" + (f", engine errors {run.errors}" if run.errors else ""),
        err=True,
    )
    slack_blocks = start_blocks + run.grown_blocks
    grew = _grew(start_blocks, run.grown_blocks, run.latency_ms)
    if grew:
        click.echo(grew, err=True)
    hint = dropout_hint(run.dropouts, run.realtime_factor, slack_blocks, run.burst_dropouts)
    if hint:
        click.echo(hint, err=True)


@click.command(name="live")
@click.option("--list-devices", is_flag=True, help="List the audio devices and exit.")
@click.option(
    "-c",
    "--checkpoint",
    default=None,
    metavar="DIR|ZIP|TFLITE|NAME",
    help="Model: checkpoint folder or .zip, DDSP-VST .tflite, or a name [default: shipped].",
)
@click.option("--input-device", default=None, metavar="INDEX|NAME", help="Audio input device.")
@click.option("--output-device", default=None, metavar="INDEX|NAME", help="Audio output device.")
@click.option(
    "--sample-rate",
    type=click.IntRange(8000, 192000),
    default=None,
    help="Stream rate in Hz [default: the file's with --file, else the output device's].",
)
@click.option(
    "--block",
    type=click.IntRange(32, 4096),
    default=256,
    show_default=True,
    help="Samples per audio callback.",
)
@click.option(
    "--buffer",
    "buffer_blocks",
    type=click.IntRange(1, 64),
    default=None,
    help="Blocks of slack between the callback and the model [default: 10 ms worth].",
)
@click.option(
    "--max-buffer",
    "max_buffer_blocks",
    type=click.IntRange(1, 64),
    default=None,
    help="Let the slack grow by a block at each dropout, up to this many blocks: no block "
    "is lost and the latency grows with it [default: --buffer, fixed].",
)
@click.option(
    "--frames",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Frames the model takes at a time: more is less CPU and more latency "
    "(0: 12 ms worth, 3 frames of a 250 frames/s model, 1 of a 50 frames/s one; "
    "8 ms worth, 2 frames, for a model over 2 M parameters).",
)
@click.option(
    "--noise-phase",
    type=click.Choice(["minimum", "linear"]),
    default="minimum",
    show_default=True,
    help="Noise filter: minimum (no delay) or linear (ddsp's: the offline render exactly, "
    "3.9 ms later).",
)
@click.option(
    "--mode",
    type=click.Choice(_MODES),
    default="audio",
    show_default=True,
    help="audio: timbre transfer of the input; midi: notes (OSC /ddsp/note) drive the model.",
)
@click.option(
    "--file",
    "file_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Stream this audio file instead of a device (needs --output).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --file: where to write what comes out (WAV, FLAC, OGG, AIFF).",
)
@click.option(
    "--realtime", is_flag=True, help="With --file: pace the blocks in real time (as a device)."
)
@click.option(
    "--notes",
    "notes_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --file and --mode midi: play this MIDI file's notes as /ddsp/note would.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1, 86400.0),
    default=None,
    help="Stop a device stream after this many seconds [default: until Ctrl-C].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="OSC port (namespace of serve; 0 = none) [default: 9001 live, none with --file].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="OSC address to listen on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option("--octave", type=float, default=0.0, show_default=True, help="f0 shift in octaves.")
@click.option(
    "--loudness", type=float, default=0.0, show_default=True, help="Loudness shift in dB."
)
@click.option(
    "--confidence",
    type=float,
    default=0.2,
    show_default=True,
    help="f0 confidence gate: frames below it get no harmonic part.",
)
@click.option(
    "--adjust/--no-adjust",
    default=True,
    show_default=True,
    help="Live auto-adjust of register and level towards the model's statistics.",
)
@click.option(
    "--adjust-mode",
    type=click.Choice(["hold", "running"]),
    default="hold",
    show_default=True,
    help="hold: fit on the first notes, then keep; running: keep fitting the last 10 s.",
)
@click.option(
    "--hold-seconds",
    type=float,
    default=4.0,
    show_default=True,
    help="Seconds of notes auto-adjust fits before it holds (--adjust-mode hold).",
)
@click.option(
    "--quiet", type=float, default=20.0, show_default=True, help="dB off note-off frames."
)
@click.option(
    "--autotune", type=float, default=0.0, show_default=True, help="0..1 snap to the key."
)
@click.option(
    "--note-threshold",
    type=float,
    default=1.0,
    show_default=True,
    help="Note-on threshold of auto-adjust's note detection.",
)
@click.option(
    "--portamento",
    type=float,
    default=0.0,
    show_default=True,
    help="MIDI mode: glide time between notes in seconds.",
)
@precision_option
def command(
    list_devices: bool,
    checkpoint: str | None,
    input_device: str | None,
    output_device: str | None,
    sample_rate: int | None,
    block: int,
    buffer_blocks: int | None,
    max_buffer_blocks: int | None,
    frames: int,
    noise_phase: str,
    mode: str,
    file_path: Path | None,
    output: Path | None,
    realtime: bool,
    notes_path: Path | None,
    duration: float | None,
    port: int | None,
    host: str,
    seed: int,
    octave: float,
    loudness: float,
    confidence: float,
    adjust: bool,
    adjust_mode: str,
    hold_seconds: float,
    quiet: float,
    autotune: float,
    note_threshold: float,
    portamento: float,
    precision: str,
) -> None:
    """Play live: audio in -> timbre transfer -> audio out, controlled over OSC."""
    try:
        if list_devices:
            from ddsp_pd.stream.devices import device_lines

            for line in device_lines():
                click.echo(line)
            return
        settings = _settings(
            octave, loudness, confidence, adjust, quiet, autotune, note_threshold, mode,
            seed, adjust_mode, hold_seconds, portamento, frames, noise_phase,
        )  # fmt: skip
        if (file_path is None) != (output is None):
            raise click.UsageError("--file and --output go together")
        if notes_path is not None and (file_path is None or mode != "midi"):
            raise click.UsageError("--notes needs --file and --mode midi")
        if max_buffer_blocks and buffer_blocks and max_buffer_blocks < buffer_blocks:
            raise click.UsageError(
                f"--max-buffer {max_buffer_blocks} is below --buffer {buffer_blocks}"
            )
        if file_path is not None:
            _run_file(
                file_path, output, checkpoint, settings, sample_rate, block, buffer_blocks,
                realtime, notes_path, port, host, precision, max_buffer_blocks,
            )  # fmt: skip
        else:
            _run_device(
                checkpoint, settings, input_device, output_device, sample_rate, block,
                buffer_blocks, duration, 9001 if port is None else port, host, precision,
                max_buffer_blocks,
            )  # fmt: skip
    except DdspPdError as exc:
        raise click.ClickException(str(exc)) from None


def _read_stream_file(path: Path, rate: int):
    """The file as mono at ``rate``. Unlike ``render``, silence is a fine input (in MIDI mode
    the file is only the clock)."""
    import numpy as np

    from ddsp_pd.audio_io import read_audio, resample
    from ddsp_pd.errors import InputError

    frames, file_rate = read_audio(path)
    if frames.size == 0:
        raise InputError(f"{path} is empty (0 samples)")
    if not np.all(np.isfinite(frames)):
        raise InputError(f"{path} contains NaN or infinite samples")
    return resample(frames.mean(axis=1, dtype=np.float32), file_rate, rate)


def _open(checkpoint: str | None, rate: int, settings, precision: str = "exact"):
    from ddsp_pd.stream.engine import StreamEngine
    from ddsp_pd.stream.models import open_live_model

    click.echo("loading model ...", err=True)
    model = open_live_model(checkpoint, precision=precision)
    engine = StreamEngine(model, rate, settings)
    engine.warm_up()
    click.echo(
        f"model: {model.name} ({model.kind}, {model.level}), {rate} Hz stream, "
        f"engine latency {engine.latency_ms:.1f} ms",
        err=True,
    )
    return engine


def _osc(engine, port: int | None, host: str, stats):
    if not port:
        return None
    from ddsp_pd.stream.osc import LiveOscServer

    server = LiveOscServer(engine, port, host, stats).start()
    click.echo(f"OSC on {host}:{server.port}", err=True)
    return server


def _run_file(
    file_path: Path,
    output: Path,
    checkpoint: str | None,
    settings,
    sample_rate: int | None,
    block: int,
    buffer_blocks: int | None,
    realtime: bool,
    notes_path: Path | None,
    port: int | None,
    host: str,
    precision: str = "exact",
    max_buffer_blocks: int | None = None,
) -> None:
    from ddsp_pd.audio_io import output_format, probe_audio, write_audio_atomic
    from ddsp_pd.errors import OutputError
    from ddsp_pd.output_path import check_writable, same_file
    from ddsp_pd.stream.runner import default_buffer_blocks, run_file

    info = probe_audio(file_path)
    if same_file(output, file_path):
        raise OutputError(f"refusing to write over the input {file_path}")
    fmt, subtype = output_format(output, None, None)
    check_writable(output)
    rate = int(sample_rate or info.sample_rate)
    audio = _read_stream_file(file_path, rate)
    engine = _open(checkpoint, rate, settings, precision)
    last = {"busy": 0.0, "t": time.perf_counter()}
    runners: list = []  # the runner run_file makes: its latency includes the slack

    def stats() -> tuple[float, float, int]:
        now = time.perf_counter()
        busy = engine.stats.busy_seconds
        rtf = (busy - last["busy"]) / max(now - last["t"], 1e-6)
        last.update(busy=busy, t=now)
        samples = runners[0].latency_samples if runners else engine.latency_samples
        return rtf, 1000.0 * samples / rate, engine.stats.dropouts

    server = _osc(engine, port, host, stats)
    on_block = _schedule_notes(engine, notes_path) if notes_path is not None else None
    try:
        run = run_file(engine, audio, block, buffer_blocks, realtime, on_block=on_block,
                       max_buffer_blocks=max_buffer_blocks, on_start=runners.append)  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    write_audio_atomic(output, run.audio, run.sample_rate, fmt, subtype)
    _report(run, buffer_blocks or default_buffer_blocks(block, rate))
    click.echo(f"wrote {output} ({len(run.audio) / run.sample_rate:.2f} s at {rate} Hz)")


def _run_device(
    checkpoint: str | None,
    settings,
    input_device: str | None,
    output_device: str | None,
    sample_rate: int | None,
    block: int,
    buffer_blocks: int | None,
    duration: float | None,
    port: int,
    host: str,
    precision: str = "exact",
    max_buffer_blocks: int | None = None,
) -> None:
    from ddsp_pd.stream.devices import DeviceStream, resolve_device
    from ddsp_pd.stream.runner import LiveRunner

    if sample_rate is None:
        import sounddevice

        out = resolve_device(output_device, "output")
        sample_rate = int(sounddevice.query_devices(out)["default_samplerate"])
    # Fail on a bad device or rate before the model loads.
    probe = DeviceStream(lambda x: x, sample_rate, block, input_device, output_device,
                         output_only=settings.mode == "midi" and input_device is None)  # fmt: skip
    engine = _open(checkpoint, sample_rate, settings, precision)
    runner = LiveRunner(engine, block, buffer_blocks, max_buffer_blocks=max_buffer_blocks)
    # The callback thread must get the interpreter lock quickly: the default switch
    # interval (5 ms) is as long as a block.
    sys.setswitchinterval(0.001)
    started = time.perf_counter()
    last = {"busy": 0.0, "t": started}

    def stats() -> tuple[float, float, int]:
        now = time.perf_counter()
        busy = engine.stats.busy_seconds
        rtf = (busy - last["busy"]) / max(now - last["t"], 1e-6)
        last.update(busy=busy, t=now)
        return rtf, 1000.0 * runner.latency_samples / sample_rate, runner.dropouts

    server = _osc(engine, port, host, stats)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stream = DeviceStream(runner.callback, sample_rate, block, input_device, output_device,
                          output_only=probe.input is None)  # fmt: skip
    from ddsp_pd.stream.response import model_response_samples

    # What a player hears: the model's answer to an attack peaks this much after the
    # algorithmic latency (docs/live.md); a few tenths of a second to measure, once.
    response = model_response_samples(engine.model, sample_rate, engine.settings)
    heard = ""
    if response:
        heard = f", its answer to an attack peaks {1000.0 * response / sample_rate:.1f} ms later"
    click.echo(
        f"playing: {block}-sample blocks, {runner.buffer_blocks} of slack, latency "
        f"{1000.0 * runner.latency_samples / sample_rate:.1f} ms{heard} (Ctrl-C stops)",
        err=True,
    )
    try:
        with runner:
            stream.start()
            try:
                stream.run(duration, stop.is_set)
            finally:
                stream.stop()
    finally:
        if server is not None:
            server.stop()
    seconds = time.perf_counter() - started
    rtf = engine.stats.busy_seconds / max(seconds, 1e-9)
    click.echo(
        f"real-time factor {rtf:.3f}, latency {1000.0 * runner.latency_samples / sample_rate:.1f}"
        f" ms, dropouts {runner.dropouts}{_bursts(runner.dropouts, runner.burst_dropouts)},"
        f" overruns {runner.overruns}, device xruns "
        f"{stream.stats.input_overflows + stream.stats.output_underflows}",
        err=True,
    )
    grew = _grew(runner.initial_buffer_blocks, runner.grown_blocks,
                 1000.0 * runner.latency_samples / sample_rate)  # fmt: skip
    if grew:
        click.echo(grew, err=True)
    hint = dropout_hint(runner.dropouts, rtf, runner.buffer_blocks, runner.burst_dropouts)
    if hint:
        click.echo(hint, err=True)
