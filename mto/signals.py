"""The signals that ask a run to stop, and a test-only hook that raises them at a named point.

SLURM sends SIGTERM before it preempts a job, and the signal a job asked for before its time limit
(submitit asks for SIGUSR2); Ctrl-C sends SIGINT. A run (`mto.runs.Run`) handles them from its start to
its final status:

- while the training loop runs (it enters `StopSignals()` itself), a signal only sets a flag: the loop
  takes a checkpoint at the end of the step and then stops with `Interrupted`;
- everywhere else (loading, the final save, evaluation: their files are written atomically, so stopping
  anywhere leaves nothing half-written) the run stops at once with `Interrupted`;
- while the run writes its final status (`deferred()`), a signal waits: the status is always written.

Before stopping, the handler that was there before ours (submitit's, which requeues the job) gets the
signal. Written by hand: the standard library's `signal` is the whole mechanism; what is ours is when a
signal may act.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator

from mto import world
from mto.errors import Interrupted

log = logging.getLogger("mto")

# Test-only: `MTO_TEST_SIGNAL_AT=<point>:<SIGNAL>[,<point>:<SIGNAL>...]` makes this process raise SIGNAL
# (TERM, USR1, KILL, STOP, ...) to itself when it reaches <point> (`step-30`: after training step 30;
# `checkpoint-written-40`, `checkpoint-renamed-40`, `checkpoint-pruned-40`: inside the checkpoint swap at
# step 40; `save-model`: before the final model is written). Tests use it to interrupt a run at an exact
# place instead of racing the wall clock; nothing else sets it. `<point>:<SIGNAL>@parent` sends it to the
# parent process instead (a stage run by `mto run`: the signal reaches the pipeline, as a scheduler's would).
# `<point>@<rank>:<SIGNAL>` raises it in the process of that rank only (a job of several processes,
# mto/world.py).
TEST_SIGNAL_ENV = "MTO_TEST_SIGNAL_AT"


def test_hook(point: str) -> None:
    """Raise the signal `MTO_TEST_SIGNAL_AT` names for `point` (test-only; a no-op when unset)."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, name = item.strip().rpartition(":")
        where, _, rank = where.partition("@")
        name, _, target = name.partition("@")
        if where == point and (not rank or int(rank) == world.rank()):
            sig = getattr(signal, f"SIG{name.upper()}")
            if target == "parent":
                os.kill(os.getppid(), sig)
            else:
                signal.raise_signal(sig)


class StopSignals:
    """SIGTERM, SIGUSR1, SIGUSR2 and SIGINT as a flag (`immediate=False`: the loop reads `received`
    between steps) or as `Interrupted` at once (`immediate=True`: a whole run).

    Entered while another instance is active (the training loop inside a run), it keeps that instance's
    handlers and switches it to its own mode until it exits; `with StopSignals() as s` then gives the
    active instance."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
    active: StopSignals | None = None  # the instance whose handlers are installed in this process

    def __init__(self, immediate: bool = False) -> None:
        self.immediate = immediate
        self.received: int | None = None
        self.previous: dict[int, object] = {}
        self._outer: StopSignals | None = None
        self._outer_mode = False
        self._deferred = 0
        self._forwarded = False
        # Called with each signal as it arrives (`mto run` passes it on to the stage it is running).
        self.relay: Callable[[int], None] | None = None

    def __enter__(self) -> StopSignals:
        outer = StopSignals.active
        if outer is not None:
            self._outer, self._outer_mode = outer, outer.immediate
            outer.immediate = self.immediate
            return outer
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
            StopSignals.active = self
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._outer is not None:
            outer = self._outer
            outer.immediate = self._outer_mode
            # A signal the inner block flagged but did not act on stops the run now.
            if exc is None and outer.immediate and outer.received is not None and not outer._forwarded:
                outer.forward()
            return
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if StopSignals.active is self:
            StopSignals.active = None

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.relay is not None:
            self.relay(signum)
        if self._deferred:
            log.warning("received signal %d while the run records its status", signum)
        elif self.immediate:
            log.warning("received signal %d: stopping", signum)
            self.forward()
        else:
            log.warning("received signal %d: checkpointing at the end of this step", signum)

    def forward(self, note: str = "") -> None:
        """Hand the received signal to the handler that was there before us (once), then stop."""
        handler = self.previous.get(self.received)
        first, self._forwarded = not self._forwarded, True
        # Python's own SIGINT handler would turn our clean stop into a KeyboardInterrupt traceback.
        if first and callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)
        raise Interrupted(f"stopped by signal {self.received}{note}")

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals wait (flagged, not acted on) while the block runs: for the run's final status."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
