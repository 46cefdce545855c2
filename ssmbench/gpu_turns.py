"""Turns on the process's global CUDA state for runs that train in threads of one process (ssmbench.multirun).

Every CUDA graph torch captures registers the device's default generator, and a graph's replay prepares that
generator's state. While one thread captures its step, that generator is in capture mode: another thread's
replay then fails ("Cannot prepare for replay during capturing stage"), and its eager kernels that draw from
the generator (or seeding, or saving/restoring the RNG state) corrupt the capture ("Attempt to increase offset
for a CUDA generator not in capture mode"), after which kernels read freed memory. Seen on the H200 with eight
runs in one process (results/training/README.md).

So work on the process's global CUDA state takes turns through one shared/exclusive lock:
- `shared()`: a training step, a held-out check, an evaluation -- any number at once (the point of threads);
- `exclusive()`: a graph capture, parameter init under a global seed, setting or reading the RNG state --
  alone, after the shared sections in flight end; it waits no longer than one step of each other run.
Waiting writers go first, so a capture is not starved by the other runs' steady stream of steps. A thread that
already holds a section passes through a nested `shared()`; asking for `exclusive()` while holding `shared()`
would wait for itself, so it raises instead.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class SharedExclusiveLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # shared sections in flight
        self._writer = False  # an exclusive section in flight
        self._writers_waiting = 0
        self._local = threading.local()  # this thread's depth: (shared, exclusive)

    def _depth(self) -> list[int]:
        if not hasattr(self._local, "depth"):
            self._local.depth = [0, 0]
        return self._local.depth

    @contextmanager
    def _counted(self, kind: int):
        """This thread's depth in sections of `kind` (0 shared, 1 exclusive) while the block runs."""
        depth = self._depth()
        depth[kind] += 1
        try:
            yield
        finally:
            depth[kind] -= 1

    @contextmanager
    def shared(self):
        if any(self._depth()):  # nested inside this thread's own section: already has its turn
            with self._counted(0):
                yield
            return
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            with self._counted(0):
                yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        shared_depth, exclusive_depth = self._depth()
        if exclusive_depth:  # re-entered by the thread that holds it
            with self._counted(1):
                yield
            return
        if shared_depth:
            raise RuntimeError("gpu_turns: exclusive() asked for inside this thread's own shared() section; it "
                               "would wait for itself. End the shared section first.")
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            with self._counted(1):
                yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# The one lock of the process: every run in it takes its turns here.
GPU_TURNS = SharedExclusiveLock()
