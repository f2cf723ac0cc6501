"""Model kinds: each turns frame features into synthesizer controls.

Every kind returns :class:`ddsp_pd.kinds.controls.SynthControls` (see that module for the
contract and the table of kinds), for a whole clip or frame by frame with its recurrent
state carried, and describes its synthesis with a :class:`~ddsp_pd.kinds.controls.SynthConfig`
that :mod:`ddsp_pd.inference.synthesis` renders, the same for every kind.

- ddsp checkpoints (kinds ``"solo"`` and ``"vst"``): :class:`ddsp_pd.inference.InferenceModel`.
- :mod:`ddsp_pd.kinds.tflite`: DDSP-VST plugin models (``.tflite``, or a folder or zip
  holding one), run with the LiteRT interpreter (kind ``"tflite"``).
- :mod:`ddsp_pd.kinds.loader`: open a path as whichever kind it is.
"""
