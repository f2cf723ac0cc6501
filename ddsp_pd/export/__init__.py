"""``ddsp-pd export``: a VST-config ddsp checkpoint as a model the DDSP-VST plugin loads.

The plugin (Magenta's DDSP-VST) runs one ``.tflite`` per instrument: per 20 ms frame it
feeds the scaled pitch and power and the GRU state, and reads back the synthesizer
controls and the next state, every tensor found by name (:mod:`ddsp_pd.kinds.tflite` has
the contract). ddsp's own ``ddsp_export --inference_model=vst_stateless_predict_controls
--tflite`` makes such files; this package makes the same from any VST-config checkpoint
(ddsp's or one ``ddsp-pd train --config vst`` wrote), with code of its own:

- :mod:`.plugin_check`: the sizes the plugin accepts (60 harmonics, 65 noise bands, a GRU
  state of 512), checked before anything is built;
- :mod:`.metadata`: ``metadata.json`` from the checkpoint's statistics and config;
- :mod:`.packing`: the zip holding ``metadata.json`` appended to the flatbuffer, as the
  plugin reads it;
- :mod:`.reverb_ir`: the model's reverb impulse response as ``reverb_ir_<rate>_hz.wav``;
- :mod:`.tf_graph` (TensorFlow): one decoder step with the controls' scaling inside,
  converted with builtin TFLite ops only;
- :mod:`.plugin`: the whole export, checked with the LiteRT interpreter before it is
  written, written atomically.

Only :mod:`.tf_graph` (and :func:`.plugin.export_plugin_model`, which uses it) needs
TensorFlow (the ``train`` extra).
"""
