"""tp-search as separate processes: killed and resumed, and several workers on one storage."""
import csv
import glob
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tp_search.profiler.synthetic import synthetic_table
from tp_search.pruning import ModelShape
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.search import Record, SearchSpace
from tp_search.search.search_cli import main
from tp_search.search.study.storage import with_driver

SHAPE = ModelShape(4, 32, 4, 64)
ROOT = Path(__file__).resolve().parents[1]
RESUMED = 100  # trials once two workers share the study


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    model = make_tiny_checkpoint(root / "model", layers=4)
    task = root / "task.csv"
    texts = random_sentences(1000, seed=5, min_words=10, max_words=40)
    with open(task, "w", newline="") as f:  # 500 dev rows: ~0.1 s per proxy evaluation
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i, t in enumerate(texts):
            w.writerow([t, i % 3 % 2, "dev" if i % 2 else "train"])
    table = synthetic_table(SHAPE, max_len=64, ms_per_gmac=2000, overhead_ms=0.001)
    table.save(root / "results")
    return {"model": model, "task": task, "results": root / "results",
            "machine": table.machine_id}


def command(env, out, trials, target="5.5", samples=500, *extra):
    return [sys.executable, "-m", "tp_search.search", "--task", str(env["task"]),
            "--model", str(env["model"]), "--machine", env["machine"],
            "--results", str(env["results"]), "--latency-ms", target, "--population", "8",
            "--eval-samples", str(samples), "--trials", str(trials), "--out", str(out), "-q",
            "--search-only", *extra]


def spawn(cmd):
    envvars = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=envvars, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def recorded(storage: str) -> list:
    """Every trial in the study behind ``storage`` (there is one study per test)."""
    storage = with_driver(storage)
    name = optuna.get_all_study_names(storage)[0]
    record = Record(optuna.load_study(study_name=name, storage=storage), SearchSpace(SHAPE),
                    "reader")
    record.pull()
    return record.sorted_entries()


def evaluated_in_db(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def run_workers(cmd, url):
    """Two workers at once: one subprocess and, once it has recorded a trial, one in this
    process (saves a start-up; starting both at once would let this one finish alone)."""
    known = {e.run for e in recorded(url)} if optuna_study_exists(url) else set()
    p = spawn(cmd)
    deadline = time.monotonic() + 90
    while not optuna_study_exists(url) or not {e.run for e in recorded(url)} - known:
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline, "the subprocess worker recorded nothing in 90 s"
        time.sleep(0.2)
    assert main(cmd[3:]) == 0  # cmd = [python, -m, search, ...]
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err


def optuna_study_exists(url):
    try:
        return bool(optuna.get_all_study_names(with_driver(url)))
    except Exception:  # no database / tables yet
        return False


def check_shared(entries, total, runs):
    assert len({e.run for e in entries}) == runs, "every run and worker contributed"
    assert len(entries) >= total
    # Workers overshoot only by what they could not see of each other: screened trials
    # still in another worker's unflushed batch, plus per worker the trial in flight and the
    # one started between its last count and the other's next write (count and record are
    # not one transaction across processes). How many depends on timing, so the bound is
    # structural, not a constant; one in-flight trial per worker alone was exceeded by one
    # (44 recorded for 30, 11 screened) in 1 of 10 PostgreSQL runs.
    screened = sum(1 for e in entries if not e.evaluated)
    assert len(entries) - total <= screened + 2 * runs
    assert len({e.key for e in entries}) == len(entries)


def test_killed_run_resumed_by_two_workers(env, tmp_path):
    """SIGKILL mid-run, then the same command twice at once on the same SQLite study:
    every trial recorded before the kill is kept, none is repeated, both workers join."""
    out = tmp_path / "run"
    cmd = command(env, out, 36)
    p = spawn(cmd)
    deadline = time.monotonic() + 60
    while evaluated_in_db(out / "study.db") < 3:
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline, "no trial recorded within 60 s"
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    url = f"sqlite:///{out / 'study.db'}"
    before = {e.key: e.attrs["keep_key"] for e in recorded(url) if e.evaluated}
    assert 3 <= len(before) < 20
    # The resume asks for more trials than the killed run (allowed: the count is not part of
    # the study's identity) so that the in-process worker's start-up (~3 s) does not outlast
    # what is left for the first worker (trials take ~0.1 s here).
    cmd = command(env, out, RESUMED)
    run_workers(cmd, url)
    after = recorded(url)
    check_shared(after, RESUMED, 3)
    keys = {e.key: e.attrs["keep_key"] for e in after}
    assert all(keys.get(k) == v for k, v in before.items())  # nothing completed was lost
    df = pd.read_csv(out / "trials.csv")
    assert len(df) >= RESUMED and not df.duplicated(["run", "index"]).any()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster (Debian's postgresql package), trust auth, TCP only."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    pytest.importorskip("psycopg2", reason="psycopg2-binary not installed")
    data = Path(tempfile.mkdtemp(prefix="tp-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user for initdb")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust",
                              "-U", "postgres"], check=True, capture_output=True)
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-o", opts,
                              "-l", str(data / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m",
                                  "immediate", "-W", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_a_postgres_study(env, tmp_path, postgres):
    out = tmp_path / "run"
    cmd = command(env, out, 30, "5.5", 500, "--storage", postgres)
    run_workers(cmd, postgres)
    assert not (out / "study.db").exists()
    check_shared(recorded(postgres), 30, 2)
    assert "postgres@127.0.0.1" in (out / "report.md").read_text()
