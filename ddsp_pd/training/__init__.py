"""``ddsp-pd train``: fit a solo-instrument model to a folder of audio, write a ddsp checkpoint.

- :mod:`.dataset`: 4 s examples with f0 and loudness, computed once and cached.
- :mod:`.losses`: ddsp's multi-scale spectral loss.
- :mod:`.stats`: ``dataset_statistics.pkl`` contents, computed as ddsp does.
- :mod:`.writer`: the checkpoint directory in ddsp's own layout.
- :mod:`.loop`: Adam with ddsp's schedule and clipping, progress, checkpoints, resume.
"""
