"""A live stream starts with the process's objects frozen out of the garbage collector's
full passes (``ddsp_pd.stream.heap``): one such pass took 83 ms in a 10-minute stream."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT


def test_a_stream_freezes_the_heap_and_collects_only_when_none_plays() -> None:
    script = textwrap.dedent(
        f"""
        import gc
        from ddsp_pd.stream.engine import StreamEngine
        from ddsp_pd.stream.models import open_live_model
        from ddsp_pd.stream.runner import LiveRunner
        from ddsp_pd.stream import heap

        engine = StreamEngine(open_live_model({str(ROOT / "checkpoints" / "default")!r}), 48000)
        before = gc.get_freeze_count()
        with LiveRunner(engine, 256):
            during = gc.get_freeze_count()
        calls = []
        collect = gc.collect
        gc.collect = lambda *a: calls.append(1) or collect(*a)
        junk = [[object()] for _ in range(1000)]
        heap.settle_heap(full=False)  # beside a playing stream: freezes, collects nothing
        frozen = gc.get_freeze_count()
        with LiveRunner(engine, 256):  # none playing: collects (frozen garbage too) first
            with LiveRunner(engine, 256):  # one playing: collects nothing
                pass
        print("FREEZE", before, during, frozen, len(calls))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("FREEZE"))
    before, during, frozen, collects = (int(v) for v in line.split()[1:])
    assert before == 0
    assert during > 10_000  # the modules, kernels and model: what a full pass would walk
    assert frozen >= during + 1000  # the junk made since
    assert collects == 1
