"""Every size and rate of a DDSP model, read from its gin bindings and checked against
its variables, and the ddsp era the model comes from.

Supported: the ``solo_instrument`` family (``RnnFcDecoder`` -> ``Harmonic``/``Additive`` +
``FilteredNoise`` -> ``Add`` -> trainable ``Reverb``) from ddsp 0.x, 1.x and 2.x-3.x.
DDSP-VST models and anything with an encoder or other processors are refused with a
message that says what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ddsp_pd.errors import CheckpointError
from ddsp_pd.gin_config import GinReference, has_selector, lookup, references

__all__ = [
    "ERAS",
    "ModelConfig",
    "config_from_gin",
    "detect_era",
    "parameter_count",
]

ERAS = ("0.x", "1.x", "2.x", "vst")
_KNOWN_OUTPUTS = ("amps", "harmonic_distribution", "noise_magnitudes")
_KNOWN_INPUTS = ("f0_scaled", "ld_scaled")
_PROCESSORS_OK = {"Harmonic", "Additive", "FilteredNoise", "Add", "Reverb"}


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

    def with_sizes(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        config = replace(self, **changes)
        _validate(config)
        return config


def _validate(config: ModelConfig) -> None:
    if config.era not in ("0.x", "1.x", "2.x"):
        raise CheckpointError(f"unsupported ddsp era {config.era!r}")
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
    if config.loudness_version not in ("v1", "v3"):
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
        raise CheckpointError(
            "this is a DDSP-VST model (OnlineF0PowerPreprocessor): power conditioning, "
            "FilteredNoiseReverb and Crop are not supported; use a solo_instrument model"
        )
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
        layers = _stack_layers(shapes, stack_names[0])
        if not layers:
            raise CheckpointError(f"checkpoint has no layers in {stack_names[0]}")
        ch = _check("RnnFcDecoder.ch", ch, layers[0][-1], notes)
        layers_per_stack = _check(
            "RnnFcDecoder.layers_per_stack", layers_per_stack, len(layers), notes
        )
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
