#!/usr/bin/env python
"""Re-save a ddsp-pd checkpoint with ddsp's object graph, keeping every variable bit for bit.

Checkpoints written by ``ddsp-pd train`` before the writer built ddsp's object graph lack
Keras' ``layer-N`` edges and the root's ``save_counter``, so ddsp's ``Model.restore()``
leaves their stacks unrestored and ``ddsp_export`` refuses them. This rewrites the chosen
(latest) ``ckpt-N`` of a folder with :mod:`ddsp_pd.training.writer`:

    python scripts/rewrite_checkpoint_graph.py CKPT_DIR -o NEW_DIR   # a rewritten copy
    python scripts/rewrite_checkpoint_graph.py CKPT_DIR --in-place   # replace ckpt-N's files

Either way a complete copy is written and checked first: the same ``model/`` keys, dtypes
and bytes as the source, ``load_checkpoint`` giving identical arrays, and a render from
both that is identical sample for sample. Only then is ``NEW_DIR`` left in place, or, with
``--in-place``, the copy's ``ckpt-N`` files moved over the source's (other files unchanged).
Checkpoints holding anything but model variables (optimizer state) are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw_model_tensors(prefix: Path) -> dict[str, np.ndarray]:
    """Every ``model/`` tensor as stored (no dtype conversion)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith("model/")
    }


def _check_same(source: Path, copy: Path, name: str) -> list[str]:
    """What differs between the source and the rewritten copy (empty when nothing)."""
    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.model import DdspModel

    problems = []
    old, new = _raw_model_tensors(source / name), _raw_model_tensors(copy / name)
    if set(old) != set(new):
        problems.append(f"model keys differ: {sorted(set(old) ^ set(new))}")
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            problems.append(f"{key} differs")
    ckpt_old, ckpt_new = load_checkpoint(source), load_checkpoint(copy)
    if ckpt_old.name != ckpt_new.name or ckpt_old.config != ckpt_new.config:
        problems.append("load_checkpoint reads another checkpoint or config")
    for key, value in ckpt_old.variables.items():
        if not np.array_equal(value, ckpt_new.variables.get(key)):
            problems.append(f"load_checkpoint: {key} differs")
    frames = 500
    f0 = np.geomspace(196.0, 880.0, frames).astype(np.float32)
    loudness = np.linspace(-60.0, -12.0, frames).astype(np.float32)
    render_old = DdspModel(ckpt_old).render(f0, loudness, seed=11)
    render_new = DdspModel(ckpt_new).render(f0, loudness, seed=11)
    if not np.array_equal(render_old, render_new):
        problems.append("renders differ")
    if not problems:
        print(f"variables: {len(old)} model tensors bit-identical, load_checkpoint equal")
        peak = float(np.max(np.abs(render_new)))
        print(f"render: {render_new.size} samples identical (peak {peak:.4f})")
    return problems


def rewrite(source: Path, output: Path | None, in_place: bool) -> int:
    """Write the rewritten copy, check it, then keep it or move it over the source."""
    import tensorflow as tf

    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.training.graph import architecture_of
    from ddsp_pd.training.writer import (
        SAVE_COUNTER_KEY,
        list_checkpoints,
        read_save_counter,
        write_model_checkpoint,
    )

    ckpt = load_checkpoint(source)
    name = ckpt.name
    if not name.startswith("ckpt-") or int(name[5:]) not in list_checkpoints(source):
        print(f"error: {source} holds {name}, not a ddsp-pd ckpt-N checkpoint", file=sys.stderr)
        return 2
    step = int(name[5:])
    keys = {k for k, _ in tf.train.list_variables(str(source / name))}
    other = sorted(
        k for k in keys if not k.startswith("model/") and k not in (GRAPH_KEY, SAVE_COUNTER_KEY)
    )
    if other:
        print(f"error: {name} holds more than model variables ({other[0]}, ...)", file=sys.stderr)
        return 2
    raw = _raw_model_tensors(source / name)
    if any(v.dtype != np.float32 for v in raw.values()):
        print("error: a model variable is not float32; refusing to convert it", file=sys.stderr)
        return 2
    variables = {k.removeprefix("model/").removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): v
                 for k, v in raw.items()}  # fmt: skip

    target_parent = (source if in_place else output).resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=".rewrite-", dir=target_parent))
    copy = staging / "checkpoint_dir"
    try:
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(f"{name}.*"))
        counter = max(1, read_save_counter(source / name))
        write_model_checkpoint(copy, variables, step, architecture_of(ckpt.config), counter)
        # write_model_checkpoint rewrote the state file; keep the source's own.
        if (source / "checkpoint").is_file():
            shutil.copy2(source / "checkpoint", copy / "checkpoint")
        problems = _check_same(source, copy, name)
        if problems:
            print("error: the rewritten copy differs:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        new_files = sorted(copy.glob(f"{name}.*"))
        before = {p.name: _sha256(p) for p in sorted(source.glob(f"{name}.*"))}
        if in_place:
            for path in sorted(source.glob(f"{name}.data-*")):
                if not (copy / path.name).exists():
                    path.unlink()
            # Data first, index last: the index names the data it describes.
            for path in sorted(new_files, key=lambda p: p.suffix == ".index"):
                os.replace(path, source / path.name)
            done = source
        else:
            os.replace(copy, output)
            done = output
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for path in sorted(done.glob(f"{name}.*")):
        print(f"{path.name}: sha256 {before.get(path.name, '(new)')[:16]}... -> "
              f"{_sha256(path)[:16]}...")  # fmt: skip
    print(f"wrote {done}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint_dir", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", type=Path, help="write a rewritten copy here (new)")
    where.add_argument("--in-place", action="store_true", help="replace the ckpt-N files")
    args = parser.parse_args()
    source = args.checkpoint_dir
    if not source.is_dir():
        print(f"error: {source} is not a checkpoint folder", file=sys.stderr)
        return 2
    if args.output is not None and args.output.exists():
        print(f"error: {args.output} exists; give a new folder", file=sys.stderr)
        return 2
    return rewrite(source, args.output, args.in_place)


if __name__ == "__main__":
    sys.exit(main())
