"""Loaded models inside a scoring server, and the adaptive micro-batcher in front of each.

Batching: concurrent requests for one model are coalesced into one ``predict`` call. The batcher
never waits on an idle model: the first request runs at once, and the requests that arrive while
a call runs are joined into the next call (up to ``max_batch_rows`` rows). ``max_wait_ms`` adds a
bounded wait before each call for users who prefer larger batches to lower latency. A batch that
fails is retried request by request, so one bad request never fails its neighbours. Models that
cannot batch (scoring scripts, models whose output has not one result per row) run one request
per call.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import random
import threading
import time
import traceback
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from ..monitoring.records import Record, split_positions, split_rows
from ..registry.inputs import Chunk, InputSpec, split_output

log = logging.getLogger("mlops_lab.serving")

INLINE_BELOW_S = 0.001  # models faster than this run on the event loop, skipping a thread hop
#: Models that batch, slower than INLINE_BELOW_S but faster than this, run on the event loop too
#: when their request is the server's only one (one caller at a time): the hop to the predict thread and
#: back, and the thread's cold caches on the other core, cost a lone caller 0.3-2 ms a call here
#: (bench/README.md, issue 18); with other requests in flight the thread lets them be read and
#: gathered into the next batch meanwhile. Above it, a call would hold up the server's other
#: routes (health, metrics) too long.
LONE_INLINE_BELOW_S = 0.01


def new_error_id() -> str:
    return os.urandom(6).hex()


@dataclass
class BatchConfig:
    enabled: bool = True
    max_batch_rows: int = 4096
    max_wait_ms: float = 0.0


@dataclass
class ModelStats:
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_s: float = 0.0
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "errors": self.errors, "rows": self.rows, "batches": self.batches,
            "mean_latency_ms": round(1000 * self.latency_s / self.requests, 3) if self.requests else None,
        }


@dataclass
class ServedModel:
    """One registered version loaded in the server."""

    name: str
    version: int
    model: Any  # LoadedModel
    meta: dict[str, Any]
    traffic: float = 100.0
    batching: BatchConfig = field(default_factory=BatchConfig)
    stats: ModelStats = field(default_factory=ModelStats)
    counters: Any = None  # the server's metrics.Counters, set by the app
    #: Set in a shadow's worker (:mod:`.shadow`): its answers are only collected.
    shadow: float = 0.0

    def __post_init__(self) -> None:
        self.ref = f"{self.name}:{self.version}"
        self.spec = InputSpec(self.meta.get("signature"))
        self.raw_body = self.meta.get("flavor") == "script"
        self.output_name = {"predict": "predict", "predict_proba": "predict_proba"}.get(
            getattr(self.model, "method", ""), "output"
        )
        self.inline = False
        self.lone_inline = False  # run on the event loop when its request is the only one in flight
        self.warm_call_s: float | None = None  # one predict call on the example, at warm-up
        self.can_batch = self.spec.batchable and not self.raw_body and self.batching.enabled
        # Names of the input columns in collected data.
        self.collect_types: list[str] | None = None
        if self.spec.kind == "columns":
            self.collect_columns: list[str] | None = list(self.spec.columns)
            self.collect_types = [
                "float" if t in ("integer", "float") else "bool" if t == "boolean" else "string" for t in self.spec.types
            ]
        elif self.spec.kind == "tensor" and len(self.spec.shape) == 2 and isinstance(self.spec.shape[1], int) and self.spec.shape[1] > 0:
            self.collect_columns = [f"f{i}" for i in range(self.spec.shape[1])]
            self.collect_types = ["float"] * self.spec.shape[1]
        else:
            self.collect_columns = None
        # Rows of numbers beside other columns are collected split (monitoring.records.Split).
        types = self.collect_types
        self.collect_split = split_positions(types) if types and "float" in types else None
        self._pending: deque[tuple[Chunk, asyncio.Future]] = deque()
        self._busy = False
        self._call_s = 0.0  # moving average of one predict call, for the adaptive wait
        self._last_batch = 1  # requests in the last batch: >1 means concurrent callers
        self._filled: asyncio.Future | None = None  # set when the batch being gathered is full
        self._want = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{self.name}")
        self._lock = threading.Lock()
        self._inflight = 0  # requests in predict() now

    # -- start-up --------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Score the input example once: proves the model answers, measures it, and decides
        whether it can batch (one result per row) and run inline (fast enough)."""
        example = self.meta.get("input_example")
        if example is None or self.raw_body:
            return
        chunk = self.spec.from_rows(example) if isinstance(example, list) else None
        if chunk is None:
            return
        x = self.spec.model_input([chunk])
        out = self.model.predict(x)
        n = len(out) if hasattr(out, "__len__") else None
        if n != chunk.n:
            self.can_batch = False
        x = self._as_array(chunk, x, out)
        x = self._by_columns(chunk, x, out)
        self._faster(x, out)
        # Time the call as it will be made (array or frame, faster call or the model's own);
        # the best of three: the first calls pay for lazy imports and caches.
        elapsed = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            self.model.predict(self.spec.model_input([chunk]))
            elapsed = min(elapsed, time.perf_counter() - t0)
        self.inline = elapsed < INLINE_BELOW_S
        self.lone_inline = elapsed < LONE_INLINE_BELOW_S
        self.warm_call_s = elapsed
        log.info("%s warmed up: %.3f ms per call on %d rows, batching %s, %s", self.ref, elapsed * 1000,
                 chunk.n, "on" if self.can_batch else "off", self.mode)

    @property
    def mode(self) -> str:
        """Where calls run: ``inline`` (on the event loop), ``threaded`` (in the predict
        thread), or ``threaded unless alone`` (inline for a request that is the only one)."""
        return "inline" if self.inline else "threaded unless alone" if self.lone_inline else "threaded"

    def _here(self, batch: int) -> bool:
        """Whether the drainer's call for ``batch`` requests runs on the event loop (its calls
        run one at a time, wherever they run)."""
        return self.inline or (self.lone_inline and batch == 1 and self._inflight == 1)

    def _as_array(self, chunk: Chunk, frame: Any, out: Any) -> Any:
        """Give the model its rows as an array instead of a DataFrame (:mod:`.accel`) if it
        answers the example exactly as it did on the frame; returns the input to use."""
        from .accel import NO_NAMES_WARNING, takes_array

        spec = self.spec
        if not spec.takes_arrays() or chunk.form != "array" or not takes_array(getattr(self.model, "model", None), spec.columns):
            return frame
        # scikit-learn warns on every call that the array has no column names; they are the
        # ones it was fitted with, in order (takes_array), and this process only serves models.
        warnings.filterwarnings("ignore", message=NO_NAMES_WARNING, category=UserWarning)
        x = self._same_on("array_input", self.model.predict, chunk, out, "the model", "an array")
        if x is None:
            return frame
        log.info("%s: scored on an array in the fitted column order, not a DataFrame (same results on the example)", self.ref)
        return x

    def _by_columns(self, chunk: Chunk, frame: Any, out: Any) -> Any:
        """Score a pipeline that selects its columns by name on the request's rows as one array
        (:func:`.accel.columns_call`) if it answers the example exactly as on the DataFrame;
        returns the input to use."""
        from .accel import NO_NAMES_WARNING, columns_call

        spec, loaded = self.spec, self.model
        if spec.kind != "columns" or spec.array_input or not hasattr(frame, "dtypes"):
            return frame
        try:
            call = columns_call(getattr(loaded, "model", None), getattr(loaded, "method", ""), spec.columns, spec.types,
                                spec.may_miss, dict(zip(map(str, frame.columns), frame.dtypes)))
        except Exception as exc:  # noqa: BLE001 - an estimator of another version's layout
            log.warning("%s: cannot score the pipeline's columns without the DataFrame (%s)", self.ref, exc)
            call = None
        if call is None:
            return frame
        # its transformers were fitted with the column names they now get as an array
        warnings.filterwarnings("ignore", message=NO_NAMES_WARNING, category=UserWarning)
        x = self._same_on("rows_input", call, chunk, out, "the pipeline", "its rows as an array")
        if x is None:
            return frame
        loaded.use_call(call)
        log.info("%s: scored transformer by transformer on the rows as an array, not a DataFrame (same results on "
                 "the example)", self.ref)
        return x

    def _same_on(self, form: str, call: Any, chunk: Chunk, out: Any, who: str, what: str) -> Any:
        """Turn on the input ``form`` (a flag of the signature's spec) and score the example with
        ``call``: the input, if the answer has the same bits as ``out`` (what the model answered
        on the DataFrame); else None, with the form off again and the reason logged."""
        from .accel import same_output

        setattr(self.spec, form, True)
        try:
            x = self.spec.model_input([chunk])
            if same_output(call(x), out):
                return x
            log.info("%s: scored on a DataFrame (%s answers %s differently)", self.ref, who, what)
        except Exception as exc:  # noqa: BLE001 - the DataFrame stays
            log.warning("%s: %s failed on %s (%s): kept the DataFrame", self.ref, who, what, exc)
        setattr(self.spec, form, False)
        return None

    def _faster(self, x: Any, out: Any) -> Any:
        """Swap in a faster call with the same results (:mod:`.accel`) if the model has one and
        it answers the example exactly as the model's own call did; returns it, or None."""
        from .accel import faster_call, same_output

        loaded = self.model
        faster = faster_call(getattr(loaded, "model", None), getattr(loaded, "method", ""))
        if faster is None:
            return None
        try:
            same = same_output(faster(x), out)
        except Exception as exc:  # noqa: BLE001 - the model's own call stays
            log.warning("%s: the faster call failed on the example (%s): kept the model's own", self.ref, exc)
            return None
        if not same:
            log.warning("%s: the faster call answered the example differently: kept the model's own", self.ref)
            return None
        loaded.use_call(faster)
        log.info("%s: scored %s (same results on the example)", self.ref, getattr(faster, "how", "by a faster call"))
        return faster

    # -- scoring ---------------------------------------------------------------------------

    def _call(self, chunks: list[Chunk]) -> Any:
        x = self.spec.model_input(chunks)
        return self.model.predict(x)

    def _run(self, chunks: list[Chunk]) -> list[Any]:
        """Predict for several requests in one call and split the result."""
        t0 = time.perf_counter()
        out = self._call(chunks)
        self._call_s = 0.8 * self._call_s + 0.2 * (time.perf_counter() - t0) if self._call_s else time.perf_counter() - t0
        return split_output(out, [c.n for c in chunks])

    def _wait_s(self) -> float:
        """How long to let a batch fill before calling the model.

        ``max_wait_ms`` when set; and for a slow model (a millisecond or more per call) under
        concurrent load (the last batch held several requests), a fifth of a call, at most 5 ms:
        the callers answered by the last call are sending their next requests, and a call that
        waits for them serves them all at once instead of one by one; the wait ends as soon as
        they are all back (:meth:`_gather`). An idle model or a single caller never waits."""
        wait = self.batching.max_wait_ms / 1000
        if not self.inline and self._last_batch > 1 and self._call_s >= 0.001:
            wait = max(wait, min(0.2 * self._call_s, 0.005))
        return wait

    def _fail(self, exc: BaseException) -> ModelError:
        error_id = new_error_id()
        log.error("error %s in %s: %s\n%s", error_id, self.ref, exc,
                  "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
        return ModelError(f"the model {self.ref} raised {type(exc).__name__}: {exc}", error_id)

    async def _gather(self, yield_: bool = False) -> None:
        """Let the next batch fill before a call (:meth:`_wait_s`): at most the wait, and with
        the adaptive wait only until as many requests are pending as the last call served."""
        wait = self._wait_s()
        if wait <= 0:
            if yield_:
                await asyncio.sleep(0)  # let requests that arrived reach the queue
            return
        want = self._last_batch if self.batching.max_wait_ms <= 0 else float("inf")
        if len(self._pending) >= want:
            return
        loop = asyncio.get_running_loop()
        fut = self._filled = loop.create_future()
        self._want = want
        timer = loop.call_later(wait, _settle, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._filled = None

    async def predict(self, chunk: Chunk) -> Any:
        """The model's answer for one request's rows (possibly scored with others)."""
        self._inflight += 1
        try:
            if not self.can_batch:
                return await self._single(chunk)
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._pending.append((chunk, fut))
            if self._filled is not None and len(self._pending) >= self._want:
                _settle(self._filled)
            if not self._busy:
                self._busy = True
                # Keep a reference: the loop holds tasks only weakly.
                self._drainer = loop.create_task(self._drain())
            return await fut
        finally:
            self._inflight -= 1

    async def _single(self, chunk: Chunk) -> Any:
        if self.counters is not None:
            self.counters.batch(self.ref, chunk.n)
        try:
            # (inline only for a fast model: the drainer's one-call-at-a-time, which makes a
            # lone call on the event loop safe, is not here; a call left running in the thread
            # by a caller who went away could otherwise meet one on the loop)
            if self.inline:
                return self.model.predict(self.spec.model_input([chunk]))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._call, [chunk])
        except Exception as exc:  # noqa: BLE001 - any model failure becomes a 500 with an id
            raise self._fail(exc) from None

    async def raw(self, body: str) -> Any:
        """An Azure-style entry script's ``run()`` with the raw request body."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.model.predict, body)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._gather()
            pending = self._pending
            max_rows = self.batching.max_batch_rows
            while pending:
                batch = [pending.popleft()]
                rows = batch[0][0].n
                while pending and rows + pending[0][0].n <= max_rows:
                    item = pending.popleft()
                    batch.append(item)
                    rows += item[0].n
                chunks = [c for c, _ in batch]
                self.stats.batches += 1
                self._last_batch = len(batch)
                if self.counters is not None:
                    self.counters.batch(self.ref, rows)
                try:
                    if self._here(len(batch)):
                        outs = self._run(chunks)
                    else:
                        outs = await loop.run_in_executor(self._executor, self._run, chunks)
                except Exception as exc:  # noqa: BLE001
                    if len(batch) == 1:
                        _settle(batch[0][1], exc=self._fail(exc))
                    else:
                        # Isolate the request at fault: score each one on its own.
                        for chunk, fut in batch:
                            try:
                                _settle(fut, result=await self._single(chunk))
                            except ModelError as err:
                                _settle(fut, exc=err)
                else:
                    for (_, fut), out in zip(batch, outs):
                        _settle(fut, result=out)
                # Let the requests that arrived meanwhile reach the queue: they form the next batch.
                await self._gather(yield_=True)
        finally:
            self._busy = False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(fut: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def make_record(model: ServedModel, request_id: str, when: float, latency_ms: float, status: int, chunk: Chunk | None = None,
                out: Any = None, error_id: str | None = None) -> Any:
    """The collected record of one request ``model`` answered (references to its arrays, no copies)."""
    inputs = None
    n = 0
    columns, types = model.collect_columns, model.collect_types
    if chunk is not None:
        n = chunk.n
        if chunk.form == "array":
            inputs = chunk.data
        elif chunk.form == "rows":
            # The rows as one array of objects (the cyclic garbage collector does not go over
            # it, as it went over lists of rows in every pass while they waited for the
            # writer); with number columns, split: the numbers as one float64 array, not
            # Python floats held until the writer's flush and freed there in bulk
            inputs = chunk.objects(len(columns)) if columns else chunk.data
            if model.collect_split is not None:
                inputs = split_rows(inputs, *model.collect_split)
        elif chunk.form == "records" and chunk.data:
            columns, types = list(chunk.data[0]), None
            inputs = [[r.get(c) for c in columns] for r in chunk.data]
        if columns is None and isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            columns = [f"f{i}" for i in range(inputs.shape[1])]
            types = ["float"] * inputs.shape[1]
    if n and out is not None and (not hasattr(out, "__len__") or len(out) != n):
        out = None  # not one result per row: keep the inputs, leave the prediction out
    return Record(when, request_id, model.ref, status, latency_ms, error_id, inputs, columns, types, out, n)


class Route:
    """The models behind one path: one model, or several sharing traffic (a canary); and the
    shadows that get a copy of its requests (:meth:`DataPlane.mirror`)."""

    def __init__(self, name: str, models: list[ServedModel]) -> None:
        self.name = name
        self.models = models
        self.shadows: list[Any] = []  # serving.shadow.ShadowLink, one per shadow version
        total = sum(m.traffic for m in models)
        acc, self._cum = 0.0, []
        for m in models:
            acc += m.traffic / total if total else 1 / len(models)
            self._cum.append(acc)
        self._rand = random.random

    def pick(self) -> ServedModel:
        if len(self.models) == 1:
            return self.models[0]
        i = bisect.bisect_left(self._cum, self._rand())
        return self.models[min(i, len(self.models) - 1)]
