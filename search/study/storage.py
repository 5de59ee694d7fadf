"""Where the record of a search lives: an Optuna RDB storage (a SQLite file by default,
PostgreSQL or MySQL for workers on several machines). See record.py for what is stored."""
from __future__ import annotations

import importlib.util
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from tp_search.pruning.core.errors import TpError

log = logging.getLogger("tp.search")


def storage_url(storage: str | None, out_dir: Path) -> str:
    if storage:
        return with_driver(storage)
    return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


def with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is
    installed (pyproject's test extra installs psycopg2-binary)."""
    if url.startswith(("postgresql://", "postgres://")) and \
            importlib.util.find_spec("psycopg") is None and \
            importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The URL without its password, for logs and reports."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


class WalConnection(sqlite3.Connection):
    """SQLite in WAL mode with synchronous=NORMAL.

    The default (rollback journal, synchronous=FULL) fsyncs on every commit, and a trial
    makes a few dozen commits: ~0.5 s per trial on a VM disk, against ~5 ms here. A
    killed process loses nothing committed; only an OS crash or power cut may roll back
    the last trials. WAL needs a local file system (not NFS): use --storage there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.execute("PRAGMA journal_mode=WAL")  # persistent in the file
            self.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError:  # locked by another worker: keep its settings
            pass


def open_storage(url: str, attempts: int = 5) -> Any:
    """An ``RDBStorage``; retried while concurrent workers create the schema."""

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Wait for another worker's write lock instead of failing at once; WAL journal.
        kwargs["connect_args"] = {"timeout": 60, "factory": WalConnection}
    else:
        kwargs["pool_pre_ping"] = True
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.ProgrammingError) as e:
            if attempt + 1 == attempts:
                why = str(e.orig if hasattr(e, "orig") else e).strip().splitlines()
                raise TpError(f"cannot open storage {redact(url)}: "
                              f"{why[0] if why else type(e).__name__}; check the URL and "
                              "that the database server is running") from None
            time.sleep(0.2 * (attempt + 1))  # another worker is creating the tables
        except sqlalchemy.exc.ArgumentError as e:
            raise TpError(f"--storage {redact(url)}: not a database URL ({e}); use e.g. "
                          "sqlite:///study.db or postgresql://user@host/db") from None
        except ImportError as e:
            raise TpError(f"--storage {redact(url)}: database driver missing ({e}); for "
                          "PostgreSQL pip install psycopg2-binary") from None
    raise AssertionError("unreachable")
