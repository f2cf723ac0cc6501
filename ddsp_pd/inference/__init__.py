"""Rendering without TensorFlow: the model's inference path as numpy functions.

- :mod:`.decoder`: the RnnFcDecoder (Fc stacks, GRU, output stack) over numpy arrays.
- :mod:`.synth`: controls, harmonic oscillators, filtered noise and reverb.
- :mod:`.kernels`: the inner loops, in numpy or compiled with numba (:mod:`.compiled`).
- :mod:`.synthesis`: the one synthesis path, synthesizer controls to audio, shared by
  every model kind (ddsp checkpoints and DDSP-VST ``.tflite`` files).
- :mod:`.model`: :class:`InferenceModel`, one checkpoint's weights and the glue (solo and
  DDSP-VST-config checkpoints).

Nothing here imports TensorFlow; the TensorFlow model (:mod:`ddsp_pd.model`) is kept for
training and for tests that compare the two.
"""

from ddsp_pd.inference.model import (
    INTERMEDIATE_NAMES,
    VST_INTERMEDIATE_NAMES,
    InferenceModel,
    ModelControls,
)

__all__ = ["INTERMEDIATE_NAMES", "VST_INTERMEDIATE_NAMES", "InferenceModel", "ModelControls"]
