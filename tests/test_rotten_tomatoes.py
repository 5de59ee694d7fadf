"""The built-in rotten_tomatoes task and its movie-disjoint train/dev split."""
from __future__ import annotations

from tp_search.pruning.data import load_task


def test_rotten_tomatoes_movie_disjoint_split():
    import pandas as pd

    from tp_search.pruning.data.readers import find_rt_file as _find_rt_file
    train, dev = load_task("rotten_tomatoes", "train"), load_task("rotten_tomatoes", "dev")
    assert 10_000 <= len(train) <= 13_000 and 1_000 <= len(dev) <= 2_000
    assert set(train.labels) == set(dev.labels) == {0, 1}
    assert train.task.max_len == 128 and train.pairs is None
    df = pd.read_csv(_find_rt_file(), usecols=["category", "text", "movie_name"])
    df = df[df["category"] != "plot"]
    movies = df.groupby(df["text"].astype(str).str.strip())["movie_name"].agg(set)
    # a few short reviews ("An absorbing documentary.") occur under several movies: skip those
    movie = {t: next(iter(m)) for t, m in movies.items() if len(m) == 1}
    train_movies = {movie[t] for t in train.texts if t in movie}
    dev_movies = {movie[t] for t in dev.texts if t in movie}
    assert len(dev_movies) > 50 and train_movies.isdisjoint(dev_movies)
