"""generator.batcher's batch forming: the recent concurrency a batch waits for, and the steady state
of clients that send their next request when their answer arrives (the API's usual load)."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from generator.batcher import ConcurrencyWindow, DynamicBatcher, Job
from generator.engine import StudyInput
from generator.model import Evidence, GenerationResult
from generator.settings import GenerationSettings


def test_the_window_remembers_the_peak_for_its_length():
    window = ConcurrencyWindow(seconds=1.0)
    for t in (0.0, 0.1, 0.2):
        window.arrived(t)
    window.answered(3)
    assert window.in_flight == 0 and window.peak(0.5) == 3   # answered, but seen together 0.3 s ago
    window.arrived(1.5)
    assert window.peak(1.5) == 1                             # the burst left the window


class TimedEngine:
    """An engine whose batch costs a fixed setup plus a little per study, like the HF engine on CPU
    (a batch of 16 costs far less than two of 8). It records the batch sizes it was given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def generate(self, studies, settings, on_token=None, on_decided=None):
        self.sizes.append(len(studies))
        time.sleep(0.03 + 0.002 * len(studies))
        return [GenerationResult(s.study_id, "no acute findings.", {}, Evidence(), completion_tokens=4)
                for s in studies]


async def _clients(batcher: DynamicBatcher, clients: int, rounds: int, turnaround_s: float) -> None:
    """Each client: submit, wait for the answer, come back after ``turnaround_s`` × a spread of 0.3–1.7
    (answers go out one by one; clients differ)."""
    spread = np.random.default_rng(0).uniform(0.3, 1.7, (clients, rounds))

    async def client(c: int) -> None:
        for r in range(rounds):
            job = Job(StudyInput(f"{c}-{r}", [np.zeros((8, 8), np.uint8)]), GenerationSettings(),
                      asyncio.get_running_loop().create_future())
            batcher.submit(job)
            await job.future
            await asyncio.sleep(turnaround_s * spread[c, r])   # the answer travels back, the next is sent

    batcher.start()
    try:
        await asyncio.gather(*(client(c) for c in range(clients)))
    finally:
        await batcher.stop()


@pytest.mark.parametrize("fill_wait_ms", [50.0, 5.0])
def test_clients_that_come_back_are_waited_for_not_split_into_two_batches(fill_wait_ms):
    """16 clients with a 5–25 ms turnaround: waiting for the recent concurrency (50 ms) keeps batches
    near 16; without it (fill_wait = max_wait = 5 ms) they settle into two alternating halves."""
    engine = TimedEngine()
    batcher = DynamicBatcher(engine, max_batch=16, max_wait_ms=5, fill_wait_ms=fill_wait_ms)  # type: ignore[arg-type]
    asyncio.run(_clients(batcher, clients=16, rounds=12, turnaround_s=0.015))
    steady = engine.sizes[2:]   # after the first batches (the window starts empty)
    mean = sum(steady) / len(steady)
    if fill_wait_ms == 50.0:
        assert mean >= 14, engine.sizes
    else:
        assert mean <= 10, engine.sizes


def test_a_lone_client_is_not_held_back_by_the_fill_wait():
    """A fill wait of a minute: a lone client held back by it even once would take 60 s a request;
    it takes about 0.04 s (the work + max_wait). The 30 s bound leaves any busy machine room."""
    engine = TimedEngine()
    batcher = DynamicBatcher(engine, max_batch=16, max_wait_ms=5, fill_wait_ms=60_000)  # type: ignore[arg-type]

    async def run() -> None:
        await asyncio.wait_for(_clients(batcher, clients=1, rounds=5, turnaround_s=0.0), timeout=30)

    asyncio.run(run())
    assert engine.sizes == [1] * 5


def test_a_request_counts_as_answered_when_its_answer_is_in():
    """Not when its batch's worker call returns: a client that sends its next request as soon as
    its answer is in (before the batch loop resumes) is still one client, not two."""
    batcher = DynamicBatcher(TimedEngine(), max_batch=16, max_wait_ms=5, fill_wait_ms=500)  # type: ignore[arg-type]

    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        first = Job(StudyInput("a", [np.zeros((8, 8), np.uint8)]), GenerationSettings(), loop.create_future())
        batcher.submit(first)

        async def client() -> tuple[int, int]:
            await first.future    # wakes when the answer is in; then sends its next request at once
            second = Job(StudyInput("b", [np.zeros((8, 8), np.uint8)]), GenerationSettings(), loop.create_future())
            batcher.submit(second)
            return batcher.concurrency.in_flight, batcher.concurrency.peak(time.perf_counter())

        waiting = asyncio.create_task(client())
        await asyncio.sleep(0)    # the client is awaiting its answer
        first.future.set_result(None)
        return await waiting

    assert asyncio.run(run()) == (1, 1)
