"""The shared/exclusive lock that runs in threads of one process take turns through (ssmbench.gpu_turns)."""

import threading
import time

import pytest

from ssmbench.gpu_turns import SharedExclusiveLock

WAIT = 5.0  # seconds: generous, only hit when the lock is broken


def test_shared_sections_run_at_the_same_time():
    lock = SharedExclusiveLock()
    both_inside = threading.Barrier(2, timeout=WAIT)
    errors = []

    def reader():
        try:
            with lock.shared():
                both_inside.wait()  # only passes when the two readers are inside together
        except threading.BrokenBarrierError as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not errors


def test_exclusive_waits_for_readers_and_keeps_new_ones_out():
    lock = SharedExclusiveLock()
    events = []
    reader_in, release_reader, writer_asked = threading.Event(), threading.Event(), threading.Event()

    def first_reader():
        with lock.shared():
            events.append("r1 in")
            reader_in.set()
            release_reader.wait(WAIT)
            events.append("r1 out")

    def writer():
        reader_in.wait(WAIT)
        writer_asked.set()
        with lock.exclusive():
            events.append("w in")
            time.sleep(0.05)
            events.append("w out")

    def late_reader():  # arrives while the writer waits: must go after it (writers first, no starvation)
        writer_asked.wait(WAIT)
        time.sleep(0.05)
        with lock.shared():
            events.append("r2 in")

    threads = [threading.Thread(target=f) for f in (first_reader, writer, late_reader)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert events == ["r1 in"]  # the writer waits for the reader in flight, the late reader for the writer
    release_reader.set()
    for t in threads:
        t.join(WAIT * 2)
    assert events == ["r1 in", "r1 out", "w in", "w out", "r2 in"]


def test_nesting_within_one_thread():
    lock = SharedExclusiveLock()
    with lock.shared():
        with lock.shared():  # a nested shared section passes through
            pass
        with pytest.raises(RuntimeError, match="exclusive.*inside this thread's own shared"):
            with lock.exclusive():
                pass
    with lock.exclusive():
        with lock.exclusive():  # re-entered by its holder
            with lock.shared():  # and a shared section inside it
                pass
    # everything released: another thread gets the exclusive turn at once
    got = threading.Event()
    t = threading.Thread(target=lambda: (lock.exclusive().__enter__(), got.set()))
    t.start()
    assert got.wait(WAIT)
