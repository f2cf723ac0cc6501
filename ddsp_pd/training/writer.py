"""Write a checkpoint directory in ddsp's own layout, readable by ddsp-pd and by ddsp itself.

A directory gets ``ckpt-N.index`` + ``ckpt-N.data-00000-of-00001`` (model variables only,
under the object paths ddsp's ``Autoencoder`` produces, e.g.
``model/decoder/rnn/rnn/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE``, and the root's
``save_counter``), the ``checkpoint`` text file naming the latest, ``operative_config-0.gin``
and ``dataset_statistics.pkl``.

TensorFlow saves with the variables the graph of objects that leads to them, and ddsp
restores by walking that graph by child name. :mod:`ddsp_pd.training.graph` describes the
graph ddsp's objects have (Keras ``layer-N`` and ``layer_with_weights-K`` edges, the empty
list and loss objects); here it is rebuilt from plain :class:`tf.Module` objects, so no Keras
model has to be built, and written through ``tf.train.Checkpoint`` with its ``save_counter``
(ddsp's decoder-only restore asserts that it is matched).
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import OutputError
from ddsp_pd.training.graph import Architecture, Node, model_graph, variable_names

__all__ = [
    "SAVE_COUNTER_KEY",
    "TrainSettings",
    "list_checkpoints",
    "object_tree",
    "operative_config_text",
    "prune_checkpoints",
    "read_save_counter",
    "statistics_bytes",
    "vst_operative_config_text",
    "write_checkpoint_state",
    "write_model_checkpoint",
]

_CKPT = re.compile(r"^ckpt-(\d+)\.index$")
#: The checkpoint key of ``tf.train.Checkpoint``'s counter of saves.
SAVE_COUNTER_KEY = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"


@dataclass(frozen=True)
class TrainSettings:
    """The training hyper-parameters that go into the operative config."""

    batch_size: int = 16
    learning_rate: float = 3e-4
    lr_decay_steps: int = 10000
    lr_decay_rate: float = 0.98
    grad_clip_norm: float = 3.0
    num_steps: int = 30000
    steps_per_save: int = 300
    checkpoints_to_keep: int = 3
    example_secs: float = 4.0
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)


def object_tree(graph: Node, variables: Mapping[str, tf.Variable]) -> tf.Module:
    """The graph as trackable objects, with ``variables[name]`` at each variable slot.

    Children are added in the graph's order (TensorFlow names a variable by the first path
    it finds, breadth first); a node or variable that appears under two names becomes one
    object with two edges. Raises ``ValueError`` unless ``variables`` fills exactly the
    graph's variable slots.
    """
    slots = set(variable_names(graph))
    if slots != set(variables):
        missing = sorted(slots - set(variables))
        extra = sorted(set(variables) - slots)
        raise ValueError(f"variables do not fit the graph: missing {missing}, extra {extra}")
    made: dict[int, tf.Module] = {}

    def build(node: Node) -> tf.Module:
        if id(node) in made:
            return made[id(node)]
        module = made[id(node)] = tf.Module()
        for name, child in node.items():
            # setattr: names such as ``layer-0`` are not identifiers.
            setattr(module, name, variables[child] if isinstance(child, str) else build(child))
        return module

    return build(graph)


def list_checkpoints(directory: str | Path) -> list[int]:
    """The steps N of the ``ckpt-N`` checkpoints in a directory, ascending."""
    path = Path(directory)
    if not path.is_dir():
        return []
    return sorted(int(m.group(1)) for p in path.iterdir() if (m := _CKPT.match(p.name)))


def write_checkpoint_state(directory: str | Path, steps: list[int]) -> None:
    """Write the ``checkpoint`` text file: the last of ``steps`` is the latest."""
    if not steps:
        return
    lines = [f'model_checkpoint_path: "ckpt-{steps[-1]}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{s}"' for s in steps]
    _write_text(Path(directory) / "checkpoint", "\n".join(lines) + "\n")


def write_model_checkpoint(
    directory: str | Path,
    variables: Mapping[str, tf.Variable | np.ndarray],
    step: int,
    architecture: Architecture,
    save_counter: int = 1,
) -> Path:
    """Write ``ckpt-<step>`` with the given model variables (ddsp names, no ``model/``).

    The object graph is ddsp's for ``architecture`` (``graph.architecture_of(config)``);
    ``save_counter`` is the root's count of saves (ddsp's ``CheckpointManager`` counts every
    save of a run, resumed runs included). Also rewrites the ``checkpoint`` file to list every
    ``ckpt-N`` in the directory with this one as the latest. Returns the checkpoint prefix.
    """
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create checkpoint directory {out}: {exc.strerror}") from exc
    tf_vars = {
        name: v if isinstance(v, tf.Variable) else tf.Variable(np.asarray(v, np.float32))
        for name, v in variables.items()
    }
    root = tf.train.Checkpoint(model=object_tree(model_graph(architecture), tf_vars))
    # The public property creates the counter (int64, as ``save()`` would); ``write()``
    # is used rather than ``save()`` so the file is numbered by step, not by the counter.
    root.save_counter.assign(int(save_counter))
    prefix = out / f"ckpt-{int(step)}"
    try:
        root.write(str(prefix))
    except (OSError, tf.errors.OpError) as exc:
        raise OutputError(f"cannot write checkpoint {prefix}: {exc}") from exc
    steps = [s for s in list_checkpoints(out) if s != int(step)] + [int(step)]
    write_checkpoint_state(out, steps)
    return prefix


def ship_final_checkpoint(train_dir: str | Path, target: str | Path) -> int:
    """Copy the newest checkpoint of ``train_dir`` (its ``ckpt-N.*`` files, the gin
    config and ``dataset_statistics.pkl``) into a fresh ``target`` folder, with a
    ``checkpoint`` state file naming it; returns N. Raises OutputError when there is none."""
    import shutil

    source, folder = Path(train_dir), Path(target)
    done = list_checkpoints(source)
    if not done:
        raise OutputError(f"no checkpoint in {source}: run the train stage first")
    final = done[-1]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in source.glob(f"ckpt-{final}.*"):
        shutil.copy2(path, folder / path.name)
    write_checkpoint_state(folder, [final])
    for name in ("operative_config-0.gin", "dataset_statistics.pkl"):
        shutil.copy2(source / name, folder / name)
    return final


def read_save_counter(prefix: str | Path) -> int:
    """The ``save_counter`` of a checkpoint, 0 when it has none (older ddsp-pd files)."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (OSError, ValueError, tf.errors.OpError):
        return 0
    if not reader.has_tensor(SAVE_COUNTER_KEY):
        return 0
    return int(reader.get_tensor(SAVE_COUNTER_KEY))


def prune_checkpoints(directory: str | Path, keep: int, also: tuple[str, ...] = ()) -> None:
    """Delete all but the newest ``keep`` checkpoints (and ``<name>-N.<ext>`` companions).

    ``also`` lists companion file patterns such as ``"train_state-{}.npz"``.
    """
    out = Path(directory)
    steps = list_checkpoints(out)
    for step in steps[: max(0, len(steps) - keep)]:
        for path in out.glob(f"ckpt-{step}.*"):
            path.unlink(missing_ok=True)
        for pattern in also:
            (out / pattern.format(step)).unlink(missing_ok=True)
    write_checkpoint_state(out, list_checkpoints(out))


def _write_text(path: Path, text: str) -> None:
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc


# --------------------------------------------------------------------------- gin


def _gin_text(macros: list[str], sections: list[tuple[str, list[str]]]) -> str:
    """An operative config in gin's own layout: imports, macros, one block per selector."""
    rule = "# " + "=" * 78
    out = ["import ddsp", "import ddsp.training as ddsp2", "", "# Macros:", rule, *macros, ""]
    for title, lines in sections:
        out += [f"# Parameters for {title}:", rule, *lines, ""]
    return "\n".join(out)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _decoder_section(config: ModelConfig) -> tuple[str, list[str]]:
    splits = ", ".join(f"({name!r}, {size})" for name, size in config.output_splits)
    input_keys = "(" + ", ".join(repr(k) for k in config.input_keys) + ")"
    return (
        "RnnFcDecoder",
        [
            f"RnnFcDecoder.ch = {config.ch}",
            f"RnnFcDecoder.input_keys = {input_keys}",
            f"RnnFcDecoder.layers_per_stack = {config.layers_per_stack}",
            f"RnnFcDecoder.output_splits = \\\n    ({splits})",
            f"RnnFcDecoder.rnn_channels = {config.rnn_channels}",
            f"RnnFcDecoder.rnn_type = {config.rnn_type!r}",
            "RnnFcDecoder.stateless = False",
        ],
    )


def _training_sections(settings: TrainSettings) -> list[tuple[str, list[str]]]:
    fft_sizes = "(" + ", ".join(str(s) for s in settings.fft_sizes) + ")"
    return [
        ("run_dag", ["run_dag.verbose = False"]),
        (
            "SpectralLoss",
            [
                "SpectralLoss.cumsum_freq_weight = 0.0",
                "SpectralLoss.delta_freq_weight = 0.0",
                "SpectralLoss.delta_time_weight = 0.0",
                f"SpectralLoss.fft_sizes = {fft_sizes}",
                "SpectralLoss.logmag_weight = 1.0",
                "SpectralLoss.loss_type = 'L1'",
                "SpectralLoss.loudness_weight = 0.0",
                "SpectralLoss.mag_weight = 1.0",
                "SpectralLoss.name = 'spectral_loss'",
            ],
        ),
    ]


def _schedule_sections(settings: TrainSettings) -> list[tuple[str, list[str]]]:
    return [
        (
            "train",
            [
                "train.batch_size = %batch_size",
                f"train.num_steps = {settings.num_steps}",
                f"train.steps_per_save = {settings.steps_per_save}",
                f"train.steps_per_summary = {settings.steps_per_save}",
            ],
        ),
        (
            "Trainer",
            [
                f"Trainer.checkpoints_to_keep = {settings.checkpoints_to_keep}",
                f"Trainer.grad_clip_norm = {float(settings.grad_clip_norm)!r}",
                "Trainer.learning_rate = %learning_rate",
                f"Trainer.lr_decay_rate = {float(settings.lr_decay_rate)!r}",
                f"Trainer.lr_decay_steps = {settings.lr_decay_steps}",
                "Trainer.restore_keys = None",
            ],
        ),
    ]


def vst_operative_config_text(config: ModelConfig, settings: TrainSettings) -> str:
    """``operative_config-0.gin`` for a DDSP-VST model (``models/vst/vst.gin``).

    The selectors, macros and layout of the config ddsp 3.7 writes for vst.gin (the
    fixture's): power preprocessing at ``%frame_rate`` with ``%frame_size`` frames,
    ``FilteredNoiseReverb`` and ``Crop`` in the DAG, ``n_samples`` the synthesis length of
    one example (its frames times the hop: ``L + hop`` for centred examples).
    """
    c = config
    frames = round(c.frame_rate * settings.example_secs) + 1
    macros = [
        f"batch_size = {settings.batch_size}",
        f"frame_rate = {_number(c.frame_rate)}",
        f"frame_size = {c.power_frame_size}",
        f"learning_rate = {float(settings.learning_rate)!r}",
        f"n_samples = {frames * c.hop}",
        f"sample_rate = {c.sample_rate}",
    ]
    dag = [
        "(@synths.Harmonic(), ['amps', 'harmonic_distribution', 'f0_hz'])",
        "(@synths.FilteredNoise(), ['noise_magnitudes'])",
        "(@processors.Add(), ['filtered_noise/signal', 'harmonic/signal'])",
    ]
    last = "add/signal"
    if c.reverb:
        dag.append(f"(@effects.FilteredNoiseReverb(), [{last!r}])")
        last = "reverb/signal"
    if c.crop_size:
        dag.append(f"(@processors.Crop(), [{last!r}])")
    dag_text = "ProcessorGroup.dag = \\\n    [" + ",\n     ".join(dag) + "]"
    sections: list[tuple[str, list[str]]] = [
        ("processors.Add", ["processors.Add.name = 'add'"]),
        (
            "Autoencoder",
            [
                "Autoencoder.decoder = @decoders.RnnFcDecoder()",
                "Autoencoder.encoder = None",
                "Autoencoder.losses = [@losses.SpectralLoss()]",
                "Autoencoder.preprocessor = @preprocessing.OnlineF0PowerPreprocessor()",
                "Autoencoder.processor_group = @processors.ProcessorGroup()",
            ],
        ),
    ]
    if c.crop_size:
        location = "center" if c.crop_location == "mid" else c.crop_location
        sections.append(
            (
                "Crop",
                [
                    f"Crop.crop_location = {location!r}",
                    f"Crop.frame_size = {c.crop_size}",
                    "Crop.name = 'crop'",
                ],
            )
        )
    sections += [
        (
            "exp_sigmoid",
            [
                f"exp_sigmoid.exponent = {float(c.exp_sigmoid_exponent)!r}",
                f"exp_sigmoid.max_value = {float(c.exp_sigmoid_max_value)!r}",
                f"exp_sigmoid.threshold = {float(c.exp_sigmoid_threshold)!r}",
            ],
        ),
        (
            "FilteredNoise",
            [
                f"FilteredNoise.initial_bias = {float(c.noise_initial_bias)!r}",
                "FilteredNoise.n_samples = %n_samples",
                "FilteredNoise.name = 'filtered_noise'",
                "FilteredNoise.scale_fn = @core.exp_sigmoid",
                f"FilteredNoise.window_size = {c.noise_window_size}",
            ],
        ),
    ]
    if c.reverb:
        sections.append(
            (
                "FilteredNoiseReverb",
                [
                    f"FilteredNoiseReverb.add_dry = {c.reverb_add_dry}",
                    f"FilteredNoiseReverb.initial_bias = {float(c.reverb_initial_bias)!r}",
                    f"FilteredNoiseReverb.n_filter_banks = {c.reverb_n_filter_banks}",
                    f"FilteredNoiseReverb.n_frames = {c.reverb_n_frames}",
                    "FilteredNoiseReverb.name = 'reverb'",
                    f"FilteredNoiseReverb.reverb_length = {c.reverb_length}",
                    "FilteredNoiseReverb.trainable = True",
                    f"FilteredNoiseReverb.window_size = {c.reverb_window_size}",
                ],
            )
        )
    sections += [
        ("get_model", ["get_model.model = @models.Autoencoder()"]),
        (
            "Harmonic",
            [
                f"Harmonic.amp_resample_method = {c.amp_resample_method!r}",
                "Harmonic.n_samples = %n_samples",
                "Harmonic.name = 'harmonic'",
                f"Harmonic.normalize_below_nyquist = {c.normalize_below_nyquist}",
                "Harmonic.sample_rate = %sample_rate",
                "Harmonic.scale_fn = @core.exp_sigmoid",
                "Harmonic.use_angular_cumsum = False",
            ],
        ),
        (
            "OnlineF0PowerPreprocessor",
            [
                "OnlineF0PowerPreprocessor.compute_f0 = False",
                "OnlineF0PowerPreprocessor.compute_power = True",
                "OnlineF0PowerPreprocessor.crepe_saved_model_path = None",
                "OnlineF0PowerPreprocessor.frame_rate = %frame_rate",
                "OnlineF0PowerPreprocessor.frame_size = %frame_size",
                "OnlineF0PowerPreprocessor.padding = 'center'",
                "OnlineF0PowerPreprocessor.viterbi = False",
            ],
        ),
        ("oscillator_bank", ["oscillator_bank.sum_sinusoids = True"]),
        ("ProcessorGroup", [dag_text]),
        _decoder_section(c),
        *_training_sections(settings),
        (
            "TFRecordProvider",
            [
                "# ddsp-pd trains from audio files directly; these describe its examples.",
                "TFRecordProvider.centered = True",
                f"TFRecordProvider.example_secs = {_number(settings.example_secs)}",
                f"TFRecordProvider.frame_rate = {_number(c.frame_rate)}",
                f"TFRecordProvider.sample_rate = {c.sample_rate}",
            ],
        ),
        *_schedule_sections(settings),
    ]
    return _gin_text(macros, sections)


def operative_config_text(config: ModelConfig, settings: TrainSettings) -> str:
    """``operative_config-0.gin`` for a model of this config: ``solo_instrument.gin``'s
    layout (ddsp >= 2.0), or vst.gin's for a DDSP-VST config
    (:func:`vst_operative_config_text`).

    Same selectors and layout as the config ddsp 3.7 writes, so
    ``ddsp_pd.config.config_from_gin`` and ddsp's own gin parsing both read it.
    """
    if config.era == "vst":
        return vst_operative_config_text(config, settings)
    n_samples = int(config.sample_rate * settings.example_secs)
    time_steps = round(config.frame_rate * settings.example_secs)
    splits = ", ".join(f"({name!r}, {size})" for name, size in config.output_splits)
    frame_rate = (
        int(config.frame_rate) if float(config.frame_rate).is_integer() else config.frame_rate
    )
    fft_sizes = "(" + ", ".join(str(s) for s in settings.fft_sizes) + ")"
    input_keys = "(" + ", ".join(repr(k) for k in config.input_keys) + ")"
    sections: list[tuple[str, list[str]]] = [
        ("processors.Add", ["processors.Add.name = 'add'"]),
        (
            "Autoencoder",
            [
                "Autoencoder.decoder = @decoders.RnnFcDecoder()",
                "Autoencoder.encoder = None",
                "Autoencoder.losses = [@losses.SpectralLoss()]",
                "Autoencoder.preprocessor = @preprocessing.F0LoudnessPreprocessor()",
                "Autoencoder.processor_group = @processors.ProcessorGroup()",
            ],
        ),
        (
            "exp_sigmoid",
            [
                f"exp_sigmoid.exponent = {float(config.exp_sigmoid_exponent)!r}",
                f"exp_sigmoid.max_value = {float(config.exp_sigmoid_max_value)!r}",
                f"exp_sigmoid.threshold = {float(config.exp_sigmoid_threshold)!r}",
            ],
        ),
        (
            "F0LoudnessPreprocessor",
            [
                "F0LoudnessPreprocessor.compute_loudness = True",
                f"F0LoudnessPreprocessor.frame_rate = {frame_rate}",
                f"F0LoudnessPreprocessor.sample_rate = {config.sample_rate}",
                f"F0LoudnessPreprocessor.time_steps = {time_steps}",
            ],
        ),
        (
            "FilteredNoise",
            [
                f"FilteredNoise.initial_bias = {float(config.noise_initial_bias)!r}",
                f"FilteredNoise.n_samples = {n_samples}",
                "FilteredNoise.name = 'filtered_noise'",
                "FilteredNoise.scale_fn = @core.exp_sigmoid",
                f"FilteredNoise.window_size = {config.noise_window_size}",
            ],
        ),
        ("get_model", ["get_model.model = @models.Autoencoder()"]),
        (
            "Harmonic",
            [
                f"Harmonic.amp_resample_method = {config.amp_resample_method!r}",
                f"Harmonic.n_samples = {n_samples}",
                "Harmonic.name = 'harmonic'",
                f"Harmonic.normalize_below_nyquist = {config.normalize_below_nyquist}",
                f"Harmonic.sample_rate = {config.sample_rate}",
                "Harmonic.scale_fn = @core.exp_sigmoid",
                "Harmonic.use_angular_cumsum = False",
            ],
        ),
        ("oscillator_bank", ["oscillator_bank.sum_sinusoids = True"]),
        (
            "ProcessorGroup",
            [
                "ProcessorGroup.dag = \\\n"
                "    [(@synths.Harmonic(), ['amps', 'harmonic_distribution', 'f0_hz']),\n"
                "     (@synths.FilteredNoise(), ['noise_magnitudes']),\n"
                "     (@processors.Add(), ['filtered_noise/signal', 'harmonic/signal']),\n"
                "     (@effects.Reverb(), ['add/signal'])]"
            ],
        ),
        (
            "Reverb",
            [
                f"Reverb.add_dry = {config.reverb_add_dry}",
                "Reverb.name = 'reverb'",
                f"Reverb.reverb_length = {config.reverb_length}",
                "Reverb.trainable = True",
            ],
        ),
        (
            "RnnFcDecoder",
            [
                f"RnnFcDecoder.ch = {config.ch}",
                f"RnnFcDecoder.input_keys = {input_keys}",
                f"RnnFcDecoder.layers_per_stack = {config.layers_per_stack}",
                f"RnnFcDecoder.output_splits = \\\n    ({splits})",
                f"RnnFcDecoder.rnn_channels = {config.rnn_channels}",
                f"RnnFcDecoder.rnn_type = {config.rnn_type!r}",
                "RnnFcDecoder.stateless = False",
            ],
        ),
        ("run_dag", ["run_dag.verbose = False"]),
        (
            "SpectralLoss",
            [
                "SpectralLoss.cumsum_freq_weight = 0.0",
                "SpectralLoss.delta_freq_weight = 0.0",
                "SpectralLoss.delta_time_weight = 0.0",
                f"SpectralLoss.fft_sizes = {fft_sizes}",
                "SpectralLoss.logmag_weight = 1.0",
                "SpectralLoss.loss_type = 'L1'",
                "SpectralLoss.loudness_weight = 0.0",
                "SpectralLoss.mag_weight = 1.0",
                "SpectralLoss.name = 'spectral_loss'",
            ],
        ),
        (
            "TFRecordProvider",
            [
                "# ddsp-pd trains from audio files directly; these describe its examples.",
                "TFRecordProvider.centered = False",
                f"TFRecordProvider.example_secs = {settings.example_secs:g}",
                f"TFRecordProvider.frame_rate = {frame_rate}",
                f"TFRecordProvider.sample_rate = {config.sample_rate}",
            ],
        ),
        (
            "train",
            [
                "train.batch_size = %batch_size",
                f"train.num_steps = {settings.num_steps}",
                f"train.steps_per_save = {settings.steps_per_save}",
                f"train.steps_per_summary = {settings.steps_per_save}",
            ],
        ),
        (
            "Trainer",
            [
                f"Trainer.checkpoints_to_keep = {settings.checkpoints_to_keep}",
                f"Trainer.grad_clip_norm = {float(settings.grad_clip_norm)!r}",
                "Trainer.learning_rate = %learning_rate",
                f"Trainer.lr_decay_rate = {float(settings.lr_decay_rate)!r}",
                f"Trainer.lr_decay_steps = {settings.lr_decay_steps}",
                "Trainer.restore_keys = None",
            ],
        ),
    ]
    rule = "# " + "=" * 78
    out = [
        "import ddsp",
        "import ddsp.training as ddsp2",
        "",
        "# Macros:",
        rule,
        f"batch_size = {settings.batch_size}",
        f"learning_rate = {float(settings.learning_rate)!r}",
        "",
    ]
    for title, lines in sections:
        out += [f"# Parameters for {title}:", rule, *lines, ""]
    return "\n".join(out)


def write_operative_config(
    directory: str | Path, config: ModelConfig, settings: TrainSettings
) -> Path:
    """Write ``operative_config-0.gin`` into a checkpoint directory."""
    path = Path(directory) / "operative_config-0.gin"
    _write_text(path, operative_config_text(config, settings))
    return path


# --------------------------------------------------------------------------- statistics

_TRANSFORMER_MODULE = "ddsp.training.postprocessing"
_TRANSFORMER_NAME = "QuantileTransformer"


class _QuantileTransformerState:
    """Pickled under ddsp's class path; carries the fitted state ddsp's class keeps."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


_QuantileTransformerState.__module__ = _TRANSFORMER_MODULE
_QuantileTransformerState.__qualname__ = _TRANSFORMER_NAME


class _StatisticsPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Names the stand-in class by ddsp's path without importing ddsp.

    The C pickler checks that a class can be imported from its stated module; ddsp is not
    installed here, so the pure-Python pickler is used and the one global written directly.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _QuantileTransformerState:
            self.save(_TRANSFORMER_MODULE)
            self.save(_TRANSFORMER_NAME)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def statistics_bytes(
    stats: Mapping[str, Any], quantiles: np.ndarray, references: np.ndarray
) -> bytes:
    """``dataset_statistics.pkl`` in the ddsp >= 1.6 layout.

    ``stats`` holds the scalar fields (``mean_pitch``, ``std_loudness_note``, ...) in the order
    they should appear; ``quantiles``/``references`` are the fitted loudness transform.
    """
    q = np.asarray(quantiles, dtype=np.float64).reshape(-1, 1)
    r = np.asarray(references, dtype=np.float64).reshape(-1)
    transformer = _QuantileTransformerState(
        {
            "n_quantiles": 1000,
            "output_distribution": "uniform",
            "subsample": 100000,
            "random_state": None,
            "n_quantiles_": int(r.size),
            "references_": r,
            "quantiles_": q,
        }
    )
    payload = {key: np.float32(value) for key, value in stats.items()}
    payload["quantile_transform"] = transformer
    buffer = io.BytesIO()
    _StatisticsPickler(buffer, protocol=4).dump(payload)
    return buffer.getvalue()


def write_statistics(
    directory: str | Path, stats: Mapping[str, Any], quantiles: np.ndarray, references: np.ndarray
) -> Path:
    """Write ``dataset_statistics.pkl`` into a checkpoint directory."""
    path = Path(directory) / "dataset_statistics.pkl"
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(statistics_bytes(stats, quantiles, references))
        tmp.replace(path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
    return path
