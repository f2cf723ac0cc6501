"""What the live engine needs of a model, for every model kind.

The engine talks to a model only through the model-kind seam
(:class:`ddsp_pd.kinds.controls.ControlModel`): frame features in, synthesizer controls and
the recurrent state out, frame by frame or block by block; the synthesis is described by
the kind's :class:`~ddsp_pd.kinds.controls.SynthConfig`. :class:`LiveModel` bundles that with
what live analysis and auto-adjust need: the level feature (loudness v1/v3 or power and its
frame size), the statistics (solo models) or note-on ranges (power models), and a name.
:func:`open_live_model` opens a checkpoint folder or zip (solo or DDSP-VST) or a DDSP-VST
``.tflite``, and refuses with one line a model that cannot stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddsp_pd.errors import CheckpointError, DdspPdError, StatisticsError
from ddsp_pd.kinds.controls import ReverbSpec, SynthConfig, SynthControls
from ddsp_pd.statistics import DatasetStatistics, ModelRanges

__all__ = ["LiveModel", "live_model_from", "open_live_model"]

ControlsFn = Callable[[np.ndarray, np.ndarray, Any], tuple[SynthControls, Any]]


@dataclass(eq=False)
class LiveModel:
    """A model ready to stream.

    Attributes:
        name: for messages.
        kind: ``"solo"``, ``"vst"`` or ``"tflite"``.
        controls: ``controls(f0_hz [T], level_db [T], state) -> (SynthControls, state)``.
        initial_state: the recurrent state at the start of a stream.
        synth: how controls become audio.
        level: the analyser's level (:data:`ddsp_pd.stream.analysis.LEVELS`).
        power_frame_size: samples per power frame (power models).
        min_db: the level's floor in dB (silence).
        statistics: a solo model's dataset statistics (auto-adjust), or None.
        ranges: a power model's note-on ranges (auto-adjust), or None.
        statistics_problem: why neither is there, when auto-adjust cannot run.
        model: the underlying model object.
    """

    name: str
    kind: str
    controls: ControlsFn
    initial_state: Callable[[], Any]
    synth: SynthConfig
    level: str
    power_frame_size: int = 1024
    min_db: float = -80.0
    statistics: DatasetStatistics | None = None
    ranges: ModelRanges | None = None
    statistics_problem: str | None = None
    model: Any = None

    @property
    def sample_rate(self) -> int:
        """The model's audio rate."""
        return int(self.synth.sample_rate)

    @property
    def hop(self) -> int:
        """Samples per frame at the model's rate."""
        return int(self.synth.hop)

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop

    @property
    def is_power(self) -> bool:
        """Whether the model takes power (DDSP-VST) rather than loudness."""
        return self.level == "power"

    def reverb_ir(self, seed: int = 0) -> np.ndarray | None:
        """The impulse response the stream convolves with (seeded for a filtered-noise
        reverb, as offline renders draw it), or None."""
        spec: ReverbSpec = self.synth.reverb
        if spec.kind == "none":
            return None
        if spec.kind == "ir":
            return np.asarray(spec.ir, np.float32)
        from ddsp_pd.inference.synthesis import impulse_response

        return impulse_response(spec, seed)


def _level_of(model: Any) -> str:
    level = getattr(model, "level", None)
    if level == "power":
        return "power"
    config = getattr(model, "config", None)
    version = getattr(config, "loudness_version", "v3")
    return "loudness_v1" if version == "v1" else "loudness_v3"


def _tflite_synth(model: Any) -> SynthConfig:
    """The synthesis of a ``.tflite`` model that does not describe its own (the plugin's:
    linear amplitude envelopes, an IR file beside the model or no reverb)."""
    ir = getattr(model, "reverb_ir", None)
    reverb = ReverbSpec("ir", ir=ir, source="reverb_ir file") if ir is not None else ReverbSpec()
    return SynthConfig(model.sample_rate, model.hop, "linear", 0, reverb)


def _ranges_of_tflite(model: Any) -> tuple[ModelRanges | None, str | None]:
    metadata = getattr(model, "metadata", None)
    as_dict = getattr(metadata, "as_dict", None)
    if as_dict is None:
        return None, "the model has no metadata.json"
    try:
        return ModelRanges.from_metadata(as_dict(), source="metadata.json"), None
    except StatisticsError as exc:
        return None, f"metadata.json has no usable ranges: {exc.message}"


def live_model_from(
    model: Any,
    *,
    name: str = "model",
    statistics: DatasetStatistics | None = None,
    statistics_problem: str | None = None,
) -> LiveModel:
    """Wrap a model object of any kind (an :class:`~ddsp_pd.inference.InferenceModel` of a
    solo or DDSP-VST checkpoint, a :class:`~ddsp_pd.kinds.tflite.TfliteModel`, or anything
    with the :class:`~ddsp_pd.kinds.controls.ControlModel` attributes).

    Raises :class:`CheckpointError` for a model that cannot stream.
    """
    controls = getattr(model, "synth_controls", None) or getattr(model, "controls", None)
    if controls is None or not callable(controls):
        raise CheckpointError(f"{name} cannot stream: it does not give controls frame by frame")
    synth = getattr(model, "synth", None)
    kind = str(getattr(model, "kind", "solo"))
    if not isinstance(synth, SynthConfig):
        if kind != "tflite":
            raise CheckpointError(f"{name} cannot stream: it does not describe its synthesis")
        synth = _tflite_synth(model)
    hop = synth.sample_rate / synth.frame_rate
    if not math.isclose(hop, round(hop)):
        raise CheckpointError(f"{name} cannot stream: its hop is not a whole number of samples")
    level = _level_of(model)
    frame_size = int(getattr(model, "power_frame_size", None) or
                     getattr(model, "frame_size", None) or 1024)  # fmt: skip
    ranges = None
    problem = statistics_problem
    if level == "power":
        if kind == "tflite":
            ranges, problem = _ranges_of_tflite(model)
        elif statistics is not None:
            try:
                ranges = statistics.model_ranges()
            except StatisticsError as exc:
                problem = exc.message
        statistics = None
    prepare = getattr(model, "prepare_stream", None)
    if callable(prepare):
        prepare()  # the work of a first use, done before the stream rather than in it
    config = getattr(model, "config", None)
    min_db = float(getattr(config, "min_db", -80.0)) if level != "power" else -80.0
    initial = getattr(model, "initial_state", None) or (lambda: None)
    return LiveModel(
        name=name,
        kind=kind,
        controls=controls,
        initial_state=initial,
        synth=synth,
        level=level,
        power_frame_size=frame_size,
        min_db=min_db,
        statistics=statistics,
        ranges=ranges,
        statistics_problem=problem,
        model=model,
    )


def _looks_like_tflite(path: Path) -> bool:
    if path.suffix.lower() == ".tflite":
        return True
    return path.is_dir() and any(path.glob("*.tflite")) and not any(path.glob("*.index"))


def open_live_model(
    checkpoint: str | Path | None, dirs: list[Path] | None = None, precision: str = "exact"
) -> LiveModel:
    """Open a model for streaming: a checkpoint folder or zip, a ``.tflite`` (or a folder
    holding one), or a name in the checkpoint folders (None: the shipped default).
    ``precision`` is the decoder's (:data:`ddsp_pd.inference.decoder.PRECISIONS`; a
    ``.tflite`` has its own arithmetic).

    Raises a :class:`~ddsp_pd.errors.DdspPdError` (one line) for anything unusable.
    """
    from ddsp_pd.catalog import display_name, resolve_checkpoint

    path = resolve_checkpoint(checkpoint, dirs)
    name = display_name(path)
    if _looks_like_tflite(path):
        from ddsp_pd.kinds.tflite import load_tflite

        return live_model_from(load_tflite(path), name=name)
    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.inference import InferenceModel
    from ddsp_pd.statistics import load_statistics

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as first:
        if path.suffix.lower() != ".zip":
            raise
        from ddsp_pd.kinds.tflite import load_tflite

        try:
            return live_model_from(load_tflite(path), name=name)
        except DdspPdError:
            raise first from None
    statistics = None
    problem = None
    if ckpt.statistics_path is None:
        problem = "the checkpoint has no dataset_statistics.pkl"
    else:
        try:
            statistics = load_statistics(ckpt.statistics_path)
        except StatisticsError as exc:
            problem = f"dataset_statistics.pkl unusable: {exc.message}"
    from ddsp_pd.inference import kernels

    # The compiled kernels: a live stream runs long enough for their start-up to pay.
    model = InferenceModel(ckpt, kernels=kernels.resolve_backend("auto"), precision=precision)
    return live_model_from(model, name=name, statistics=statistics, statistics_problem=problem)
