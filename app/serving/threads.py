"""How many BLAS threads step the generator's streams: the faster of one and all, measured on the steps themselves
while the engine runs, apart for steps of a few streams and of more.

No fixed setting suits both machines the service meets. On an idle 2-core machine, two OpenBLAS threads step a
stream in about half the time of one (the recurrent weights fit in the two cores' caches together, not in one
core's). When another process keeps a core busy, a two-thread step waits for its preempted worker thread: beside
one training process (what `make serve` runs in the background for its first hour), one stream's step took 2.8 ms
on two threads against 0.34 ms on one (means of 2,000 interleaved steps), 32 streams' 26 ms against 1.8 ms, and one
HTTP stream fell to under 300 chars/s (commit 31cf32a; bench/swaps.py now measures generation beside a trainer). So
the engine tries both now and then and keeps the faster.

OpenBLAS gives the same result bit for bit on one thread or two (it splits the output columns between threads), so
a stream's text does not depend on the choice (tests/app/test_threads.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)

T = TypeVar("T")


class FasterOf(Generic[T]):
    """Which of several options does the same work faster now, measured on the work itself.

    `pick()` names the option for the next run and `record(seconds)` takes how long that run took. A probe runs
    the options in turn, `probe_runs` times each, interleaved so that they meet the same work (a batch's size
    changes between runs), and keeps the one with the lowest mean: the mean, not the median, since a run that
    waits for a preempted thread is what a throughput pays for. The winner then serves alone for `hold_s`,
    doubled (up to `max_hold_s`) each time a probe confirms it, so an unchanged machine is probed less and less.
    """

    def __init__(
        self, options: Sequence[T], probe_runs: int = 8, hold_s: float = 1.0, max_hold_s: float = 16.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if not options:
            raise ValueError("FasterOf needs at least one option")
        self.options, self.probe_runs = list(options), probe_runs
        self.min_hold, self.max_hold, self.hold = hold_s, max_hold_s, hold_s
        self.clock = clock
        self.best = 0  # the option serving between probes
        self.until = clock()  # when the next probe starts: at once
        self.times: list[list[float]] | None = None  # per option, while probing
        self.turn = 0  # runs recorded in this probe
        self.trying = 0
        self.means: dict[T, float] = {}  # the last probe's mean run, in seconds, by option

    @property
    def choice(self) -> T:
        """The option serving between probes."""
        return self.options[self.best]

    def pick(self) -> T:
        if self.times is None:
            if len(self.options) == 1 or self.clock() < self.until:
                return self.options[self.best]
            self.times, self.turn = [[] for _ in self.options], 0
        self.trying = self.turn % len(self.options)
        return self.options[self.trying]

    def record(self, seconds: float) -> None:
        if self.times is None:
            return
        self.times[self.trying].append(seconds)
        self.turn += 1
        if self.turn < self.probe_runs * len(self.options):
            return
        means = [sum(t) / len(t) for t in self.times]
        self.means = dict(zip(self.options, means, strict=True))
        best = min(range(len(means)), key=means.__getitem__)
        self.hold = min(2 * self.hold, self.max_hold) if best == self.best else self.min_hold
        if best != self.best:
            log.debug("now %s: mean run %s", self.options[best], ", ".join(f"{m * 1e6:.0f} us" for m in means))
        self.best, self.times = best, None
        self.until = self.clock() + self.hold


class BlasThreads:
    """Runs NumPy's BLAS work on the faster of one thread and all of them (FasterOf), setting the thread count
    through threadpoolctl. One per process (`blas_threads()`: the count is the process's, whichever engine steps).
    Without a BLAS that threadpoolctl can set, or with one thread allowed, `run` only calls.

    Steps of a few streams (the Stepper's GEMV_ROWS) and steps of more choose apart: their products differ
    (matrix-vector products, whose weights fit in the two cores' caches together but not in one core's; one matrix
    product), and so does the faster count. With one choice for both, a probe over 32 streams in the service often
    picked one thread and held it for the single streams that followed: over HTTP, six fresh servers of each
    alternating, a warm-up of 32 streams, then one stream at a time, 4,238 chars/s (median; 3,091 where one thread
    had been picked) against 5,550 with the choices apart, and 27,632 against 29,428 for 32 streams (this 2-core
    machine, 2026-12-07)."""

    def __init__(self) -> None:
        found = ThreadpoolController().select(user_api="blas").lib_controllers
        self.library = found[0] if found else None
        self.threads: int = self.library.num_threads if self.library else 1
        options = sorted({1, self.threads})
        self.choosers: dict[str, FasterOf[int]] = {"few": FasterOf(options), "more": FasterOf(options)}

    def describe(self) -> dict[str, object]:
        """For /models: the thread count chosen for a step of a few streams and of more, and their last probes' mean
        step by thread count, in µs."""
        steps = {path: {str(n): round(mean * 1e6) for n, mean in c.means.items()} for path, c in self.choosers.items()}
        return {"blas_threads": self.choosers["few"].choice, "blas_threads_more": self.choosers["more"].choice,
                "step_us_by_threads": steps}  # fmt: skip

    def run(self, few: bool, work: Callable[..., Any], *args: Any) -> Any:
        """work(*args), a step of a few streams or of more (`few`), on the thread count its chooser picks, timed for
        it."""
        if self.library is None:
            return work(*args)
        chooser = self.choosers["few" if few else "more"]
        wanted = chooser.pick()
        if wanted != self.threads:
            self.library.set_num_threads(wanted)
            self.threads = wanted
        started = time.perf_counter()
        out = work(*args)
        chooser.record(time.perf_counter() - started)
        return out


@functools.cache
def blas_threads() -> BlasThreads:
    return BlasThreads()
