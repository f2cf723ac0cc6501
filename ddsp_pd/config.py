"""Every size and rate of a DDSP model, read from its gin bindings and checked against
its variables, and the ddsp era the model comes from.

Supported:

- the ``solo_instrument`` family (``RnnFcDecoder`` -> ``Harmonic``/``Additive`` +
  ``FilteredNoise`` -> ``Add`` -> trainable ``Reverb``) from ddsp 0.x, 1.x and 2.x-3.x;
- DDSP-VST models, era ``"vst"`` (ddsp's ``models/vst/vst.gin``, what the Train_VST colab
  trains): ``OnlineF0PowerPreprocessor`` -> ``RnnFcDecoder`` on ``pw_scaled`` and
  ``f0_scaled`` -> ``Harmonic`` + ``FilteredNoise`` -> ``Add`` -> ``FilteredNoiseReverb``
  -> ``Crop``.

Anything with an encoder or other processors is refused with a message that says what is
missing.

The fields a VST config sets (all additive: solo configs keep their defaults):

- ``era = "vst"``; ``level`` (a property) is ``"power"`` for it, ``"loudness"`` otherwise.
- ``input_keys = ("pw_scaled", "f0_scaled")`` (the gin's order; stack i reads key i);
  ``pw_scaled = power_db / ld_range_db + 1`` (``ld_range_db`` is ddsp's range_db, 80, and
  ``min_db`` = -80 the power floor for VST configs).
- ``power_frame_size``: ``OnlineF0PowerPreprocessor.frame_size`` (1024), the samples per
  centred power frame; None for loudness models. ``loudness_version`` is ``"power"``:
  computing loudness for a VST model is an error, not a silent fallback.
- ``reverb_type``: ``"ir"`` (trainable ``Reverb``, the IR is the variable
  ``reverb_ir_name``) or ``"filtered_noise"`` (``FilteredNoiseReverb``: the IR is
  ``reverb_length`` samples of white noise filtered by ``exp_sigmoid(magnitudes +
  reverb_initial_bias)``, the variable ``reverb_magnitudes_name`` of shape
  ``[reverb_n_frames, reverb_n_filter_banks]``, with window ``reverb_window_size``).
  ``reverb`` stays the "has a reverb" flag for both.
- ``crop_size`` and ``crop_location`` (``Crop.frame_size``, ``Crop.crop_location``:
  ``'back'`` drops the last ``crop_size`` samples, ``'front'`` the first, ``'mid'`` half
  at each end); ``crop_size = 0`` means no ``Crop``.
- ``n_samples`` is the training example's synthesis length (64320 in vst.gin: 201 frames).

:meth:`ModelConfig.vst` gives vst.gin's defaults for training a fresh model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ddsp_pd.errors import CheckpointError
from ddsp_pd.gin_config import GinReference, has_selector, lookup, references

__all__ = [
    "CROP_LOCATIONS",
    "ERAS",
    "REVERB_TYPES",
    "ModelConfig",
    "config_from_gin",
    "detect_era",
    "parameter_count",
]

ERAS = ("0.x", "1.x", "2.x", "vst")
_KNOWN_OUTPUTS = ("amps", "harmonic_distribution", "noise_magnitudes")
_KNOWN_INPUTS = ("f0_scaled", "ld_scaled", "pw_scaled")
_PROCESSORS_OK = {
    "Harmonic",
    "Additive",
    "FilteredNoise",
    "Add",
    "Reverb",
    "FilteredNoiseReverb",
    "Crop",
}
REVERB_TYPES = ("ir", "filtered_noise")
CROP_LOCATIONS = ("back", "front", "mid")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and rates of one model. Frame features are at ``frame_rate``; audio at
    ``sample_rate``; ``hop = sample_rate / frame_rate`` samples per frame.

    ``stack_names``, ``rnn_name`` and ``reverb_ir_name`` are the variable-name prefixes of
    the checkpoint layout (0.x: ``decoder/f_stack``, ``decoder/rnn/cell``,
    ``processor_group/processors/3/ir``; later: ``decoder/input_stacks/0``,
    ``decoder/rnn/rnn/cell``, ``processor_group/reverb/ir``).
    """

    era: str = "2.x"
    sample_rate: int = 16000
    frame_rate: float = 250.0
    hop: int = 64
    n_samples: int | None = 64000
    time_steps: int | None = 1000
    input_keys: tuple[str, ...] = ("ld_scaled", "f0_scaled")
    ch: int = 512
    rnn_channels: int = 512
    rnn_type: str = "gru"
    layers_per_stack: int = 3
    output_splits: tuple[tuple[str, int], ...] = (
        ("amps", 1),
        ("harmonic_distribution", 60),
        ("noise_magnitudes", 65),
    )
    amp_resample_method: str = "window"
    normalize_below_nyquist: bool = True
    noise_initial_bias: float = -5.0
    noise_window_size: int = 0
    exp_sigmoid_exponent: float = 10.0
    exp_sigmoid_max_value: float = 2.0
    exp_sigmoid_threshold: float = 1e-7
    reverb: bool = True
    reverb_length: int = 48000
    reverb_add_dry: bool = True
    loudness_version: str = "v3"
    ld_range_db: float = 80.0
    min_db: float = -80.0
    compute_loudness: bool = True
    stack_names: tuple[str, ...] = ("decoder/input_stacks/0", "decoder/input_stacks/1")
    rnn_name: str = "decoder/rnn/rnn/cell"
    reverb_ir_name: str | None = "processor_group/reverb/ir"
    notes: tuple[str, ...] = field(default=(), compare=False)
    # DDSP-VST (era "vst") fields; see the module docstring. Defaults keep solo models as
    # they were.
    power_frame_size: int | None = None
    reverb_type: str = "ir"
    reverb_n_frames: int = 0
    reverb_n_filter_banks: int = 0
    reverb_window_size: int = 257
    reverb_initial_bias: float = -3.0
    reverb_magnitudes_name: str | None = None
    crop_size: int = 0
    crop_location: str = "back"

    @property
    def level(self) -> str:
        """The level feature the model takes: ``'power'`` (VST) or ``'loudness'``."""
        return "power" if self.power_frame_size is not None else "loudness"

    @property
    def level_scaled_key(self) -> str:
        """The decoder input that carries the level: ``'pw_scaled'`` or ``'ld_scaled'``."""
        return "pw_scaled" if self.level == "power" else "ld_scaled"

    @property
    def n_harmonics(self) -> int:
        """Number of harmonics of the harmonic synthesiser."""
        return dict(self.output_splits)["harmonic_distribution"]

    @property
    def n_noise_bands(self) -> int:
        """Number of frequency bands of the filtered-noise synthesiser."""
        return dict(self.output_splits)["noise_magnitudes"]

    @property
    def n_outputs(self) -> int:
        """Width of the decoder's final dense layer."""
        return sum(size for _, size in self.output_splits)

    @property
    def ld_scale(self) -> float:
        """``ld_scaled = loudness_db / ld_scale + 1``."""
        return self.ld_range_db

    @classmethod
    def solo_instrument(cls, **overrides: Any) -> ModelConfig:
        """ddsp 3.x ``solo_instrument.gin`` defaults (for training a fresh model)."""
        config = cls(**overrides)
        _validate(config)
        return config

    @classmethod
    def vst(cls, **overrides: Any) -> ModelConfig:
        """ddsp 3.7 ``models/vst/vst.gin`` defaults (for training a fresh DDSP-VST model)."""
        fields: dict[str, Any] = dict(
            era="vst",
            sample_rate=16000,
            frame_rate=50.0,
            hop=320,
            n_samples=64320,
            time_steps=None,
            input_keys=("pw_scaled", "f0_scaled"),
            ch=256,
            rnn_channels=512,
            layers_per_stack=1,
            amp_resample_method="linear",
            reverb=True,
            reverb_type="filtered_noise",
            reverb_length=24000,
            reverb_n_frames=500,
            reverb_n_filter_banks=32,
            reverb_window_size=257,
            reverb_initial_bias=-3.0,
            reverb_ir_name=None,
            reverb_magnitudes_name="processor_group/reverb/magnitudes",
            loudness_version="power",
            ld_range_db=80.0,
            min_db=-80.0,
            compute_loudness=False,
            power_frame_size=1024,
            crop_size=320,
            crop_location="back",
        )
        fields.update(overrides)
        config = cls(**fields)
        _validate(config)
        return config

    def with_sizes(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        config = replace(self, **changes)
        _validate(config)
        return config


def _validate(config: ModelConfig) -> None:
    if config.era not in ERAS:
        raise CheckpointError(f"unsupported ddsp era {config.era!r}")
    _validate_vst_fields(config)
    if config.sample_rate <= 0 or config.frame_rate <= 0:
        raise CheckpointError("sample rate and frame rate must be positive")
    if abs(config.hop * config.frame_rate - config.sample_rate) > 1e-6 * config.sample_rate:
        raise CheckpointError(
            f"sample rate {config.sample_rate} is not a whole number of frames of "
            f"{config.frame_rate:g} per second"
        )
    names = [name for name, _ in config.output_splits]
    if sorted(names) != sorted(_KNOWN_OUTPUTS):
        raise CheckpointError(
            f"decoder outputs {names} are not supported (need exactly {list(_KNOWN_OUTPUTS)})"
        )
    for key in config.input_keys:
        if key not in _KNOWN_INPUTS:
            raise CheckpointError(
                f"decoder input {key!r} is not supported (only f0_scaled and ld_scaled; "
                "models with a latent z encoder cannot be used)"
            )
    if len(set(config.input_keys)) != len(config.input_keys) or not config.input_keys:
        raise CheckpointError(f"bad decoder input keys {config.input_keys}")
    if len(config.stack_names) != len(config.input_keys):
        raise CheckpointError("one input stack per decoder input key is needed")
    if config.rnn_type != "gru":
        raise CheckpointError(f"rnn_type {config.rnn_type!r} is not supported (only 'gru')")
    if config.amp_resample_method not in ("window", "linear"):
        raise CheckpointError(
            f"amp_resample_method {config.amp_resample_method!r} is not supported"
        )
    if config.n_noise_bands < 2:
        raise CheckpointError("filtered noise needs at least 2 bands")
    if config.loudness_version not in ("v1", "v3", "power"):
        raise CheckpointError(f"unknown loudness version {config.loudness_version!r}")
    for name, value in (
        ("ch", config.ch),
        ("rnn_channels", config.rnn_channels),
        ("layers_per_stack", config.layers_per_stack),
        ("n_harmonics", config.n_harmonics),
    ):
        if value < 1:
            raise CheckpointError(f"{name} must be positive, got {value}")
    if config.reverb and config.reverb_length < 1:
        raise CheckpointError("reverb_length must be positive")


def _validate_vst_fields(config: ModelConfig) -> None:
    """The power, FilteredNoiseReverb and Crop fields agree with each other."""
    power = config.power_frame_size is not None
    if power != (config.era == "vst"):
        raise CheckpointError("power conditioning (power_frame_size) goes with era 'vst' only")
    if power != (config.loudness_version == "power"):
        raise CheckpointError("loudness_version 'power' goes with power_frame_size")
    level_key = "pw_scaled" if power else "ld_scaled"
    wrong = [k for k in config.input_keys if k not in ("f0_scaled", level_key)]
    if wrong:
        kind = "power (DDSP-VST)" if power else "loudness"
        raise CheckpointError(f"decoder input {wrong[0]!r} does not fit a {kind} model")
    if power:
        size = config.power_frame_size
        assert size is not None
        if size <= 0 or size % 2 or size < config.hop:
            raise CheckpointError(
                f"power frame_size {size} must be even, positive and at least the hop "
                f"({config.hop})"
            )
    if config.reverb_type not in REVERB_TYPES:
        raise CheckpointError(f"reverb type {config.reverb_type!r} is not supported")
    if config.reverb and config.reverb_type == "filtered_noise":
        for name, value in (
            ("FilteredNoiseReverb.n_frames", config.reverb_n_frames),
            ("FilteredNoiseReverb.n_filter_banks", config.reverb_n_filter_banks),
        ):
            if value < 1:
                raise CheckpointError(f"{name} must be positive, got {value}")
        if config.reverb_n_filter_banks < 2:
            raise CheckpointError("FilteredNoiseReverb needs at least 2 filter banks")
        if not config.reverb_magnitudes_name:
            raise CheckpointError("a FilteredNoiseReverb needs its magnitudes variable name")
    if config.crop_size < 0:
        raise CheckpointError(f"Crop.frame_size must not be negative, got {config.crop_size}")
    if config.crop_location not in CROP_LOCATIONS:
        raise CheckpointError(
            f"Crop.crop_location {config.crop_location!r} is not supported "
            f"(one of {', '.join(CROP_LOCATIONS)})"
        )


# --------------------------------------------------------------------------- era


def _all_reference_names(bindings: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for value in bindings.values():
        names.update(ref.short_name for ref in references(value))
    return names


def detect_era(bindings: Mapping[str, Any]) -> str:
    """Which ddsp release wrote these bindings: ``'0.x'``, ``'1.x'``, ``'2.x'`` or ``'vst'``.

    The rules (see the reference notes, section 2): ``OnlineF0PowerPreprocessor`` or a
    ``frame_size`` macro -> DDSP-VST; ``DefaultPreprocessor`` or ``Additive`` -> 0.x;
    ``F0LoudnessPreprocessor`` with a ``compute_loudness`` binding -> 2.x (2.0 to 3.7),
    without -> 1.x. Anything else raises :class:`CheckpointError`.
    """
    refs = _all_reference_names(bindings)

    def mentions(name: str) -> bool:
        return name in refs or has_selector(bindings, name)

    if mentions("OnlineF0PowerPreprocessor") or "frame_size" in bindings:
        return "vst"
    if mentions("DefaultPreprocessor") or mentions("Additive"):
        return "0.x"
    if mentions("F0LoudnessPreprocessor"):
        if lookup(bindings, "F0LoudnessPreprocessor", "compute_loudness") is not None:
            return "2.x"
        return "1.x"
    preprocessor = bindings.get("Autoencoder.preprocessor")
    what = f" (preprocessor {preprocessor})" if preprocessor is not None else ""
    raise CheckpointError(
        "cannot tell the ddsp version of this model: the gin config names none of "
        f"F0LoudnessPreprocessor, DefaultPreprocessor, OnlineF0PowerPreprocessor{what}"
    )


# ------------------------------------------------------------------ variable shapes

_STACK_LAYER = re.compile(
    r"^(?P<stack>.+)/layer_with_weights-(?P<i>\d+)/layer_with_weights-0/kernel$"
)


def _stack_layers(shapes: Mapping[str, Sequence[int]], stack: str) -> list[Sequence[int]]:
    """Dense kernel shapes of an Fc stack, in layer order."""
    found: dict[int, Sequence[int]] = {}
    for name, shape in shapes.items():
        match = _STACK_LAYER.match(name)
        if match and match.group("stack") == stack:
            found[int(match.group("i"))] = shape
    if sorted(found) != list(range(len(found))):
        raise CheckpointError(f"checkpoint stack {stack} has missing layers")
    return [found[i] for i in sorted(found)]


def _find_layout(
    shapes: Mapping[str, Sequence[int]], input_keys: Sequence[str], dag_reverb_index: int | None
) -> tuple[tuple[str, ...], str, str | None]:
    """Variable-name prefixes for the input stacks, the GRU cell and the reverb IR."""
    if any(n.startswith("decoder/input_stacks/") for n in shapes):
        stacks = tuple(f"decoder/input_stacks/{i}" for i in range(len(input_keys)))
    elif any(n.startswith("decoder/f_stack/") for n in shapes):
        # ddsp 0.x kept one named stack per input (f0 and loudness).
        legacy = {"f0_scaled": "decoder/f_stack", "ld_scaled": "decoder/l_stack"}
        stacks = tuple(legacy[k] for k in input_keys)
    else:
        raise CheckpointError("checkpoint has no RnnFcDecoder input stacks under model/decoder")
    for candidate in ("decoder/rnn/rnn/cell", "decoder/rnn/cell"):
        if f"{candidate}/recurrent_kernel" in shapes:
            rnn = candidate
            break
    else:
        raise CheckpointError("checkpoint has no GRU under model/decoder/rnn")
    reverb = None
    candidates = ["processor_group/reverb/ir"]
    if dag_reverb_index is not None:
        candidates.append(f"processor_group/processors/{dag_reverb_index}/ir")
    for candidate in candidates:
        if candidate in shapes:
            reverb = candidate
            break
    return stacks, rnn, reverb


def _check(name: str, from_gin: Any, from_vars: int, notes: list[str]) -> int:
    """Variables win; a gin value that disagrees with them is an error."""
    if from_gin is not None and int(from_gin) != int(from_vars):
        raise CheckpointError(
            f"gin says {name} = {from_gin} but the checkpoint variables have {from_vars}"
        )
    if from_gin is None:
        notes.append(f"{name} taken from the variables ({from_vars})")
    return int(from_vars)


# -------------------------------------------------------------------- from gin


def _decoder_sizes(
    shapes: Mapping[str, Sequence[int]],
    stack_name: str,
    rnn_name: str,
    from_gin: tuple[Any, Any, Any],
    output_splits: Sequence[tuple[str, int]],
    notes: list[str],
) -> tuple[int, int, int]:
    """The decoder's ``ch``, ``layers_per_stack`` and ``rnn_channels``, checked against the
    variable shapes (a size the gin lacks is taken from them), and its output width checked
    against ``output_splits``."""
    ch, layers_per_stack, rnn_channels = from_gin
    layers = _stack_layers(shapes, stack_name)
    if not layers:
        raise CheckpointError(f"checkpoint has no layers in {stack_name}")
    ch = _check("RnnFcDecoder.ch", ch, layers[0][-1], notes)
    layers_per_stack = _check("RnnFcDecoder.layers_per_stack", layers_per_stack, len(layers), notes)
    recurrent = shapes[f"{rnn_name}/recurrent_kernel"]
    rnn_channels = _check("RnnFcDecoder.rnn_channels", rnn_channels, recurrent[0], notes)
    dense_out = shapes.get("decoder/dense_out/kernel")
    if dense_out is None:
        raise CheckpointError("checkpoint has no decoder/dense_out layer")
    total = sum(size for _, size in output_splits)
    if int(dense_out[-1]) != total:
        raise CheckpointError(
            f"gin output_splits sum to {total} but the checkpoint's dense_out has "
            f"{dense_out[-1]} outputs"
        )
    return ch, layers_per_stack, rnn_channels


def _dag(bindings: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    dag = lookup(bindings, "ProcessorGroup", "dag")
    if dag is None:
        raise CheckpointError("gin config has no ProcessorGroup.dag: cannot tell the synthesis")
    steps = []
    for step in dag:
        if not isinstance(step, (list, tuple)) or not step:
            raise CheckpointError(f"cannot read ProcessorGroup.dag entry {step!r}")
        ref = step[0]
        if not isinstance(ref, GinReference):
            raise CheckpointError(f"cannot read ProcessorGroup.dag entry {step!r}")
        inputs = list(step[1]) if len(step) > 1 else []
        steps.append((ref.short_name, inputs))
    return steps


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _scale_fn_ok(value: Any) -> bool:
    return value is None or (isinstance(value, GinReference) and value.short_name == "exp_sigmoid")


def config_from_gin(
    bindings: Mapping[str, Any], shapes: Mapping[str, Sequence[int]] | None = None
) -> ModelConfig:
    """Build a :class:`ModelConfig` from gin bindings, checked against variable shapes.

    ``shapes`` maps checkpoint variable names (``model/`` and the attribute suffix removed)
    to their shapes; with it, sizes missing from the gin are taken from the variables and
    sizes that disagree raise :class:`CheckpointError`.
    """
    era = detect_era(bindings)
    if era == "vst":
        return _vst_config_from_gin(bindings, shapes)
    notes: list[str] = []

    encoder = bindings.get("Autoencoder.encoder")
    if encoder is not None:
        raise CheckpointError(f"models with an encoder ({encoder}) are not supported")
    decoder = bindings.get("Autoencoder.decoder")
    if isinstance(decoder, GinReference) and decoder.short_name != "RnnFcDecoder":
        raise CheckpointError(f"decoder {decoder} is not supported (only RnnFcDecoder)")

    dag = _dag(bindings)
    kinds = [name for name, _ in dag]
    unknown = [name for name in kinds if name not in _PROCESSORS_OK]
    if unknown:
        raise CheckpointError(f"processors {unknown} are not supported")
    vst_only = [name for name in kinds if name in ("FilteredNoiseReverb", "Crop")]
    if vst_only:
        raise CheckpointError(
            f"processors {vst_only} are supported only in DDSP-VST (power) models"
        )
    synth = "Additive" if "Additive" in kinds else "Harmonic"
    if synth not in kinds or "FilteredNoise" not in kinds:
        raise CheckpointError("the model needs both a harmonic and a filtered-noise synthesiser")
    reverb_index = kinds.index("Reverb") if "Reverb" in kinds else None
    if reverb_index is not None and lookup(bindings, "Reverb", "trainable", True) is not True:
        raise CheckpointError("a non-trainable Reverb (IR from the decoder) is not supported")

    preproc = "DefaultPreprocessor" if era == "0.x" else "F0LoudnessPreprocessor"
    sample_rate = _first(
        lookup(bindings, synth, "sample_rate"),
        lookup(bindings, preproc, "sample_rate"),
        lookup(bindings, "TFRecordProvider", "sample_rate"),
        lookup(bindings, "SoloViolin", "sample_rate"),
    )
    if sample_rate is None:
        raise CheckpointError("gin config gives no sample rate")
    sample_rate = int(sample_rate)
    n_samples = _first(
        lookup(bindings, synth, "n_samples"), lookup(bindings, "FilteredNoise", "n_samples")
    )
    time_steps = lookup(bindings, preproc, "time_steps")
    frame_rate = lookup(bindings, preproc, "frame_rate")
    if frame_rate is None and n_samples and time_steps:
        # What the model itself does: time_steps frames upsampled to n_samples samples.
        frame_rate = time_steps * sample_rate / n_samples
    if frame_rate is None:
        frame_rate = _first(
            lookup(bindings, "TFRecordProvider", "frame_rate"),
            lookup(bindings, "SoloViolin", "frame_rate"),
        )
    if frame_rate is None:
        raise CheckpointError("gin config gives no frame rate (nor time_steps and n_samples)")
    frame_rate = float(frame_rate)
    hop = round(sample_rate / frame_rate)
    if hop < 1 or abs(hop * frame_rate - sample_rate) > 1e-6 * sample_rate:
        raise CheckpointError(
            f"sample rate {sample_rate} is not a whole number of frames at {frame_rate:g}/s"
        )

    input_keys = lookup(bindings, "RnnFcDecoder", "input_keys")
    if input_keys is None:
        input_keys = ("f0_scaled", "ld_scaled") if era == "0.x" else ("ld_scaled", "f0_scaled")
        notes.append(f"input_keys not in gin; using the ddsp default {input_keys}")
    input_keys = tuple(input_keys)
    output_splits = lookup(bindings, "RnnFcDecoder", "output_splits")
    if output_splits is None:
        raise CheckpointError("gin config has no RnnFcDecoder.output_splits")
    output_splits = tuple((str(name), int(size)) for name, size in output_splits)

    for fn in (lookup(bindings, synth, "scale_fn"), lookup(bindings, "FilteredNoise", "scale_fn")):
        if not _scale_fn_ok(fn):
            raise CheckpointError(f"scale_fn {fn} is not supported (only exp_sigmoid)")

    loudness_v1 = era in ("0.x", "1.x")
    compute_loudness = bool(lookup(bindings, "F0LoudnessPreprocessor", "compute_loudness", False))
    ch = lookup(bindings, "RnnFcDecoder", "ch")
    rnn_channels = lookup(bindings, "RnnFcDecoder", "rnn_channels")
    layers_per_stack = lookup(bindings, "RnnFcDecoder", "layers_per_stack")
    reverb_length = lookup(bindings, "Reverb", "reverb_length") if reverb_index is not None else 0

    stack_names: tuple[str, ...] = tuple(
        f"decoder/input_stacks/{i}" for i in range(len(input_keys))
    )
    rnn_name = "decoder/rnn/rnn/cell"
    reverb_ir_name = "processor_group/reverb/ir" if reverb_index is not None else None
    if shapes is not None:
        stack_names, rnn_name, reverb_ir_name = _find_layout(shapes, input_keys, reverb_index)
        ch, layers_per_stack, rnn_channels = _decoder_sizes(
            shapes, stack_names[0], rnn_name, (ch, layers_per_stack, rnn_channels),
            output_splits, notes,
        )  # fmt: skip
        if reverb_index is not None:
            if reverb_ir_name is None:
                raise CheckpointError("gin config has a Reverb but the checkpoint has no reverb ir")
            reverb_length = _check(
                "Reverb.reverb_length", reverb_length, shapes[reverb_ir_name][-1], notes
            )
        _check_all_shapes(
            shapes, stack_names, rnn_name, int(ch), int(rnn_channels), len(input_keys)
        )
    missing = [
        name
        for name, value in (
            ("RnnFcDecoder.ch", ch),
            ("RnnFcDecoder.rnn_channels", rnn_channels),
            ("RnnFcDecoder.layers_per_stack", layers_per_stack),
        )
        if value is None
    ]
    if missing:
        raise CheckpointError(f"gin config lacks {', '.join(missing)}")
    if reverb_index is not None and not reverb_length:
        raise CheckpointError("gin config lacks Reverb.reverb_length")

    config = ModelConfig(
        era=era,
        sample_rate=sample_rate,
        frame_rate=frame_rate,
        hop=hop,
        n_samples=int(n_samples) if n_samples else None,
        time_steps=int(time_steps) if time_steps else None,
        input_keys=input_keys,
        ch=int(ch),
        rnn_channels=int(rnn_channels),
        rnn_type=str(lookup(bindings, "RnnFcDecoder", "rnn_type", "gru")),
        layers_per_stack=int(layers_per_stack),
        output_splits=output_splits,
        # ddsp 0.x's Additive always upsampled amplitudes with windows.
        amp_resample_method=str(lookup(bindings, synth, "amp_resample_method", "window")),
        normalize_below_nyquist=bool(lookup(bindings, synth, "normalize_below_nyquist", True)),
        noise_initial_bias=float(lookup(bindings, "FilteredNoise", "initial_bias", -5.0)),
        noise_window_size=int(lookup(bindings, "FilteredNoise", "window_size", 0) or 0),
        exp_sigmoid_exponent=float(lookup(bindings, "exp_sigmoid", "exponent", 10.0)),
        exp_sigmoid_max_value=float(lookup(bindings, "exp_sigmoid", "max_value", 2.0)),
        exp_sigmoid_threshold=float(lookup(bindings, "exp_sigmoid", "threshold", 1e-7)),
        reverb=reverb_index is not None,
        reverb_length=int(reverb_length or 0),
        reverb_add_dry=bool(lookup(bindings, "Reverb", "add_dry", True)),
        loudness_version="v1" if loudness_v1 else "v3",
        ld_range_db=120.0 if loudness_v1 else 80.0,
        min_db=-120.0 if loudness_v1 else -80.0,
        compute_loudness=compute_loudness,
        stack_names=stack_names,
        rnn_name=rnn_name,
        reverb_ir_name=reverb_ir_name,
        notes=tuple(notes),
    )
    _validate(config)
    return config


# ------------------------------------------------------------------- DDSP-VST


def _decoder_checks(bindings: Mapping[str, Any]) -> None:
    encoder = bindings.get("Autoencoder.encoder")
    if encoder is not None:
        raise CheckpointError(f"models with an encoder ({encoder}) are not supported")
    decoder = bindings.get("Autoencoder.decoder")
    if isinstance(decoder, GinReference) and decoder.short_name != "RnnFcDecoder":
        raise CheckpointError(f"decoder {decoder} is not supported (only RnnFcDecoder)")


def _vst_dag(bindings: Mapping[str, Any]) -> tuple[bool, bool]:
    """Check a VST processor DAG; returns (has FilteredNoiseReverb, has Crop).

    Supported: Harmonic, FilteredNoise, Add, then optionally FilteredNoiseReverb (trainable)
    and Crop, in that order, each reading the previous step's signal.
    """
    dag = _dag(bindings)
    kinds = [name for name, _ in dag]
    unknown = [name for name in kinds if name not in _PROCESSORS_OK - {"Additive", "Reverb"}]
    if unknown:
        raise CheckpointError(f"processors {unknown} are not supported in a DDSP-VST model")
    if kinds[:3] not in (
        ["Harmonic", "FilteredNoise", "Add"],
        ["FilteredNoise", "Harmonic", "Add"],
    ):
        raise CheckpointError(
            f"DDSP-VST processors {kinds} are not supported: expected Harmonic, FilteredNoise "
            "and Add first"
        )
    rest = kinds[3:]
    if rest not in ([], ["FilteredNoiseReverb"], ["Crop"], ["FilteredNoiseReverb", "Crop"]):
        raise CheckpointError(
            f"DDSP-VST processors after Add {rest} are not supported "
            "(FilteredNoiseReverb, then Crop)"
        )
    has_reverb = "FilteredNoiseReverb" in rest
    if has_reverb and lookup(bindings, "FilteredNoiseReverb", "trainable", False) is not True:
        raise CheckpointError(
            "a non-trainable FilteredNoiseReverb (magnitudes from the decoder) is not supported"
        )
    return has_reverb, "Crop" in rest


def _require(bindings: Mapping[str, Any], wanted: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The bound values of ``Class.param`` pairs; all missing ones named in one error."""
    found = {f"{name}.{param}": lookup(bindings, name, param) for name, param in wanted}
    missing = [key for key, value in found.items() if value is None]
    if missing:
        raise CheckpointError(f"DDSP-VST gin config lacks {', '.join(missing)}")
    return found


def _vst_config_from_gin(
    bindings: Mapping[str, Any], shapes: Mapping[str, Sequence[int]] | None
) -> ModelConfig:
    """:func:`config_from_gin` for ``models/vst/vst.gin`` models (era ``'vst'``).

    Every rate and size the render needs must be bound in the gin (ddsp's operative config
    binds them all, defaults included); decoder sizes the variables imply are checked
    against them, and a missing decoder size is taken from the variables with a note.
    """
    notes: list[str] = []
    _decoder_checks(bindings)
    has_reverb, has_crop = _vst_dag(bindings)
    pre = "OnlineF0PowerPreprocessor"
    wanted = [
        (pre, "frame_rate"),
        (pre, "frame_size"),
        ("Harmonic", "sample_rate"),
        ("RnnFcDecoder", "input_keys"),
        ("RnnFcDecoder", "output_splits"),
    ]
    if has_reverb:
        wanted.append(("FilteredNoiseReverb", "reverb_length"))
    if has_crop:
        wanted += [("Crop", "frame_size"), ("Crop", "crop_location")]
    found = _require(bindings, wanted)
    if str(lookup(bindings, pre, "padding", "center")) != "center":
        raise CheckpointError(
            f"{pre}.padding {lookup(bindings, pre, 'padding')!r} is not supported (only 'center')"
        )
    if lookup(bindings, pre, "compute_f0", False):
        notes.append("the model computes f0 with CREPE itself; ddsp-pd's tracker is used instead")
    sample_rate = int(found["Harmonic.sample_rate"])
    frame_rate = float(found[f"{pre}.frame_rate"])
    hop = round(sample_rate / frame_rate) if frame_rate > 0 else 0
    if hop < 1 or abs(hop * frame_rate - sample_rate) > 1e-6 * sample_rate:
        raise CheckpointError(
            f"sample rate {sample_rate} is not a whole number of frames at {frame_rate:g}/s"
        )
    input_keys = tuple(str(k) for k in found["RnnFcDecoder.input_keys"])
    if sorted(input_keys) != ["f0_scaled", "pw_scaled"]:
        raise CheckpointError(
            f"DDSP-VST decoder inputs {list(input_keys)} are not supported "
            "(need pw_scaled and f0_scaled)"
        )
    output_splits = tuple(
        (str(name), int(size)) for name, size in found["RnnFcDecoder.output_splits"]
    )
    for selector in ("Harmonic", "FilteredNoise", "FilteredNoiseReverb"):
        fn = lookup(bindings, selector, "scale_fn")
        if not _scale_fn_ok(fn):
            raise CheckpointError(f"{selector}.scale_fn {fn} is not supported (only exp_sigmoid)")

    ch = lookup(bindings, "RnnFcDecoder", "ch")
    rnn_channels = lookup(bindings, "RnnFcDecoder", "rnn_channels")
    layers_per_stack = lookup(bindings, "RnnFcDecoder", "layers_per_stack")
    n_frames_rev = lookup(bindings, "FilteredNoiseReverb", "n_frames")
    n_banks = lookup(bindings, "FilteredNoiseReverb", "n_filter_banks")
    stack_names = tuple(f"decoder/input_stacks/{i}" for i in range(len(input_keys)))
    rnn_name = "decoder/rnn/rnn/cell"
    magnitudes_name = "processor_group/reverb/magnitudes" if has_reverb else None
    if shapes is not None:
        stack_names, rnn_name, _ = _find_layout(shapes, input_keys, None)
        ch, layers_per_stack, rnn_channels = _decoder_sizes(
            shapes, stack_names[0], rnn_name, (ch, layers_per_stack, rnn_channels),
            output_splits, notes,
        )  # fmt: skip
        if has_reverb:
            magnitudes_name = _find_magnitudes(shapes, bindings)
            grid = shapes[magnitudes_name]
            if len(grid) != 2:
                raise CheckpointError(
                    f"reverb magnitudes {magnitudes_name} have shape {list(grid)}, "
                    "expected [n_frames, n_filter_banks]"
                )
            n_frames_rev = _check("FilteredNoiseReverb.n_frames", n_frames_rev, grid[0], notes)
            n_banks = _check("FilteredNoiseReverb.n_filter_banks", n_banks, grid[1], notes)
        _check_all_shapes(
            shapes, stack_names, rnn_name, int(ch), int(rnn_channels), len(input_keys)
        )
    missing = [
        name
        for name, value in (
            ("RnnFcDecoder.ch", ch),
            ("RnnFcDecoder.rnn_channels", rnn_channels),
            ("RnnFcDecoder.layers_per_stack", layers_per_stack),
            ("FilteredNoiseReverb.n_frames", n_frames_rev if has_reverb else 0),
            ("FilteredNoiseReverb.n_filter_banks", n_banks if has_reverb else 0),
        )
        if value is None
    ]
    if missing:
        raise CheckpointError(f"DDSP-VST gin config lacks {', '.join(missing)}")
    n_samples = _first(
        lookup(bindings, "Harmonic", "n_samples"), lookup(bindings, "FilteredNoise", "n_samples")
    )
    config = ModelConfig(
        era="vst",
        sample_rate=sample_rate,
        frame_rate=frame_rate,
        hop=hop,
        n_samples=int(n_samples) if n_samples else None,
        time_steps=None,
        input_keys=input_keys,
        ch=int(ch),
        rnn_channels=int(rnn_channels),
        rnn_type=str(lookup(bindings, "RnnFcDecoder", "rnn_type", "gru")),
        layers_per_stack=int(layers_per_stack),
        output_splits=output_splits,
        amp_resample_method=str(lookup(bindings, "Harmonic", "amp_resample_method", "window")),
        normalize_below_nyquist=bool(lookup(bindings, "Harmonic", "normalize_below_nyquist", True)),
        noise_initial_bias=float(lookup(bindings, "FilteredNoise", "initial_bias", -5.0)),
        noise_window_size=int(lookup(bindings, "FilteredNoise", "window_size", 0) or 0),
        exp_sigmoid_exponent=float(lookup(bindings, "exp_sigmoid", "exponent", 10.0)),
        exp_sigmoid_max_value=float(lookup(bindings, "exp_sigmoid", "max_value", 2.0)),
        exp_sigmoid_threshold=float(lookup(bindings, "exp_sigmoid", "threshold", 1e-7)),
        reverb=has_reverb,
        reverb_length=int(found.get("FilteredNoiseReverb.reverb_length") or 0),
        reverb_add_dry=bool(lookup(bindings, "FilteredNoiseReverb", "add_dry", True)),
        loudness_version="power",
        ld_range_db=80.0,
        min_db=-80.0,
        compute_loudness=False,
        stack_names=stack_names,
        rnn_name=rnn_name,
        reverb_ir_name=None,
        notes=tuple(notes),
        power_frame_size=int(found[f"{pre}.frame_size"]),
        reverb_type="filtered_noise",
        reverb_n_frames=int(n_frames_rev or 0),
        reverb_n_filter_banks=int(n_banks or 0),
        reverb_window_size=int(lookup(bindings, "FilteredNoiseReverb", "window_size", 257)),
        reverb_initial_bias=float(lookup(bindings, "FilteredNoiseReverb", "initial_bias", -3.0)),
        reverb_magnitudes_name=magnitudes_name,
        crop_size=int(found["Crop.frame_size"]) if has_crop else 0,
        crop_location=str(found["Crop.crop_location"]) if has_crop else "back",
    )
    _validate(config)
    return config


def _find_magnitudes(shapes: Mapping[str, Sequence[int]], bindings: Mapping[str, Any]) -> str:
    """The FilteredNoiseReverb magnitudes variable: under its gin name, else ``reverb``."""
    names = []
    name = lookup(bindings, "FilteredNoiseReverb", "name")
    if isinstance(name, str) and name:
        names.append(f"processor_group/{name}/magnitudes")
    names.append("processor_group/reverb/magnitudes")
    for candidate in names:
        if candidate in shapes:
            return candidate
    raise CheckpointError(
        "gin config has a FilteredNoiseReverb but the checkpoint has no reverb magnitudes "
        f"({names[0]})"
    )


def _expect(shapes: Mapping[str, Sequence[int]], name: str, shape: tuple[int, ...]) -> None:
    got = shapes.get(name)
    if got is None:
        raise CheckpointError(f"checkpoint lacks variable {name}")
    if tuple(int(d) for d in got) != shape:
        raise CheckpointError(
            f"checkpoint variable {name} has shape {list(got)}, expected {list(shape)}"
        )


def _check_all_shapes(
    shapes: Mapping[str, Sequence[int]],
    stack_names: Sequence[str],
    rnn_name: str,
    ch: int,
    units: int,
    n_inputs: int,
) -> None:
    """Every decoder variable exists with the shape the sizes imply."""
    layers = len(_stack_layers(shapes, stack_names[0]))

    def fc_stack(prefix: str, n_in: int) -> None:
        for i in range(layers):
            base = f"{prefix}/layer_with_weights-{i}"
            _expect(shapes, f"{base}/layer_with_weights-0/kernel", (n_in if i == 0 else ch, ch))
            _expect(shapes, f"{base}/layer_with_weights-0/bias", (ch,))
            _expect(shapes, f"{base}/layer_with_weights-1/gamma", (ch,))
            _expect(shapes, f"{base}/layer_with_weights-1/beta", (ch,))

    for prefix in stack_names:
        fc_stack(prefix, 1)
    _expect(shapes, f"{rnn_name}/kernel", (n_inputs * ch, 3 * units))
    _expect(shapes, f"{rnn_name}/recurrent_kernel", (units, 3 * units))
    _expect(shapes, f"{rnn_name}/bias", (2, 3 * units))
    fc_stack("decoder/out_stack", n_inputs * ch + units)
    dense_out = shapes["decoder/dense_out/kernel"]
    _expect(shapes, "decoder/dense_out/kernel", (ch, int(dense_out[-1])))
    _expect(shapes, "decoder/dense_out/bias", (int(dense_out[-1]),))


def parameter_count(shapes: Mapping[str, Sequence[int]]) -> int:
    """Total number of scalars in the given variables."""
    total = 0
    for shape in shapes.values():
        size = 1
        for dim in shape:
            size *= int(dim)
        total += size
    return total
