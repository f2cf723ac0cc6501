"""``ddsp-pd train``: fit a solo-instrument or DDSP-VST (``vst.gin``) model to a folder of
audio, write a ddsp checkpoint.

- :mod:`.dataset`: 4 s examples with f0 and loudness (or centred power, for VST models),
  computed once and cached.
- :mod:`.losses`: ddsp's multi-scale spectral loss.
- :mod:`.stats`: ``dataset_statistics.pkl`` contents, computed as ddsp does.
- :mod:`.writer`: the checkpoint directory in ddsp's own layout (solo or vst.gin gin).
- :mod:`.graph`: ddsp's checkpoint object graph for each architecture.
- :mod:`.loop`: Adam with ddsp's schedule and clipping, progress, checkpoints, resume.
"""
