"""Streaming: the live engine (``process(block) -> block``), ``ddsp-pd live`` and MIDI-driven
synthesis. See ``docs/live.md``.

- :mod:`.engine`: :class:`StreamEngine`, one per stream (pure: no threads, no devices).
- :mod:`.models`: :func:`open_live_model`, any model kind through the model-kind seam.
- :mod:`.runner`: :class:`LiveRunner` (a worker thread behind a callback that never
  blocks) and :func:`run_file` (``--file`` mode).
- :mod:`.devices`, :mod:`.osc`: PortAudio devices and the OSC server of ``ddsp-pd live``.
- :mod:`.analysis`, :mod:`.pitch`, :mod:`.controls`, :mod:`.synth`, :mod:`.convolution`,
  :mod:`.resample`, :mod:`.midi`: the stages.
"""

from ddsp_pd.stream.engine import EngineSettings, StreamEngine
from ddsp_pd.stream.models import LiveModel, open_live_model

__all__ = ["EngineSettings", "LiveModel", "StreamEngine", "open_live_model"]
