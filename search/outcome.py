"""How a search or a phase of runs ended, and the exit code that says so.

Ray Tune ends ``Tuner.fit`` normally when the driver gets SIGINT (it saves its state and returns), and it counts
an errored trial as a result: a command that was interrupted, or whose trials errored, would exit 0. Here the
trials table the search wrote at its end (:mod:`results.parquet`; Ray's statuses) decides:

- interrupted (SIGINT, or SIGTERM, which :func:`terminate_as_interrupt` turns into Ray's graceful stop): exit
  130 or 143, with the line that resumes it; its running trials keep Ray's status and are recorded ``unfinished``;
- trials errored: every one of them, or more than ``failure.max_failures`` for another reason than a loss that
  turned NaN or infinite (a point of the space where training diverges is a finding of the search, recorded
  ``errored`` with its message and never the best, not a failure of the command): exit 1, naming the first error;
- else 0.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import Iterator

from p2m.train import NonFiniteLossError
from results import storage
from results.schema import ERROR, STATUS
from results.parquet import ResultsError, read_trials

EXIT_FAILED = 1


class Interrupted(KeyboardInterrupt):
    """The driver was stopped (SIGINT, SIGTERM); ``exit_code`` is 128 + the signal, the message says how to go on."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


RUNNING_STATUSES = ("RUNNING", "PENDING", "PAUSED")  # Ray's statuses of a trial it has not ended


@dataclasses.dataclass
class Outcome:
    experiment: str
    trials: int = 0
    errored: int = 0
    diverged: int = 0  # of the errored: a loss that turned NaN or infinite (p2m.train.NonFiniteLossError)
    unfinished: int = 0
    first_error: str | None = None
    signal: int | None = None  # SIGINT or SIGTERM when the driver was stopped

    @property
    def interrupted(self) -> bool:
        return self.signal is not None or self.unfinished > 0

    @property
    def signal_number(self) -> int:
        return self.signal or signal.SIGINT

    def failed(self, max_failures: int) -> bool:
        """Whether too many trials errored: all of them, or more than ``max_failures`` that did not diverge."""
        return self.errored > 0 and (self.errored == self.trials or self.errored - self.diverged > max_failures)

    def exit_code(self, max_failures: int) -> int:
        if self.interrupted:
            return 128 + self.signal_number
        return EXIT_FAILED if self.failed(max_failures) else 0

    def summary(self, max_failures: int, resume: str) -> str | None:
        """The one line a command prints when it does not exit 0 (None when it does)."""
        if self.interrupted:
            name = signal.Signals(self.signal_number).name
            return (f"p2m: interrupted ({name}) with {self.unfinished} of {self.trials} trials unfinished; "
                    f"continue with: {resume}")
        if self.failed(max_failures):
            diverged = f", {self.diverged} of them a loss that diverged" if self.diverged else ""
            return (f"p2m: error: {self.errored} of {self.trials} trials errored{diverged} (failure.max_failures "
                    f"{max_failures}); the first: {self.first_error}")
        return None


def fit(tuner, experiment: storage.Location, expected: int) -> Outcome:
    """Sign the ``tuner.pkl`` that ``tuner`` wrote to ``experiment`` (:mod:`search.trust`), run it with SIGTERM as
    an interrupt, and return how it ended (``expected``: the trials it should have)."""
    from search.trust import restore_key, sign_tuner

    sign_tuner(experiment, restore_key(create=True))
    with terminate_as_interrupt() as received:
        tuner.fit()
    return outcome_of(experiment, received[0] if received else None, expected)


def outcome_of(experiment: storage.Location, stopped_by: int | None = None, expected: int = 0) -> Outcome:
    """The outcome recorded in ``experiment``'s trials table (none: no trial was created); ``expected``: how many
    trials it should have (``num_samples``), those never created counted as unfinished."""
    out = Outcome(str(experiment), signal=stopped_by)
    try:
        trials = read_trials(experiment)
    except ResultsError:
        return out
    status = trials[STATUS].astype(str)
    errors = trials.loc[status == "ERROR", ERROR].dropna()
    out.trials = len(trials)
    out.errored = int((status == "ERROR").sum())
    out.unfinished = int(status.isin(RUNNING_STATUSES).sum()) + max(0, expected - len(trials))
    diverged = errors.astype(str).str.contains(NonFiniteLossError.__name__, regex=False)
    out.diverged = int(diverged.sum())
    crashed = errors[~diverged]
    first = crashed if len(crashed) else errors
    out.first_error = str(first.iloc[0]) if len(first) else ("no message recorded" if out.errored else None)
    return out


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[list[int]]:
    """While inside, SIGTERM (a scheduler's stop, ``kill``) is turned into SIGINT, which Ray Tune answers by
    saving its state and ending ``fit``; yields a list that holds the signals received, in order."""
    received: list[int] = []
    previous_int = signal.getsignal(signal.SIGINT)

    def on_int(signum, frame):  # in force until Ray installs its own handler in fit, and again after it
        received.append(signum)
        raise Interrupted(f"p2m: interrupted ({signal.Signals(received[0]).name})", 128 + received[0])

    def on_term(signum, frame):
        received.append(signum)
        if signal.getsignal(signal.SIGINT) is on_int:  # not in Ray's fit: stop here
            raise Interrupted(f"p2m: interrupted ({signal.Signals(signum).name})", 128 + signum)
        signal.raise_signal(signal.SIGINT)  # Ray's handler: save the state, end fit

    previous_term = signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


__all__ = ["Interrupted", "Outcome", "fit", "outcome_of", "terminate_as_interrupt"]
