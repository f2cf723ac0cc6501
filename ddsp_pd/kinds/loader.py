"""Open a model of any kind from a path: a ddsp checkpoint (solo or DDSP-VST config) or a
DDSP-VST ``.tflite`` (a file, or a folder or zip holding one).

The route is chosen by :func:`ddsp_pd.kinds.tflite_files.looks_like_tflite`: a ``.tflite``
(by suffix or by its flatbuffer identifier), or a folder or zip holding one and no ddsp
checkpoint index. Everything else is read as a checkpoint. A folder or zip that holds
neither is refused with one line that says so.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from ddsp_pd.errors import CheckpointError
from ddsp_pd.kinds.tflite_files import looks_like_tflite

__all__ = ["is_tflite", "no_model_problem", "open_model"]


def is_tflite(path: str | Path) -> bool:
    """Whether ``path`` is routed to the ``.tflite`` kind."""
    return looks_like_tflite(path)


def no_model_problem(path: Path) -> str | None:
    """The message for a folder or zip that holds no model of any kind, else None."""
    try:
        if path.is_dir():
            names = [p.name for p in path.iterdir()]
            nested = [p.name for d in path.iterdir() if d.is_dir() for p in d.iterdir()]
            names += nested
        elif path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [PurePosixPath(n).name for n in zf.namelist()]
        else:
            return None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return None
    has_index = any(n.endswith(".index") for n in names)
    has_gin = any(n == "operative_config-0.gin" for n in names)
    has_tflite = any(n.lower().endswith(".tflite") for n in names)
    if has_index or has_gin or has_tflite:
        return None
    what = "zip" if path.is_file() else "folder"
    return (
        f"{what} {path.name} holds no model: neither a ddsp checkpoint (ckpt-N.index) "
        "nor a DDSP-VST .tflite"
    )


def open_model(
    path: str | Path,
    *,
    kernels: str = "numpy",
    phase_mode: str = "accurate",
    precision: str = "exact",
) -> tuple[Any, Any]:
    """The model at ``path`` and, for a checkpoint, its :class:`~ddsp_pd.checkpoint.Checkpoint`
    (None for a ``.tflite``).

    The model fits :class:`ddsp_pd.kinds.controls.ControlModel`: an
    :class:`ddsp_pd.inference.InferenceModel` (kinds ``"solo"`` and ``"vst"``, with
    ``kernels``, ``phase_mode`` and ``precision``) or a
    :class:`ddsp_pd.kinds.tflite.TfliteModel` (which runs in float32 whatever
    ``precision`` says: the interpreter's graph is not ours to requantize). Raises
    :class:`CheckpointError` with one line naming the problem.
    """
    path = Path(path).expanduser()
    if is_tflite(path):
        from ddsp_pd.kinds.tflite import load_tflite

        return load_tflite(path), None
    problem = no_model_problem(path)
    if problem is not None:
        raise CheckpointError(problem)
    from ddsp_pd.checkpoint import load_checkpoint
    from ddsp_pd.inference import InferenceModel

    checkpoint = load_checkpoint(path)
    try:
        model = InferenceModel(
            checkpoint, kernels=kernels, phase_mode=phase_mode, precision=precision
        )
    except BaseException:
        checkpoint.close()
        raise
    return model, checkpoint
