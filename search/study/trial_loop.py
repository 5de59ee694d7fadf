"""The study and the trial loop: open (or join) the record, ask/tell until enough trials.

The sampler runs on an in-memory working study (``work.py``); the RDB study is the durable
record (``record.py``) that resumes a run and lets workers share one search.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from datetime import datetime, timezone
from typing import Any

import optuna
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tp_search.pruning.core.errors import TpError

from tp_search.search.scoring.objective import ATTR, Objective
from tp_search.search.study.record import Entry, Record
from tp_search.search.study.storage import open_storage, redact
from tp_search.search.study.working_study import DIRECTIONS, WorkStudy

log = logging.getLogger("tp.search")


def open_study(url: str, name: str, identity: dict[str, Any]) -> tuple[Any, bool]:
    """The record study: created, or loaded when it exists (a resume, or another worker's).

    Returns (study, created). A study of that name made with other settings is refused.
    """

    if not log.isEnabledFor(logging.DEBUG):  # optuna logs every trial at INFO
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    ident = json.dumps(identity, sort_keys=True)
    try:
        study = optuna.create_study(storage=storage, study_name=name,
                                    directions=list(DIRECTIONS),
                                    sampler=optuna.samplers.RandomSampler())
        study.set_user_attr("identity", ident)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler())
    stored = study.user_attrs.get("identity")
    if stored is not None and stored != ident:
        raise TpError(f"study {name!r} in {redact(url)} was made with other settings; use "
                      "another --study-name or --out, or the original settings")
    if [d.name.lower() for d in study.directions] != list(DIRECTIONS):
        raise TpError(f"study {name!r} in {redact(url)} is not a tp-search study")
    return study, False


def run_id() -> str:
    """Sorts by start time; unique across processes and hosts."""
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())
    return f"{now}-{host}-{os.getpid()}"


def derived_seed(seed: int, known: int, run: str) -> int:
    """A resuming or joining process's sampler seed (the creator uses ``seed`` itself)."""
    return int(hashlib.sha1(f"{seed}:{known}:{run}".encode()).hexdigest()[:8], 16)


def sync(record: Record, work: WorkStudy, objective: Objective) -> int:
    """Bring what other runs/workers recorded into the sampler's study and the cache."""
    new = sorted(record.pull(), key=lambda e: e.key)
    for e in new:
        objective.remember(e.attrs)
    work.migrate(new)
    return len(new)


def run_trials(work: WorkStudy, record: Record, objective: Objective, total: int,
               progress: bool = True, pull_every_s: float = 2.0) -> int:
    """Ask/tell until ``total`` trials are finished in the record (all workers together).

    Returns how many this process ran. With several workers each sees the others' trials
    at its next pull (every ``pull_every_s``, at most once a second before an evaluation,
    and after every trial in the last ``flush_n``), so a shared study may end a few trials above
    ``total``.
    """
    objective.refresh = lambda: sync(record, work, objective) if record.pull_due(1.0) \
        else None
    ran = 0
    if record.complete() >= total:
        return ran
    with tqdm(total=total, initial=record.complete(), desc="trials", unit="trial",
              disable=None if progress else True) as bar, logging_redirect_tqdm():
        try:
            while record.complete() < total:
                trial = work.ask()
                values = objective(trial)
                ft = work.tell(trial, values)
                record.add(Entry(record.run, ran, dict(ft.params), tuple(ft.values),
                                 dict(ft.user_attrs[ATTR]), dict(ft.system_attrs)))
                ran += 1
                remaining = total - record.complete()
                if remaining < record.flush_n:  # the last stretch: share every trial, so
                    record.flush()  # that workers (who may have joined unseen) all stop
                    sync(record, work, objective)  # within their trials in flight of total
                elif record.pull_due(pull_every_s):
                    sync(record, work, objective)
                bar.update(max(0, min(record.complete(), total) - bar.n))
        finally:  # Ctrl-C / SIGTERM included: screened trials are kept
            try:
                record.flush()
            except Exception as e:  # never hide the interruption behind this
                log.warning("could not record the last %d screened trials (%s); a rerun "
                            "redoes them", record.pending, e)
    return ran
