"""ddsp-pd against the ddsp library itself: the same model call on the same 10 s, one process.

Prints figures only (no assertions). Issue 10 asks for a warm re-render of 10 s with the
solo-size model at >= 30x the speed of the ddsp 3.7 library's model call, measured in the same
run on the same machine. ``pip install ddsp`` fails on Python 3.11 (its pinned dependencies),
but the library's own code runs on TensorFlow 2.21 with legacy Keras (that is how
``../shared/fixtures/reference`` was made). Install it beside the project, without its
dependencies, once:

    pip install --target /tmp/ddsplib --no-deps ddsp==3.7.0 tf-keras==2.21.0 \\
        tensorflow-probability==0.25.0 dm-tree cloudpickle decorator

then, from the project root (TensorFlow comes from the ``train`` extra):

    python benchmarks/bench_library.py --ddsp-path /tmp/ddsplib [--checkpoint DIR]
                                       [--input WAV] [--seconds 10] [--repeats 5]

What is timed, for the same features (ddsp-pd's f0 and loudness of the input, after its
default controls):
- ddsp-pd: a warm re-render after a loudness change (``Engine.render`` with cached features,
  as ``bench_render.py``: f0's stack products come from the cache), exact and
  ``--precision fast``, and the model call alone with nothing cached (decoder + synthesis,
  ``InferenceModel.render``, the same work as the library's call; in ``fast`` the input
  tables stay filled, as they do in a running process);
- the library: ``Autoencoder(features, training=False)`` built from the checkpoint's
  ``operative_config-0.gin`` as the ddsp timbre-transfer colab builds it (eager, the colab's
  call), and the same call inside ``tf.function`` (the library at its best), after one
  untimed call each.
ddsp-pd is timed before TensorFlow is imported and again after the library's calls, so that
neither disturbs the other. The library's modules that need packages absent here (CREPE,
note_seq, tensorflow_datasets, ...) are imported as inert stand-ins: the model call uses none
of them. Figures are minimum and median of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
DEFAULT_CKPT = SHARED / "fixtures/reference/solo_ddsp37/checkpoint"
DEFAULT_INPUT = SHARED / "fixtures/audio/midi_flute.wav"

#: Packages that ddsp's modules import at the top but its model call never uses.
ABSENT = (
    "crepe",
    "note_seq",
    "tensorflow_datasets",
    "mir_eval",
    "hypertune",
    "tflite_support",
    "tensorflowjs",
    "pydub",
    "apache_beam",
    "cloud_tpu_client",
    "matplotlib",
    "google.cloud",
)


class _Inert(types.ModuleType):
    """A module whose every attribute is another inert module (enough for imports)."""

    def __getattr__(self, name: str) -> _Inert:
        if name.startswith("__"):
            raise AttributeError(name)
        child = _Inert(f"{self.__name__}.{name}")
        setattr(self, name, child)
        return child

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{self.__name__} is not installed (bench_library stand-in)")


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the :data:`ABSENT` packages (and their submodules) when nothing else does."""

    def find_spec(self, fullname, path=None, target=None):
        if not any(fullname == a or fullname.startswith(a + ".") for a in ABSENT):
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is not None and find(fullname, path, target) is not None:
                return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _Inert(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        return None


def _times(fn, repeats: int, setup=None) -> list[float]:
    out = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _fmt(times: list[float]) -> str:
    return f"min {min(times) * 1e3:7.0f} ms, median {statistics.median(times) * 1e3:7.0f} ms"


def _ours(checkpoint: Path, clip: Path, repeats: int) -> tuple[dict[str, list[float]], object]:
    """Times of ddsp-pd's re-renders and model call; also the features it rendered."""
    from ddsp_pd.controls import ControlSettings
    from ddsp_pd.transfer import Engine, RenderSettings

    out: dict[str, list[float]] = {}
    features = None
    for precision in ("exact", "fast"):
        engine = Engine(warm_up=True, kernels="compiled", precision=precision)
        loaded = engine.load_model(checkpoint)
        plain = RenderSettings(controls=ControlSettings())
        engine.render(loaded, plain, input_path=clip)
        times = []
        for i in range(repeats):
            changed = RenderSettings(controls=ControlSettings(loudness_db=-0.5 * (i + 1)))
            times.append(
                _times(lambda s=changed, e=engine, m=loaded: e.render(m, s, input_path=clip), 1)[0]
            )
        out[f"warm re-render after a loudness change, {precision}"] = times
        raw, _ = engine.features_for(clip, loaded)
        features = engine.adjust(raw, loaded, plain)
        f0, ld = features.f0_hz, features.loudness_db
        # Both inputs' stacks computed, as the library computes them: the cache is emptied.
        out[f"model call (decoder + synthesis, nothing cached), {precision}"] = _times(
            lambda m=loaded, f=f0, d=ld: m.model.render(f, d, seed=0, kernels="compiled"),
            repeats,
            setup=loaded.model.stack_cache.clear,
        )
    return out, features


def _library(ddsp_path: Path, checkpoint: Path, features, repeats: int) -> dict[str, list[float]]:
    """Times of the ddsp library's ``Autoencoder`` call on ``features``."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.path.insert(0, str(ddsp_path))
    sys.meta_path.append(_InertFinder())
    import ddsp.training  # noqa: F401  (registers the gin configurables)
    import gin
    import numpy as np
    import tensorflow as tf
    from ddsp.training import models

    n_frames = len(features.f0_hz)
    n_samples = n_frames * 64
    gin.parse_config_file(str(checkpoint / "operative_config-0.gin"), skip_unknown=True)
    with gin.unlock_config():
        gin.parse_config(
            [
                f"Harmonic.n_samples = {n_samples}",
                f"FilteredNoise.n_samples = {n_samples}",
                f"F0LoudnessPreprocessor.time_steps = {n_frames}",
                "F0LoudnessPreprocessor.compute_loudness = False",
                "oscillator_bank.use_angular_cumsum = True",
            ]
        )
    model = models.Autoencoder()
    model.restore(str(checkpoint), verbose=False)
    batch = {
        "f0_hz": np.asarray(features.f0_hz, np.float32)[None, :],
        "loudness_db": np.asarray(features.loudness_db, np.float32)[None, :],
        "audio": np.zeros((1, n_samples), np.float32),
    }

    def eager() -> None:
        model.get_audio_from_outputs(model(dict(batch), training=False)).numpy()

    graph_call = tf.function(lambda b: model.get_audio_from_outputs(model(b, training=False)))
    tensors = {k: tf.constant(v) for k, v in batch.items()}

    def graph() -> None:
        graph_call(dict(tensors)).numpy()

    out = {}
    for label, fn in (("eager (the colab's call)", eager), ("tf.function", graph)):
        fn()
        out[f"ddsp 3.7 Autoencoder call, {label}"] = _times(fn, repeats)
    print(
        f"library: TensorFlow {tf.__version__}, {model.decoder.__class__.__name__}, "
        f"{sum(int(np.prod(v.shape)) for v in model.trainable_variables):,} parameters"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ddsp-path", type=Path, required=True,
                        help="folder holding ddsp 3.7.0 (pip install --target ...)")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not (args.ddsp_path / "ddsp" / "__init__.py").is_file():
        parser.error(f"no ddsp package under {args.ddsp_path} (see this script's docstring)")

    # ddsp_pd first, as the CLI does: it sets OPENBLAS_NUM_THREADS=1 before numpy loads.
    importlib.import_module("ddsp_pd")
    import numpy as np
    import soundfile as sf

    print(
        f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    audio, rate = sf.read(str(args.input), dtype="float32", always_2d=True)
    tmp = Path(tempfile.mkdtemp(prefix="ddsp-pd-bench-"))
    try:
        clip = tmp / "clip.wav"
        sf.write(str(clip), np.resize(audio.mean(axis=1), int(args.seconds * rate)), rate)
        before, features = _ours(args.checkpoint, clip, args.repeats)
        library = _library(args.ddsp_path, args.checkpoint, features, args.repeats)
        after, _ = _ours(args.checkpoint, clip, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{args.seconds:g} s, {len(features.f0_hz)} frames, checkpoint {args.checkpoint}")
    for label, times in before.items():
        print(f"  ddsp-pd {label:<52} {_fmt(times)}  (after the library: {_fmt(after[label])})")
    for label, times in library.items():
        print(f"  {label:<60} {_fmt(times)}")
    for lib_label, lib_times in library.items():
        for label in before:
            ours = min(min(before[label]), min(after[label]))
            print(f"  ratio {lib_label} / ddsp-pd {label}: {min(lib_times) / ours:.1f}x (minima)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
