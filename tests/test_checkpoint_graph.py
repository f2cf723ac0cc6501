"""The object graph of the checkpoints ddsp-pd writes, checked against ddsp's own.

ddsp restores a checkpoint *before* it builds its model (``Model.restore``,
``AutoencoderInference``, the timbre-transfer notebook, ``ddsp_export``). TensorFlow then
matches checkpoint objects to Python objects by child name, starting from the objects that
exist: an unbuilt Keras ``Sequential`` exposes its layers only as ``layer-N`` (its
``layer_with_weights-K`` edges appear once the layers have weights), and a variable created
later is restored when it is attached under a name its parent's checkpoint node has.
``ddsp_export`` restores the decoder alone and asserts that every existing Python object with
values was matched, the root's ``save_counter`` included.

ddsp cannot be installed here, so the reference is the ``_CHECKPOINTABLE_OBJECT_GRAPH`` of
the real ddsp 3.7 checkpoints in the fixtures (solo_instrument and VST configs):

- the same graph: every node has the same child names, the same aliasing (which names lead
  to one object) and the same checkpoint keys as ddsp's;
- every variable is reachable through ``layer-N`` edges alone, by the same paths as in ddsp's
  checkpoint;
- a deferred restore: a fresh object tree shaped like ddsp's unbuilt model (the real graph
  without its ``layer_with_weights-K`` edges and without variables) is restored from our
  checkpoint, then "built" by attaching each variable where Keras creates it; every variable
  must come out with its written value;
- ddsp_export's restore: ``Checkpoint(model=Checkpoint(decoder=...))`` passes
  ``assert_existing_objects_matched()`` before the decoder is built, and the decoder's
  variables get their values when it is.

Every check also runs on a real ddsp checkpoint, so the mimic of ddsp's objects is itself
checked against what ddsp wrote.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REAL, REFERENCE_CHECKPOINT, VST_REFERENCE, needs_fixtures
from tensorflow.core.protobuf import trackable_object_graph_pb2

from ddsp_pd.checkpoint import model_variable_name
from ddsp_pd.model import DdspModel
from ddsp_pd.training.graph import VST_PROCESSORS, Architecture, architecture_of
from ddsp_pd.training.loop import preset_config
from ddsp_pd.training.writer import SAVE_COUNTER_KEY, read_save_counter, write_model_checkpoint

pytestmark = needs_fixtures

Graph = trackable_object_graph_pb2.TrackableObjectGraph
LWW = "layer_with_weights-"
CONFIGS = ("solo", "small", "tiny")
VST_CKPT = VST_REFERENCE / "checkpoint"


# --------------------------------------------------------------------------- helpers


def _latest(directory: Path) -> Path:
    return Path(tf.train.latest_checkpoint(str(directory)))


def _graph(prefix: Path) -> Graph:
    graph = Graph()
    raw = tf.train.load_checkpoint(str(prefix)).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    graph.ParseFromString(raw)
    return graph


def _child(graph: Graph, node: int, name: str) -> int:
    return next(c.node_id for c in graph.nodes[node].children if c.local_name == name)


def _differences(ours: Graph, theirs: Graph, start: tuple[str, ...] = ()) -> list[str]:
    """Where two graphs differ, walking both from the root (or from the node at ``start``):
    child names, which names share one object, and checkpoint keys."""
    a = b = 0
    for name in start:
        a, b = _child(ours, a, name), _child(theirs, b, name)
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    todo = [(a, b, "/".join(start) or "(root)")]
    while todo:
        a, b, path = todo.pop()
        if (a, b) in seen:
            continue
        seen.add((a, b))
        na, nb = ours.nodes[a], theirs.nodes[b]
        ca = {c.local_name: c.node_id for c in na.children}
        cb = {c.local_name: c.node_id for c in nb.children}
        if set(ca) != set(cb):
            out.append(
                f"{path}: extra children {sorted(set(ca) - set(cb))}, "
                f"missing children {sorted(set(cb) - set(ca))}"
            )

        def groups(children: dict[str, int]) -> set[frozenset[str]]:
            by_target: dict[int, set[str]] = defaultdict(set)
            for name, target in children.items():
                by_target[target].add(name)
            return {frozenset(names) for names in by_target.values()}

        common = set(ca) & set(cb)
        shared_a = groups({k: v for k, v in ca.items() if k in common})
        shared_b = groups({k: v for k, v in cb.items() if k in common})
        if shared_a != shared_b:
            out.append(f"{path}: aliases {sorted(map(sorted, shared_a))} "
                       f"!= {sorted(map(sorted, shared_b))}")  # fmt: skip
        keys_a = sorted((x.name, x.checkpoint_key) for x in na.attributes)
        keys_b = sorted((x.name, x.checkpoint_key) for x in nb.attributes)
        if keys_a != keys_b:
            out.append(f"{path}: values {keys_a} != {keys_b}")
        todo += [(ca[name], cb[name], f"{path}/{name}") for name in sorted(common)]
    return out


def _variable_nodes(graph: Graph) -> dict[int, str]:
    """Node id -> checkpoint key, for every node holding a value."""
    return {
        i: node.attributes[0].checkpoint_key
        for i, node in enumerate(graph.nodes)
        if node.attributes
    }


def _paths_without_lww(graph: Graph) -> dict[str, set[str]]:
    """Checkpoint key -> every path from the root that uses no ``layer_with_weights-K``
    edge (how an unbuilt Keras model reaches it)."""
    keys = _variable_nodes(graph)
    paths: dict[str, set[str]] = defaultdict(set)
    todo = [(0, "")]
    while todo:
        node, path = todo.pop()
        if node in keys:
            paths[keys[node]].add(path)
        for child in graph.nodes[node].children:
            if not child.local_name.startswith(LWW):
                todo.append((child.node_id, f"{path}/{child.local_name}".lstrip("/")))
    return paths


def _model_only(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {k: v for k, v in found.items() if k.startswith("model/")}


def _skeleton(reference: Graph) -> tuple[tf.Module, dict[str, list[tuple[tf.Module, str]]]]:
    """ddsp's ``model`` object as it is before it is built, from a real ddsp graph.

    Every object of the graph except the variables, linked by every edge except
    ``layer_with_weights-K`` (unbuilt Keras layers have no weights, so a Sequential lists
    its layers as ``layer-N`` only). Also returns, for each variable's checkpoint key, the
    ``(object, attribute)`` places where building the model attaches the variable.
    """
    keys = _variable_nodes(reference)
    made: dict[int, tf.Module] = {}
    places: dict[str, list[tuple[tf.Module, str]]] = defaultdict(list)

    def build(node: int) -> tf.Module:
        if node not in made:
            made[node] = module = tf.Module()
            for child in reference.nodes[node].children:
                name, target = child.local_name, child.node_id
                if name.startswith(LWW):
                    continue
                if target in keys:
                    places[keys[target]].append((module, name))
                else:
                    setattr(module, name, build(target))
        return made[node]

    model = build(_child(reference, 0, "model"))
    return model, places


def _build(
    places: dict[str, list[tuple[tf.Module, str]]],
    prefix: Path,
    keep: Callable[[str], bool] = lambda key: True,
) -> dict[str, tf.Variable]:
    """Attach a NaN-filled variable of the checkpoint's shape at each place (as Keras'
    ``build`` does); pending restorations fill them in."""
    shapes = dict(tf.train.list_variables(str(prefix)))
    built = {}
    for key, where in places.items():
        if not keep(key):
            continue
        var = tf.Variable(np.full(shapes[key], np.nan, np.float32))
        for module, name in where:
            setattr(module, name, var)
        built[key] = var
    return built


def _unrestored(built: dict[str, tf.Variable], prefix: Path) -> list[str]:
    reader = tf.train.load_checkpoint(str(prefix))
    return sorted(
        k for k, v in built.items() if not np.array_equal(v.numpy(), reader.get_tensor(k))
    )


def _random_variables(config_name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Every variable of a preset's model, filled with distinct random values (so a variable
    that keeps its initial value, zeros for biases, cannot pass for a restored one)."""
    rng = np.random.default_rng(seed)
    shapes = {n: v.shape for n, v in DdspModel(preset_config(config_name)).ddsp_variables().items()}
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of each preset written by ddsp-pd's writer, and one of the VST
    architecture with the VST fixture's variable shapes."""
    out = {}
    for name in CONFIGS:
        folder = tmp_path_factory.mktemp(name)
        arch = architecture_of(preset_config(name))
        out[name] = write_model_checkpoint(folder, _random_variables(name), 40, arch, 3)
    rng = np.random.default_rng(1)
    shapes = {model_variable_name(k): s for k, s in tf.train.list_variables(str(_latest(VST_CKPT)))}
    variables = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items() if n}
    vst = Architecture(n_input_stacks=2, layers_per_stack=1, processors=VST_PROCESSORS)
    out["vst"] = write_model_checkpoint(tmp_path_factory.mktemp("vst"), variables, 400, vst)
    return out


def _reference(name: str) -> Path:
    return _latest(VST_CKPT if name == "vst" else REFERENCE_CHECKPOINT)


# --------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("name", CONFIGS)
def test_model_graph_is_ddsps(written, name):
    """Below ``model``, every object has the children, aliases and keys of ddsp 3.7's
    solo_instrument checkpoint (the fixture was written without a save_counter)."""
    diff = _differences(_graph(written[name]), _graph(_reference(name)), start=("model",))
    assert not diff, "\n".join(diff)


def test_vst_architecture_graph_is_ddsps(written):
    """The VST architecture (1 layer per stack, FilteredNoiseReverb, Crop) gives exactly the
    graph of ddsp's own VST checkpoint, root and save_counter included."""
    diff = _differences(_graph(written["vst"]), _graph(_reference("vst")))
    assert not diff, "\n".join(diff)


@pytest.mark.parametrize("name", CONFIGS)
def test_root_has_the_save_counter_of_ddsps_checkpoints(written, name):
    """The root holds ``model`` and an int64 ``save_counter``, as in the checkpoints ddsp's
    trainer writes (the VST fixture; the older real checkpoints' indexes)."""

    def root_names(graph: Graph) -> list[str]:
        return sorted(c.local_name for c in graph.nodes[0].children)

    assert root_names(_graph(written[name])) == root_names(_graph(_reference("vst")))
    assert root_names(_graph(written[name])) == ["model", "save_counter"]
    dtypes = tf.train.load_checkpoint(str(written[name])).get_variable_to_dtype_map()
    assert dtypes[SAVE_COUNTER_KEY] == tf.int64
    assert read_save_counter(written[name]) == 3
    for index in sorted(REAL.glob("*/*.index")):
        real_keys = {k for k, _ in tf.train.list_variables(str(index.with_suffix("")))}
        assert SAVE_COUNTER_KEY in real_keys, index


@pytest.mark.parametrize("name", (*CONFIGS, "vst"))
def test_every_variable_is_reached_through_layer_n_edges(written, name):
    """Each variable is reached without any ``layer_with_weights-K`` edge, by the same paths
    as in ddsp's checkpoint, and through ``layer_with_weights-K`` by its key."""
    ours, theirs = _graph(written[name]), _graph(_reference(name))
    paths = _paths_without_lww(ours)
    keys = set(_variable_nodes(ours).values()) - {SAVE_COUNTER_KEY}
    unreached = sorted(k for k in keys if not paths.get(k))
    assert not unreached, f"{len(unreached)} of {len(keys)} variables unreachable: {unreached}"
    assert _model_only(paths) == _model_only(_paths_without_lww(theirs))
    for key in keys:  # the key itself is the layer_with_weights path, ending at the variable
        node = 0
        for name_ in key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE").split("/"):
            node = _child(ours, node, name_)
        assert _variable_nodes(ours)[node] == key


# --------------------------------------------------------------------------- restoring


@pytest.mark.parametrize("name", (*CONFIGS, "vst", "reference", "vst_reference"))
def test_restore_before_build_gives_every_variable(written, name):
    """``Model.restore()`` as ddsp does it: restore into the unbuilt model, then build.
    Every variable of the checkpoint ends up with its written value."""
    prefix = {"reference": _reference("solo"), "vst_reference": _reference("vst")}.get(name)
    prefix = prefix or written[name]
    model, places = _skeleton(_graph(_reference("vst" if "vst" in name else "solo")))
    tf.train.Checkpoint(model=model).restore(str(prefix)).expect_partial()
    built = _build(places, prefix)
    expected = {k for k, _ in tf.train.list_variables(str(prefix)) if k.startswith("model/")}
    assert set(built) == expected
    missed = _unrestored(built, prefix)
    assert not missed, f"restored {len(built) - len(missed)} of {len(built)}: missed {missed}"


@pytest.mark.parametrize("name", (*CONFIGS, "vst", "vst_reference"))
def test_decoder_only_restore_matches_every_object(written, name):
    """``ddsp_export``'s restore (``Model.restore(restore_keys=['decoder'])``): the root's
    ``save_counter`` and everything else that exists must be matched before the decoder is
    built, and the decoder's variables then get their values."""
    prefix = _reference("vst") if name == "vst_reference" else written[name]
    model, places = _skeleton(_graph(_reference("vst" if "vst" in name else "solo")))
    root = tf.train.Checkpoint(model=tf.train.Checkpoint(decoder=model.decoder))
    status = root.restore(str(prefix))
    status.assert_existing_objects_matched()
    assert int(root.save_counter.numpy()) == read_save_counter(prefix) >= 1
    built = _build(places, prefix, keep=lambda key: key.startswith("model/decoder/"))
    assert built
    status.assert_existing_objects_matched()
    status.expect_partial()  # the processor group is not restored here, on purpose
    missed = _unrestored(built, prefix)
    assert not missed, f"restored {len(built) - len(missed)} of {len(built)}: missed {missed}"
