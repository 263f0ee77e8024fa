"""Dynamic batching for the API: concurrent requests queue up and one worker thread runs them
through ``Engine.generate`` together (up to ``max_batch``).

How long a batch waits for more: it takes what is queued, then waits for the number of requests
that were in the server at once within the last second (``ConcurrencyWindow``), up to
``fill_wait_ms``; once that many are in (a lone client: at once) it starts. Without this, 16
clients that each send their next request when their answer arrives settle into two alternating
batches of 8: the clients of the batch just answered come back a few ms after the next batch
has started. ``max_wait_ms`` is the shortest wait when the recent concurrency is unknown (a first
request after a quiet second).

Requests with different decoding settings are generated in separate groups of one batch.
Streaming requests get their text deltas pushed into an asyncio queue while the batch decodes.
Counts (batches, studies, tokens, failures, batch sizes, queue wait and depth) are Prometheus
metrics on the registry the caller passes (the API server's, one per app).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cxr.clean import complete_sentences, drop_repeated_sentences
from generator.coverage import before_denial
from generator.engine import Engine, StudyInput
from generator.model import GenerationResult
from generator.settings import GenerationSettings

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    pass


class ConcurrencyWindow:
    """The most requests in the server at once (submitted, not yet answered) within the last
    ``seconds``: how many a batch can expect to gather."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds, self.in_flight = seconds, 0
        self._peaks: deque[tuple[float, int]] = deque()   # (time, in_flight) at each arrival

    def arrived(self, now: float) -> None:
        self.in_flight += 1
        self._peaks.append((now, self.in_flight))

    def answered(self, n: int = 1) -> None:
        self.in_flight -= n

    def peak(self, now: float) -> int:
        while self._peaks and self._peaks[0][0] < now - self.seconds:
            self._peaks.popleft()
        return max([self.in_flight, *(n for _, n in self._peaks)])


@dataclass
class Job:
    study: StudyInput
    settings: GenerationSettings
    future: asyncio.Future
    deltas: asyncio.Queue | None = None        # streaming: text pieces, as decoded
    queued_at: float = field(default_factory=time.perf_counter)


class BatchMetrics:
    """The batcher's Prometheus metrics, registered on ``registry`` (prometheus_client is thread-safe:
    the worker thread counts, the event loop scrapes)."""

    def __init__(self, registry: CollectorRegistry, max_batch: int, depth: Callable[[], int]) -> None:
        sizes = sorted({2 ** k for k in range(max_batch.bit_length()) if 2 ** k < max_batch} | {max_batch})
        self.batches = Counter("r2genkg_batches", "Batches generated (one per group of equal settings)",
                               registry=registry)
        self.studies = Counter("r2genkg_studies_generated", "Studies generated", registry=registry)
        self.tokens = Counter("r2genkg_tokens_generated", "Tokens generated", registry=registry)
        self.failures = Counter("r2genkg_generation_failures", "Studies whose batch failed to generate",
                                registry=registry)
        self.batch_size = Histogram("r2genkg_batch_size", "Studies per batch", buckets=sizes, registry=registry)
        self.queue_wait = Histogram("r2genkg_queue_wait_seconds", "Time a study waited for its batch",
                                    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
                                    registry=registry)
        self.queue_depth = Gauge("r2genkg_queue_depth", "Requests waiting for a batch", registry=registry)
        self.queue_depth.set_function(depth)


class _Streamer:
    """Turns a study's token ids into text deltas whose concatenation is the final report.

    With ``drop_repeated_sentences`` (the default) it sends whole sentences only, each once, as
    the report will have them. With ``cover_decisions`` (the default) it holds back everything from
    the first sentence that denies a finding decided positive (any finding, until told the
    decisions): the coverage pass may replace that sentence, and what was sent cannot be taken
    back (the rest follows when the report is done)."""

    def __init__(self, job: Job, tokenizer, loop: asyncio.AbstractEventLoop) -> None:
        self.job, self.tokenizer, self.loop = job, tokenizer, loop
        self.ids: list[int] = []
        self.sent = ""
        self.decided: list[str] | None = None    # the findings decided positive (None: not told yet)

    def token(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        if self.job.settings.drop_repeated_sentences or self.job.settings.cover_decisions:
            text = complete_sentences(text)
        if self.job.settings.drop_repeated_sentences:
            text = drop_repeated_sentences(text)[0]
        if self.job.settings.cover_decisions:
            text = before_denial(text, self.decided)
        text = text.rstrip()
        # hold back an incomplete UTF-8 sequence and trailing blanks: the report is stripped
        if text.endswith("\ufffd") or not text.startswith(self.sent) or len(text) == len(self.sent):
            return
        self._send(text[len(self.sent):])
        self.sent = text

    def finish(self, report: str) -> None:
        if report.startswith(self.sent) and len(report) > len(self.sent):
            self._send(report[len(self.sent):])
            self.sent = report

    def _send(self, piece: str) -> None:
        assert self.job.deltas is not None
        self.loop.call_soon_threadsafe(self.job.deltas.put_nowait, piece)


def _resolve(future: asyncio.Future, result: GenerationResult | None, error: BaseException | None) -> None:
    if future.done():      # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DynamicBatcher:
    def __init__(self, engine: Engine, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 256,
                 registry: CollectorRegistry | None = None, fill_wait_ms: float = 50.0) -> None:
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 1 or fill_wait_ms < 0:
            raise ValueError(f"DynamicBatcher: max_batch={max_batch}, max_wait_ms={max_wait_ms}, "
                             f"max_queue={max_queue}, fill_wait_ms={fill_wait_ms} must be ≥ 1, ≥ 0, ≥ 1, ≥ 0")
        self.engine, self.max_batch, self.max_wait = engine, max_batch, max_wait_ms / 1000
        self.fill_wait = max(fill_wait_ms, max_wait_ms) / 1000
        self.concurrency = ConcurrencyWindow()
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")   # owns the engine
        self.metrics = BatchMetrics(registry or CollectorRegistry(), max_batch, self.queue.qsize)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.worker.shutdown(wait=True)

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull as exc:
            raise QueueFullError(f"the server is busy: {self.queue.maxsize} requests are waiting") from exc
        self.concurrency.arrived(time.perf_counter())
        # answered when its future is (result, error or the client gone), by a callback added before
        # the client awaits it, so it runs first: a client that sends its next request as soon as
        # the answer is in is not counted twice (then a lone client would wait the fill wait)
        job.future.add_done_callback(lambda _: self.concurrency.answered())

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            expected = min(self.max_batch, self.concurrency.peak(time.perf_counter()))
            deadline = loop.time() + (self.fill_wait if expected > 1 else self.max_wait)
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0 or (expected > 1 and len(jobs) >= expected):
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            await self._run_batch(jobs, loop)

    async def _run_batch(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        """The batch in groups of equal decoding settings, one group after another in the worker."""
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for job in jobs:
            if not job.future.done():
                groups[astuple(job.settings)].append(job)
        for group in groups.values():
            try:
                await loop.run_in_executor(self.worker, self._generate, group, loop)
            except Exception as exc:   # whatever went wrong, the loop must keep serving
                log.exception("batch worker failed for a batch of %d", len(group))
                for job in group:
                    _resolve(job.future, None, exc)

    def _generate(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        """Runs in the worker thread."""
        now, m = time.perf_counter(), self.metrics
        for job in jobs:
            m.queue_wait.observe(now - job.queued_at)
        streamers = {i: _Streamer(j, self.engine.model.tokenizer, loop) for i, j in enumerate(jobs) if j.deltas}
        tap = (lambda i, t: streamers[i].token(t) if i in streamers else None) if streamers else None
        decided = (lambda i, names: setattr(streamers[i], "decided", names) if i in streamers else None) \
            if streamers else None
        try:
            results = self.engine.generate([j.study for j in jobs], jobs[0].settings, tap, decided)
        except Exception as exc:  # reported to every request of the group; the server lives on
            log.exception("generation failed for a batch of %d", len(jobs))
            m.failures.inc(len(jobs))
            for job in jobs:
                loop.call_soon_threadsafe(_resolve, job.future, None, exc)
            return
        m.batches.inc()
        m.studies.inc(len(jobs))
        m.batch_size.observe(len(jobs))
        for i, (job, result) in enumerate(zip(jobs, results)):
            m.tokens.inc(result.completion_tokens)
            if i in streamers:
                streamers[i].finish(result.report)
            loop.call_soon_threadsafe(_resolve, job.future, result, None)
