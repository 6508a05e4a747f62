"""How stacks of copies are scheduled: side by side, one per core, each epoch on one core.

TensorFlow runs each op on one thread here (`transferlab/__init__.py`), and a batched matmul this
small does not use a second core anyway: two stacks on two cores do 1.4-1.7x the work per second of
one stack (bench/stacked_copies.md). A race cuts its copies into a fixed number of stacks (`chunks`)
and trains them on `lanes()` threads (`train_concurrently`); `CORES` lets at most one epoch per core
compute at a time, so an epoch's wall time is one core's time.
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def lanes() -> int:
    """How many stacks train at once: one per CPU core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# However many threads train stacks (a race's chunks, a sweep's races side by side), at most one
# epoch per core computes at a time, so each epoch's wall time is one core's time.
CORES = threading.BoundedSemaphore(lanes())


CHUNKS_PER_RACE = 4  # enough to keep two cores busy to the end of a race (copies stop at different epochs)


def chunks(members: Sequence[int], total: int) -> list[list[int]]:
    """One stack's members cut into near-equal chunks of at most ceil(total / CHUNKS_PER_RACE) copies.

    `total`: the copies in all stacks of the race. The cut does not depend on the machine's cores:
    a batched matmul's last bits can depend on how many copies share it, so a fixed cut keeps the
    same params giving the same bits on a machine with any number of cores (each op runs on one thread).
    """
    members = list(members)
    if not members:
        return []
    size = max(1, math.ceil(total / CHUNKS_PER_RACE))
    return [[int(i) for i in part] for part in np.array_split(members, math.ceil(len(members) / size))]


def train_concurrently(jobs: Sequence[Callable[[], T]], lanes: int) -> list[T]:
    """Run the jobs (each trains its own stack) on `lanes` threads; results in job order, the first error raised."""
    if lanes <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="lane") as pool:
        return list(pool.map(lambda job: job(), jobs))
