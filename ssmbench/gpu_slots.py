"""Which GPU a job of a multi-GPU sweep trains on: a GPU with a free slot, leased for as long as the job runs.

Hydra's joblib launcher hands the next job to whichever worker is free, not to the worker whose GPU is free. So
pinning by job number (job k on GPU k mod GPUs) put two Table 1 runs on one GPU while the other GPU idled, and
the 2-GPU sweep ran only 1.25x faster than one GPU (results/scaleout/README.md). Here each job instead takes a
slot: an exclusive `flock` on `<sweep dir>/.gpu_slots/gpu<g>.slot<j>`, j < jobs per GPU, held until the job
ends. The kernel drops the lock when the process dies, so a crashed or killed job never keeps its GPU busy.
Slots fill breadth first (slot 0 of every GPU before slot 1 of any), starting from the job number's GPU, so jobs
spread over the GPUs as evenly as the jobs running at that moment allow. With more jobs at once than slots
(hydra.launcher.n_jobs set above GPUs x jobs per GPU), a job that finds none free shares by job number, as before.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def take_slot(slot_dir: Path, gpus: int, per_gpu: int, start: int = 0) -> tuple[int, int | None]:
    """(gpu, file descriptor holding its slot); the descriptor is None when every slot was taken."""
    if gpus < 1 or per_gpu < 1:
        raise ValueError(f"take_slot: gpus={gpus} and jobs per GPU={per_gpu} must both be at least 1")
    slot_dir.mkdir(parents=True, exist_ok=True)
    order = [(start + i) % gpus for i in range(gpus)]
    for j in range(per_gpu):
        for g in order:
            fd = os.open(slot_dir / f"gpu{g}.slot{j}", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return g, fd
    return start % gpus, None


@contextmanager
def gpu_slot(slot_dir: Path, gpus: int, per_gpu: int, start: int = 0) -> Iterator[int]:
    """The GPU for one job, its slot held for the `with` block."""
    gpu, fd = take_slot(slot_dir, gpus, per_gpu, start)
    try:
        yield gpu
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock


def jobs_per_gpu() -> int:
    """SSMBENCH_JOBS_PER_GPU, the variable conf/hydra/launcher/local_gpus.yaml sizes n_jobs from (default 1)."""
    raw = os.environ.get("SSMBENCH_JOBS_PER_GPU", "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"SSMBENCH_JOBS_PER_GPU={raw!r}: expected a whole number of jobs per GPU, at least 1")
    return n
