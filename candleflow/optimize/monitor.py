"""What a watcher sees of a search while it runs: candles counted as they are simulated, phases
that are not backtests named and kept alive, and batches running in other processes mirrored.

* **Candle blocks** (:func:`candle_block`): a watched evaluation runs the backtest kernel over
  blocks of candles and counts each block as it finishes, so "Candle 7,300/10,000" is work done,
  never a guess from time. Blocks are at least :data:`MIN_BLOCK` candles (a compiled call costs
  a few microseconds) and about :data:`BLOCKS_PER_EVALUATION` per evaluation; results do not
  depend on the block size.
* **Pulse** (:class:`Pulse`): a daemon thread that pokes the search's span every ``interval``
  seconds (a quarter by default, the tracker's throttle), so events keep coming (the same
  figure again, never a smaller one) while nothing countable moves — skopt choosing the next
  points, the model being updated, a Dask cluster starting — and shows what it is doing with
  the time spent in it ("choosing next points 3/16 (0:04)"); it also applies the reports of
  remote batches. When the cancel token is set it announces the cancel once
  (:meth:`~candleflow.progress.ProgressTracker.cancel`), so displays freeze at the figure the
  cancel found rather than the one the run reaches while it saves.
* **Remote batches**: where a batch runs in another process (a Dask worker), a
  :class:`BatchMeter` counts its evaluations and the candles of the one in flight and publishes
  small messages (about four a second); :class:`RemoteBatches` receives them in the flow's
  process and turns them into child spans of the iteration span, the same tree a thread-runner
  task builds directly. A batch's final count is settled from its result, since a message may
  arrive late or never; late messages of a settled batch are ignored, so counts never go back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from candleflow.errors import Cancelled
from candleflow.progress import CancelToken, Span, format_duration

__all__ = [
    "BLOCKS_PER_EVALUATION",
    "MIN_BLOCK",
    "BatchMeter",
    "Pulse",
    "RemoteBatches",
    "candle_block",
]

logger = logging.getLogger(__name__)

#: Fewest candles per compiled call of a watched evaluation (a call costs a few microseconds).
MIN_BLOCK = 8192
#: Blocks an evaluation is cut into, when its candles allow (≥ MIN_BLOCK each).
BLOCKS_PER_EVALUATION = 16


def candle_block(candles: int, chunk_size: int) -> int:
    """Candles per kernel call for a watched evaluation of ``candles`` candles: about
    1/:data:`BLOCKS_PER_EVALUATION` of them, at least :data:`MIN_BLOCK`, at most ``chunk_size``
    (the backtest config's own limit)."""
    share = -(-candles // BLOCKS_PER_EVALUATION)
    return max(1, min(chunk_size, max(MIN_BLOCK, share)))


class Pulse:
    """Keeps ``span``'s events coming and names the phase the search is in (module docstring).

    Use it as a context manager around the work (the thread runs inside). ``hooks`` run on every
    beat before the span is poked (e.g. :meth:`RemoteBatches.pump`). :meth:`phase` names a phase
    for a ``with`` block; :meth:`note` changes its text (a count) without restarting its clock.
    """

    def __init__(
        self,
        span: Span,
        *,
        token: CancelToken | None = None,
        interval: float = 0.25,
        hooks: Sequence[Callable[[], None]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.span = span
        self.token = token if token is not None else span.tracker.cancel_token
        self.interval = interval
        self.hooks = list(hooks)
        self._clock = clock
        self._lock = threading.Lock()
        self._text = ""
        self._since = 0.0
        self._announced = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- phases --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[None]:
        """Show ``text`` (with the time spent in it) while the block runs, then the phase it
        interrupted again (e.g. "waiting for the Dask workers" after "choosing next points")."""
        with self._lock:
            outer = (self._text, self._since)
        self.start_phase(text)
        try:
            yield
        finally:
            with self._lock:
                self._text, self._since = outer
            self.span.update(detail=self._detail())

    def start_phase(self, text: str) -> None:
        """Show ``text`` (with the time spent in it) until :meth:`end_phase` or the next phase."""
        with self._lock:
            self._text, self._since = text, self._clock()
        self.span.update(detail=self._detail())

    def end_phase(self) -> None:
        with self._lock:
            self._text = ""
        self.span.update(detail="")

    @property
    def current_phase(self) -> str:
        with self._lock:
            return self._text

    def note(self, text: str) -> None:
        """Change the current phase's text (e.g. its count), keeping its clock."""
        with self._lock:
            self._text = text
        self.span.update(detail=self._detail())

    def _detail(self) -> str:
        with self._lock:
            if not self._text:
                return ""
            spent = self._clock() - self._since
            return f"{self._text} ({format_duration(spent)})" if spent >= 1.0 else self._text

    # -- cancellation --------------------------------------------------------------------------

    def announce_cancel(self) -> None:
        """Once the token is set: emit the cancel at the figure reached now (once)."""
        if not self.token.cancelled:
            return
        with self._lock:
            if self._announced:
                return
            self._announced = True
        self.span.tracker.cancel(self.token.reason or "cancelled")

    # -- the beat ------------------------------------------------------------------------------

    def beat(self) -> None:
        """One beat (the thread's body; tests call it directly)."""
        for hook in self.hooks:
            try:
                hook()
            except Exception:  # a display must never break the search
                logger.exception("progress hook %r failed", hook)
        self.announce_cancel()
        detail = self._detail()
        self.span.update(detail=detail if detail else None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Pulse:
        self._thread = threading.Thread(target=self._run, name="optimize-pulse", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for hook in self.hooks:  # what arrived since the last beat
            with contextlib.suppress(Exception):
                hook()


class BatchMeter:
    """A batch's progress where it runs: evaluations finished and the candles of the one in
    flight, published through ``publish`` (a callable taking a small dict) at most every
    ``interval`` seconds and when the batch ends; ``cancelled`` (polled as often) sets
    :attr:`token`, the batch's cancel token. Use it as a context manager around the batch.

    Messages: ``{"batch", "seq", "finished", "candles", "total"}`` — ``total`` is the candle
    count of the evaluation in flight (0 between evaluations), ``seq`` orders them.
    """

    def __init__(
        self,
        batch: str,
        publish: Callable[[dict[str, Any]], None],
        *,
        interval: float = 0.25,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.batch = batch
        self.publish = publish
        self.interval = interval
        #: Set when ``cancelled()`` (polled every ``interval``) says the run was cancelled.
        self.token = CancelToken()
        self._cancelled = cancelled
        self._lock = threading.Lock()
        self._finished = 0
        self._candles = 0
        self._total = 0
        self._seq = 0
        self._sent: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def begin(self, candles: int) -> None:
        """An evaluation of ``candles`` candles starts."""
        with self._lock:
            self._candles, self._total = 0, candles

    def candles(self, n: int) -> None:
        """``n`` more candles of the evaluation in flight are simulated."""
        with self._lock:
            self._candles += n

    def end(self, finished: bool = True) -> None:
        """The evaluation in flight ended (``finished``: it produced its metrics)."""
        with self._lock:
            if finished:
                self._finished += 1
            self._candles, self._total = 0, 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batch": self.batch,
                "seq": self._seq,
                "finished": self._finished,
                "candles": self._candles,
                "total": self._total,
            }

    def flush(self) -> None:
        """Publish the current state if it changed since the last message."""
        with self._lock:
            state = (self._finished, self._candles, self._total)
            if state == self._sent:
                return
            self._sent = state
            self._seq += 1
        message = self.snapshot()
        try:
            self.publish(message)
        except Exception:
            if not self._failed:  # progress is a view: the batch goes on without it
                self._failed = True
                logger.exception("publishing the progress of batch %s failed", self.batch)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
            self._poll()

    def _poll(self) -> None:
        if self._cancelled is None or self.token.cancelled:
            return
        try:
            if self._cancelled():
                self.token.cancel("cancelled")
        except Exception:
            if not self._failed:
                self._failed = True
                logger.exception("checking whether batch %s was cancelled failed", self.batch)

    def __enter__(self) -> BatchMeter:
        self.flush()
        self._thread = threading.Thread(target=self._run, name="batch-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()


class _Mirror:
    __slots__ = ("child", "counted", "seq", "settled")

    def __init__(self) -> None:
        self.child: Span | None = None
        self.counted = 0  # evaluations credited to the iteration span
        self.seq = 0
        self.settled = False


class RemoteBatches:
    """The flow-side mirror of :class:`BatchMeter` messages (module docstring).

    :meth:`receive` may be called from any thread (Dask's event loop) and only queues;
    :meth:`pump` (a :class:`Pulse` hook) and :meth:`settle` apply, under one lock, to ``span``.
    """

    def __init__(self, span: Span) -> None:
        self.span = span
        self._lock = threading.Lock()
        self._inbox: list[Mapping[str, Any]] = []
        self._inbox_lock = threading.Lock()
        self._batches: dict[str, _Mirror] = {}
        self.received = 0

    def receive(self, message: Mapping[str, Any]) -> None:
        with self._inbox_lock:
            self._inbox.append(message)
            self.received += 1

    def pump(self) -> None:
        with self._lock:
            self._drain()

    def settle(self, batch: str, evaluated: int) -> None:
        """Batch ``batch`` returned ``evaluated`` metrics: credit exactly that many."""
        with self._lock:
            self._drain()
            mirror = self._batches.setdefault(batch, _Mirror())
            if mirror.settled:
                return
            mirror.settled = True
            if mirror.child is not None:
                if mirror.counted < evaluated:
                    self._close(mirror, finished=True)
                else:
                    self._close(mirror, finished=False)
            if mirror.counted < evaluated:
                self.span.advance(evaluated - mirror.counted)
                mirror.counted = evaluated

    def _drain(self) -> None:
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        for message in inbox:
            try:
                self._apply(message)
            except (KeyError, TypeError, ValueError):
                logger.warning("ignoring a malformed progress message: %r", message)

    def _apply(self, message: Mapping[str, Any]) -> None:
        mirror = self._batches.setdefault(str(message["batch"]), _Mirror())
        seq = int(message["seq"])
        if mirror.settled or seq <= mirror.seq:
            return  # late: the batch's result (or a newer message) already said more
        mirror.seq = seq
        finished = int(message["finished"])
        if finished > mirror.counted and mirror.child is not None:
            self._close(mirror, finished=True)
        if finished > mirror.counted:
            self.span.advance(finished - mirror.counted)
            mirror.counted = finished
        total = int(message["total"])
        if total > 0:
            if mirror.child is None:
                child = self.span.child("backtest", total=total, unit="Candle")
                child.__enter__()
                mirror.child = child
            mirror.child.update(min(int(message["candles"]), total))

    def _close(self, mirror: _Mirror, *, finished: bool) -> None:
        child, mirror.child = mirror.child, None
        if child is None:
            return
        if finished:
            child.__exit__(None, None, None)  # gives the iteration span its one item
            mirror.counted += 1
        else:  # stopped part-way (cancelled): an unfinished evaluation counts nothing
            reason = Cancelled("cancelled")
            child.__exit__(Cancelled, reason, None)
