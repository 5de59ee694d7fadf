"""The durable record of a search, and the in-memory study the sampler works in.

Why two studies: one Optuna RDB trial costs 20-60 ms of ORM writes here (a row per
parameter and attribute; measured on SQLite in WAL mode, see benchmarks/search_overhead.py),
10-30x the 2 ms budget of a trial the predictor rejects. So NSGA-II runs on an in-memory
study, and the record -- an Optuna RDB study (SQLite by default, PostgreSQL for workers on
several machines) -- receives:

- every *evaluated* trial, as a real Optuna trial, the moment it finishes (``add_trial``);
- the trials the predictor rejected (*screened*), as compact batches in the study's user
  attributes, flushed every ``flush_n`` trials or ``flush_s`` seconds and when a run ends
  or is interrupted.

A killed worker loses at most its unflushed screened batch (a second or two of predictor
calls, never an evaluation). The record never holds a RUNNING trial, so nothing stale is
ever counted. A resumed run, or another worker, rebuilds its in-memory study from the
record, NSGA-II generation attributes included.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState, create_trial

from tp_search.search.scoring.objective import ATTR
from tp_search.search.space.candidates import SearchSpace

BATCH_PREFIX = "screened:"


@dataclass
class Entry:
    """One finished trial, wherever it is stored."""

    run: str  # the run (process) that proposed it; sorts by start time
    index: int  # its position among that run's proposals
    params: dict[str, Any]
    values: tuple[float, float]
    attrs: dict[str, Any]  # the objective's user attribute (keep, latency, metric ...)
    system: dict[str, Any] = field(default_factory=dict)  # sampler state, constraints
    record: int | None = None  # trial number in the Optuna record (evaluated trials)

    @property
    def key(self) -> tuple[str, int]:
        return self.run, self.index

    @property
    def evaluated(self) -> bool:
        return self.attrs.get("metric") is not None

    def frozen(self, space: SearchSpace) -> Any:
        return create_trial(state=TrialState.COMPLETE, values=list(self.values),
                            params=dict(self.params),
                            distributions=space.distributions(self.params),
                            user_attrs={ATTR: {**self.attrs, "run": self.run,
                                               "index": self.index}},
                            system_attrs=dict(self.system))

    def compact(self) -> dict[str, Any]:
        return {"i": self.index, "p": self.params, "v": list(self.values), "a": self.attrs,
                "s": self.system}

    @classmethod
    def from_compact(cls, run: str, d: dict[str, Any]) -> "Entry":
        return cls(run, int(d["i"]), dict(d["p"]), tuple(d["v"]), dict(d["a"]),
                   dict(d.get("s", {})))

    @classmethod
    def from_trial(cls, t: Any) -> "Entry | None":
        a = dict(t.user_attrs.get(ATTR) or {})
        if "run" not in a or t.values is None:
            return None  # not written by tp-search
        run, index = a.pop("run"), int(a.pop("index"))
        return cls(run, index, dict(t.params), tuple(t.values), a, dict(t.system_attrs),
                   t.number)


class Record:
    """Everything known about one study: its record in storage plus this run's trials."""

    def __init__(self, study: Any, space: SearchSpace, run: str, flush_n: int = 100,
                 flush_s: float = 2.0) -> None:
        self.study, self.space, self.run = study, space, run
        self.flush_n, self.flush_s = flush_n, flush_s
        self.entries: dict[tuple[str, int], Entry] = {}
        self._buffer: list[Entry] = []
        self._seq = 0
        self._seen_trials: set[int] = set()
        self._seen_batches: set[str] = set()
        self._last_flush = self._last_pull = time.monotonic()

    # ---- reading ------------------------------------------------------------------------
    def pull(self) -> list[Entry]:
        """Read what other runs and workers recorded since the last pull; returns new ones."""
        new: list[Entry] = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in self._seen_trials:
                continue
            self._seen_trials.add(t.number)
            e = Entry.from_trial(t)
            if e is None:
                continue
            if e.key in self.entries:
                self.entries[e.key].record = t.number
            else:
                self.entries[e.key] = e
                new.append(e)
        for k, batch in self._study_attrs().items():
            if not k.startswith(BATCH_PREFIX) or k in self._seen_batches:
                continue
            self._seen_batches.add(k)
            run = k[len(BATCH_PREFIX):].rsplit(":", 1)[0]
            for d in batch:
                e = Entry.from_compact(run, d)
                if e.key not in self.entries:
                    self.entries[e.key] = e
                    new.append(e)
        self._last_pull = time.monotonic()
        return new

    def _study_attrs(self) -> dict[str, Any]:
        """The study's user attributes without ``Study.user_attrs``'s deep copy (it copied
        every recorded batch on every pull: O(trials) per pull)."""
        try:
            return self.study._storage.get_study_user_attrs(self.study._study_id)
        except AttributeError:  # a future Optuna without these internals
            return self.study.user_attrs

    def pull_due(self, every_s: float) -> bool:
        return time.monotonic() - self._last_pull >= every_s

    @property
    def pending(self) -> int:
        """Screened trials of this run not flushed to storage yet."""
        return len(self._buffer)

    def complete(self) -> int:
        """Finished trials of the study: recorded, pulled, and this run's unflushed ones."""
        return len(self.entries)

    def sorted_entries(self) -> list[Entry]:
        """Every known trial in a stable order: runs by start time, proposals in order."""
        return [self.entries[k] for k in sorted(self.entries)]

    # ---- writing ------------------------------------------------------------------------
    def add(self, e: Entry) -> None:
        self.entries[e.key] = e
        if e.evaluated:  # worth a durable Optuna trial at once
            self.study.add_trial(e.frozen(self.space))
        else:
            self._buffer.append(e)
            if len(self._buffer) >= self.flush_n or \
                    time.monotonic() - self._last_flush >= self.flush_s:
                self.flush()

    def flush(self) -> None:
        if self._buffer:
            key = f"{BATCH_PREFIX}{self.run}:{self._seq:06d}"
            self.study.set_user_attr(key, [e.compact() for e in self._buffer])
            self._seen_batches.add(key)
            self._seq += 1
            self._buffer = []
        self._last_flush = time.monotonic()
