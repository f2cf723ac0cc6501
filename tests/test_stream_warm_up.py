"""A warmed-up stream compiles or loads no kernel while it plays.

Loading a numba kernel from its cache on a stream's first frame took 20-35 ms, a dropout at
the start of every live stream at block 256 and 10-16 ms of slack. The check runs in a fresh
interpreter: in this one, earlier tests have loaded every kernel already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ddsp_pd.inference import kernels
from tests.conftest import ROOT

SCRIPT = r"""
import sys
import numpy as np
from ddsp_pd.inference import compiled
from ddsp_pd.stream import kernels as stream_kernels, polyphase
from ddsp_pd.stream.engine import EngineSettings, StreamEngine
from ddsp_pd.stream.models import open_live_model

def signatures():
    found = {}
    for module in (compiled, stream_kernels, polyphase):
        for name, value in vars(module).items():
            sigs = getattr(value, "signatures", None)
            if sigs is not None and hasattr(value, "py_func"):
                found[f"{module.__name__}.{name}"] = len(sigs)
    return found

model = open_live_model(None)
engine = StreamEngine(model, int(sys.argv[1]), EngineSettings(frames_per_step=2))
engine.warm_up()
before = signatures()
rate = engine.host_rate
t = np.arange(2 * rate) / rate
tone = (0.3 * np.sin(2 * np.pi * 196.0 * t) * (t > 0.2)).astype(np.float32)
for start in range(0, tone.size - 256, 256):
    engine.process(tone[start : start + 256])
after = signatures()
new = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
print("NEW", new)
assert sum(before.values()) > 0
"""


@pytest.mark.skipif(not kernels.compiled_available(), reason="numba is not installed")
@pytest.mark.parametrize("rate", [48000, 16000])
def test_a_warmed_up_stream_loads_no_kernel_while_it_plays(rate: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(rate)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NEW {}" in done.stdout, done.stdout
