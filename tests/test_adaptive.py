"""Input-adaptive (LTP threshold) candidates in the search: kept counts recorded by the proxy
run are the deployed model's, the percentile of a mixed-length set is the percentile of
per-request predictions (a padded batch at its largest counts), threshold graphs keep the
encoder's tokens on every exported backend, and the search plans and chooses them."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tp_search import pruning
from tp_search.profiler import Predictor, fingerprint
from tp_search.profiler.synthetic import synthetic_table
from tp_search.pruning import ModelShape, PruningConfig
from tp_search.pruning.measure.requests import group_requests, percentile_of
from tp_search.pruning.model.encoder import ForwardInfo
from tp_search.pruning.runtime import get_backend
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.search.space.candidates import Candidate, SearchSpace
from tp_search.search.space.workload import Workload, per_request

SHAPE = ModelShape(4, 32, 4, 64)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("adaptive")
    mp.setenv("TP_SEARCH_CACHE", str(root / "onnx"))
    model = make_tiny_checkpoint(root / "model", layers=4, noise=0.1)
    task = root / "task.csv"
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, t in enumerate(random_sentences(150, seed=11, min_words=3, max_words=40)):
            w.writerow([t, int("good" in t or "great" in t)])
    yield {"root": root, "model": model, "task": task}
    mp.undo()


def thresholds(model, theta_rel=1.0, ref=20.0):
    return SearchSpace(model.shape, policies=("threshold",), ref_length=ref).thresholds(theta_rel)


def test_proxy_counts_are_the_deployed_models(env, tmp_path):
    """Counts the search records while scoring a threshold candidate (padded, bucketed
    batches of the held-out slice) equal the deployed model's, run input by input."""
    from tp_search.search.context import proxy_slices
    from tp_search.search.scoring.kept_counts import KeptCounts
    from tp_search.search.scoring.proxy import ProxyEvaluator
    model = pruning.from_pretrained(env["model"])
    split, _ = proxy_slices(str(env["task"]), eval_samples=30)
    ev = ProxyEvaluator(model, split, 64)
    cfg = PruningConfig.threshold(model.shape, thresholds(model))
    requests = KeptCounts(ev, Workload("dev", 64, dev_lengths=(10,)))(Candidate("torch", 0, cfg))
    deployed = pruning.load(pruning.deploy(model, cfg, "torch", tmp_path / "m"))
    enc = [deployed.tokenizer(t, truncation=True, max_length=64, return_tensors="pt")
           for t in split.texts]
    mine = []
    for e in enc:
        info = ForwardInfo()
        with torch.no_grad():
            deployed(e["input_ids"], e["attention_mask"], e["token_type_ids"], info=info)
        mine.append((int(e["attention_mask"].sum()), [int(k) for k in info.kept]))
    assert requests == mine
    assert any(k[-1] < n for n, k in mine)  # it really pruned, input by input
    assert len({tuple(k) for _, k in mine}) > 3  # and kept different counts per input


def test_percentile_of_a_mixed_set_is_the_percentile_of_per_request_predictions():
    table = synthetic_table(SHAPE, max_len=64, ms_per_gmac=50, overhead_ms=0.01)
    pred = Predictor(table)
    cfg = PruningConfig.threshold(SHAPE, [0, 0.02, 0.04, 0.06])
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 64, 37).tolist()
    kept = [[n] + sorted(rng.integers(1, n + 1, 3).tolist(), reverse=True) for n in lengths]
    for batch in (1, 4):
        reqs = group_requests(lengths, kept, batch)
        assert len(reqs) == -(-len(lengths) // batch)
        # a padded batch runs at its longest input and each layer's largest count
        n0, k0 = reqs[0]
        assert n0 == max(lengths[:batch]) and k0 == [max(c) for c in zip(*kept[:batch])]
        w = Workload("dev", 64, batch, 90.0, tuple(lengths))
        each = per_request(pred, cfg, reqs)
        assert w.predict_requests(pred, cfg, reqs) == percentile_of(each, 90) == \
            sorted(each)[int(np.ceil(0.9 * len(each))) - 1]


@pytest.mark.parametrize("backend", ["ort", "ov"])
def test_threshold_graphs_keep_the_encoders_tokens(env, backend):
    """The threshold-input graph (thresholds as an input: one export scores every
    threshold candidate) and a baked threshold graph give the encoder's logits, on a padded
    batch whose inputs keep different counts."""
    model = pruning.from_pretrained(env["model"])
    texts = random_sentences(4, seed=5, min_words=3, max_words=40)
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    b = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    runner = get_backend(backend).build(model, None, keep_input=True, schedule="threshold")
    for rel in (0.3, 1.0, 2.5):
        th = thresholds(model, rel)
        cfg = PruningConfig.threshold(model.shape, th)
        info = ForwardInfo()
        with torch.no_grad():
            ref = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], pruning=cfg,
                        info=info)
        assert (runner(b, keep=list(th)) - ref).abs().max() <= 1e-4, rel
    assert len(set(info.kept[-1].tolist())) > 1  # the batch's inputs kept different counts
    baked = get_backend(backend).build(model, cfg)
    assert (baked(b) - ref).abs().max() <= 1e-4


def test_search_plans_and_chooses_threshold_candidates(env, tmp_path):
    """--method ltp: every trial is a threshold candidate, predicted from the counts it
    keeps; the chosen one is measured before it is returned."""
    from tp_search.search.run import run_search
    from tp_search.search.search_settings import SearchSettings
    results = tmp_path / "results"
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=80000, overhead_ms=0.04,
                    fp=fingerprint()).save(results)
    r = run_search(SearchSettings(
        latency_ms=200, task=str(env["task"]), model=str(env["model"]), results=str(results),
        seq_len=64, workload="dev", backends=("torch",), truncation=(0,), trials=10,
        population=4, eval_samples=30, repeats=3, out=str(tmp_path / "s"), progress=False,
        policies=("threshold",), always_search=True))
    assert r.entries and all(e.candidate.adaptive for e in r.entries)
    c = r.primary
    assert c.candidate.adaptive and c.rounds and c.rounds[-1].chosen == c.candidate.key
    assert c.measurement is not None and len(c.measurement.per_request) > 1
    preds = {e.latency_ms[c.machine_id] for e in r.entries}
    assert len(preds) > 2  # thresholds do change the predicted percentile


def test_threshold_search_below_the_familys_reach_stops_before_any_trial(env, tmp_path):
    """--method ltp with a target the family's most aggressive member misses: exit code 3
    after one forward pass, nothing written (no study, no run directory)."""
    from tp_search.pruning.core.errors import InfeasibleError
    from tp_search.search.run import run_search
    from tp_search.search.search_settings import SearchSettings
    results = tmp_path / "results"
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=80000, overhead_ms=0.04,
                    fp=fingerprint()).save(results)
    with pytest.raises(InfeasibleError, match="below what thresholds can reach") as e:
        run_search(SearchSettings(
            latency_ms=0.05, task=str(env["task"]), model=str(env["model"]),
            results=str(results), seq_len=64, workload="dev", backends=("torch",),
            truncation=(0,), trials=10, population=4, eval_samples=30, out=str(tmp_path / "s"),
            progress=False, policies=("threshold",), always_search=True))
    assert e.value.exit_code == 3 and "--method top" in str(e.value)
    assert not (tmp_path / "s").exists()


def test_resumed_threshold_search_reads_recorded_counts(env, tmp_path, monkeypatch):
    """Every threshold trial's kept counts are part of its record: a resumed search judges
    the recorded trials without running any of them again."""
    from tp_search.search.run import run_search
    from tp_search.search.scoring.kept_counts import KeptCounts
    from tp_search.search.search_settings import SearchSettings
    results = tmp_path / "results"
    synthetic_table(SHAPE, max_len=64, ms_per_gmac=80000, overhead_ms=0.04,
                    fp=fingerprint()).save(results)

    def settings(trials):
        return SearchSettings(
            latency_ms=200, task=str(env["task"]), model=str(env["model"]),
            results=str(results), seq_len=64, workload="dev", backends=("torch",),
            truncation=(0,), trials=trials, population=4, eval_samples=30,
            out=str(tmp_path / "s"), progress=False, policies=("threshold",),
            always_search=True, measure=False)

    first = run_search(settings(6))
    recorded = {KeptCounts.key(e.candidate) for e in first.entries}
    ran: list[str] = []
    original = KeptCounts._dev
    monkeypatch.setattr(KeptCounts, "_dev", lambda self, c: ran.append(self.key(c))
                        or original(self, c))
    second = run_search(settings(9))
    assert len(second.entries) >= 9 and len(recorded) >= 4
    assert ran and not set(ran) & recorded  # only the new trials ran
