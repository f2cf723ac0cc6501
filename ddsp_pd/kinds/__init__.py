"""Model kinds: each turns frame features into synthesizer controls.

Every kind returns :class:`ddsp_pd.kinds.controls.SynthControls` (see that module for the
contract), for a whole clip or frame by frame with its recurrent state carried.

- :mod:`ddsp_pd.kinds.tflite`: DDSP-VST plugin models (``.tflite``, or a folder or zip
  holding one), run with the LiteRT interpreter.
"""
