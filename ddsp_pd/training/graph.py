"""The object graph of a ddsp ``Autoencoder`` checkpoint, described as data.

An object-based TensorFlow checkpoint stores, beside the variables, the graph of objects that
leads to them (``_CHECKPOINTABLE_OBJECT_GRAPH``). Restoring walks that graph by child name
from the Python objects that exist at the time. ddsp restores *before* it builds its model
(``Model.restore``, ``AutoencoderInference``, ``ddsp_export``), and at that point its Keras
``Sequential`` stacks (``FcStack`` of ``Fc`` = Dense, LayerNormalization, Activation) expose
their layers only as ``layer-N``; once built they also expose ``layer_with_weights-K`` (K counts
only the layers that have weights). Keras writes both edges to the same object, and the
variable keys follow ``layer_with_weights-K`` because Keras lists that edge first. A graph
with only ``layer_with_weights-K`` edges leaves every stack unrestored in ddsp, silently.

This module describes the graph ddsp 3.7 writes for an ``Autoencoder`` with an
``RnnFcDecoder`` and a ``ProcessorGroup`` (checked against the real checkpoints in the
reference fixtures): a node is a ``dict`` from child name to child, in Keras' order; a child is
another node, or a ``str`` naming a variable (its ddsp name, e.g.
``decoder/rnn/rnn/cell/kernel``). The same node object under two names is one object with two
edges (``layer-0`` and ``layer_with_weights-0``; Reverb's ``ir`` and ``_ir``). Objects without
variables (lists, the preprocessor, the loss objects) are kept as empty nodes so every node on
a variable's path has the same children as in ddsp's own checkpoints.

New architectures are described by an :class:`Architecture` (number of input stacks, layers
per stack, and the processors of the DAG in order); processor kinds with variables are in
:data:`PROCESSOR_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ddsp_pd.config import ModelConfig

__all__ = [
    "PROCESSOR_KINDS",
    "SOLO_PROCESSORS",
    "VST_PROCESSORS",
    "Architecture",
    "Node",
    "Processor",
    "architecture_of",
    "model_graph",
    "variable_names",
]

#: A graph node: child name -> child node, or -> the ddsp name of a variable.
Node = dict[str, "Node | str"]


@dataclass(frozen=True)
class Processor:
    """One processor of ddsp's ``ProcessorGroup`` DAG: its ``name`` and its ddsp class."""

    name: str
    kind: str


#: The DAG of ``solo_instrument.gin``.
SOLO_PROCESSORS = (
    Processor("harmonic", "Harmonic"),
    Processor("filtered_noise", "FilteredNoise"),
    Processor("add", "Add"),
    Processor("reverb", "Reverb"),
)

#: The DAG of ddsp's ``models/vst/vst.gin``.
VST_PROCESSORS = (
    Processor("harmonic", "Harmonic"),
    Processor("filtered_noise", "FilteredNoise"),
    Processor("add", "Add"),
    Processor("reverb", "FilteredNoiseReverb"),
    Processor("crop", "Crop"),
)


@dataclass(frozen=True)
class Architecture:
    """What shapes the object graph: the ``RnnFcDecoder``'s stacks and the processors.

    ``n_input_stacks`` is the number of decoder input keys (one ``FcStack`` each);
    ``layers_per_stack`` the ``Fc`` layers in each stack and in the output stack.
    """

    n_input_stacks: int = 2
    layers_per_stack: int = 3
    processors: tuple[Processor, ...] = SOLO_PROCESSORS

    def __post_init__(self) -> None:
        if self.n_input_stacks < 1 or self.layers_per_stack < 1:
            raise ValueError("an RnnFcDecoder needs at least one input stack and one layer")
        names = [p.name for p in self.processors]
        if len(set(names)) != len(names):
            raise ValueError(f"processor names repeat: {names}")
        unknown = [p.kind for p in self.processors if p.kind not in PROCESSOR_KINDS]
        if unknown:
            raise ValueError(f"no object graph known for processor kinds {unknown}")


def architecture_of(config: ModelConfig) -> Architecture:
    """The :class:`Architecture` of a model config in the ddsp >= 1.0 layout.

    Older layouts (0.x: ``f_stack``, ``processors/3/ir``) are never written by ddsp-pd and
    raise ``ValueError``.
    """
    standard = tuple(f"decoder/input_stacks/{i}" for i in range(len(config.input_keys)))
    if config.stack_names != standard or config.rnn_name != "decoder/rnn/rnn/cell":
        raise ValueError(f"ddsp-pd writes only the ddsp >= 1.0 layout, not era {config.era}")
    if config.era == "vst":
        processors = VST_PROCESSORS
    elif config.reverb:
        processors = SOLO_PROCESSORS
    else:
        processors = SOLO_PROCESSORS[:-1]
    return Architecture(len(config.input_keys), config.layers_per_stack, processors)


# --------------------------------------------------------------------------- Keras layers


def _empty() -> Node:
    return {}


def _sequential(prefix: str, layers: list[tuple[bool, Callable[[str], Node]]]) -> Node:
    """A Keras ``Sequential``: ``layer-N`` for every layer, and ``layer_with_weights-K``
    before it for each layer that has weights. ``layers`` holds ``(has_weights, build)``;
    ``build`` gets the layer's path (through ``layer_with_weights-K`` when it has weights)."""
    node: Node = {}
    k = 0
    for n, (has_weights, build) in enumerate(layers):
        if has_weights:
            layer = build(f"{prefix}/layer_with_weights-{k}")
            node[f"layer_with_weights-{k}"] = layer
            k += 1
        else:
            layer = build(f"{prefix}/layer-{n}")
        node[f"layer-{n}"] = layer
    return node


def _dense(prefix: str) -> Node:
    return {"kernel": f"{prefix}/kernel", "bias": f"{prefix}/bias"}


def _layer_norm(prefix: str) -> Node:
    # ``axis`` is a tracked list of ints: an object without variables.
    return {"axis": _empty(), "gamma": f"{prefix}/gamma", "beta": f"{prefix}/beta"}


def _fc(prefix: str) -> Node:
    """ddsp's ``Fc``: Dense -> LayerNormalization -> Activation (no weights)."""
    return _sequential(prefix, [(True, _dense), (True, _layer_norm), (False, lambda _: _empty())])


def _fc_stack(prefix: str, layers: int) -> Node:
    return _sequential(prefix, [(True, _fc)] * layers)


def _gru_layer(prefix: str) -> Node:
    """ddsp's ``Rnn`` layer holding a Keras ``GRU`` as ``rnn``."""
    cell = f"{prefix}/rnn/cell"
    gru: Node = {
        "cell": {
            "kernel": f"{cell}/kernel",
            "recurrent_kernel": f"{cell}/recurrent_kernel",
            "bias": f"{cell}/bias",
        },
        "state_spec": _empty(),
    }
    return {"rnn": gru}


def _input_output_keys() -> Node:
    """The tracked key lists of ddsp's ``DictLayer`` (the preprocessor and the decoder)."""
    return {
        "default_input_keys": _empty(),
        "default_input_values": _empty(),
        "input_keys": _empty(),
        "output_keys": _empty(),
    }


def _decoder(arch: Architecture) -> Node:
    node = _input_output_keys()
    node["input_stacks"] = {
        str(i): _fc_stack(f"decoder/input_stacks/{i}", arch.layers_per_stack)
        for i in range(arch.n_input_stacks)
    }
    node["rnn"] = _gru_layer("decoder/rnn")
    node["out_stack"] = _fc_stack("decoder/out_stack", arch.layers_per_stack)
    node["dense_out"] = _dense("decoder/dense_out")
    return node


# --------------------------------------------------------------------------- processors


def _reverb(prefix: str) -> Node:
    ir: Node | str = f"{prefix}/ir"
    return {"ir": ir, "_ir": ir}


def _filtered_noise_reverb(prefix: str) -> Node:
    magnitudes: Node | str = f"{prefix}/magnitudes"
    return {"_synth": _empty(), "magnitudes": magnitudes, "_magnitudes": magnitudes}


#: Processor kind -> its node, given the processor's path (``processor_group/<name>``).
PROCESSOR_KINDS: dict[str, Callable[[str], Node]] = {
    "Harmonic": lambda _: _empty(),
    "FilteredNoise": lambda _: _empty(),
    "Add": lambda _: _empty(),
    "Crop": lambda _: _empty(),
    "Reverb": _reverb,
    "FilteredNoiseReverb": _filtered_noise_reverb,
}


def _processor_group(arch: Architecture) -> Node:
    # Each DAG entry is tracked as a tuple whose trackable element is its input-key list.
    node: Node = {"dag": {str(i): {"1": _empty()} for i in range(len(arch.processors))}}
    names = _empty()
    node["module_names"] = names
    for processor in arch.processors:
        node[processor.name] = PROCESSOR_KINDS[processor.kind](f"processor_group/{processor.name}")
    node["processor_names"] = names
    return node


def model_graph(arch: Architecture) -> Node:
    """The ``model`` node of ddsp's checkpoint for this architecture (an ``Autoencoder``
    without encoder, with one spectral loss)."""
    return {
        "_losses_dict": _empty(),
        "preprocessor": _input_output_keys(),
        "decoder": _decoder(arch),
        "processor_group": _processor_group(arch),
        "loss_objs": {"0": {"spectrogram_ops": _empty()}},
    }


def variable_names(node: Node) -> Iterator[str]:
    """Every variable name in a graph, once each."""
    seen: set[int] = set()
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for child in current.values():
            if isinstance(child, str):
                if child not in names:
                    names.add(child)
                    yield child
            else:
                stack.append(child)
