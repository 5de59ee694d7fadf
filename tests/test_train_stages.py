"""tp-train stages end to end on a tiny model and a tiny CSV task (a few steps each)."""
import json
import logging

import pandas as pd
import pytest
import torch

from tp_search import pruning
from tp_search.profiler.synthetic import fake_fingerprint, synthetic_table
from tp_search.pruning import PruningConfig, TpError
from tp_search.pruning.model.encoder import ForwardInfo
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.pruning.train import (
    DistillSettings,
    FinetuneSettings,
    LtpSettings,
    TopSettings,
    distill,
    finetune,
    trainer as loop,
    prune_ltp,
    prune_top,
)

FAST = dict(batch_size=8, max_len=32, progress=False)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("task")
    texts = random_sentences(96, seed=0, min_words=4, max_words=20)
    labels = [int(("good" in t) or ("best" in t)) for t in texts]
    path = d / "task.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, task):
    """finetune -> distill on a 3-layer tiny model, shared by the pruning tests."""
    d = tmp_path_factory.mktemp("pipe")
    ckpt = make_tiny_checkpoint(d / "ckpt", layers=3)
    ft = finetune(FinetuneSettings(model=str(ckpt), task=task, out=str(d / "ft"),
                                   max_steps=6, lr=1e-3, **FAST))
    ds = distill(DistillSettings(teacher=str(ft), task=task, out=str(d / "ds"), max_steps=6,
                                 lr=1e-3, **FAST))
    return {"dir": d, "ckpt": ckpt, "ft": ft, "ds": ds, "task": task}


def read_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_finetune_and_distill_write_loadable_outputs(pipeline):
    for out, stage in ((pipeline["ft"], "finetune"), (pipeline["ds"], "distill")):
        m = read_metrics(out)
        assert m["stage"] == stage and 0 <= m["score"] <= 1 and m["seed"] == 0
        assert m["macs"]["reduction_real"] == pytest.approx(1.0)
        assert m["macs"]["reduction_padded"] > 1.0  # 32-token padding vs short inputs
        assert m["settings"]["batch_size"] == 8 and m["train_time_s"] >= 0
        assert not (out / loop.CHECKPOINT).exists()
        model = pruning.load(out / "model")
        assert model.pruning.is_dense and model.tokenizer is not None
    assert read_metrics(pipeline["ds"])["settings"]["rank_k"] == 20


def test_finished_stage_is_reused_unless_forced(pipeline, task, caplog):
    before = (pipeline["ft"] / "metrics.json").stat().st_mtime_ns
    s = FinetuneSettings(model=str(pipeline["ckpt"]), task=task, out=str(pipeline["ft"]),
                         max_steps=6, lr=1e-3, **FAST)
    assert finetune(s) == pipeline["ft"]
    assert (pipeline["ft"] / "metrics.json").stat().st_mtime_ns == before
    s.lr = 5e-4
    with caplog.at_level(logging.WARNING, logger="tp.train"):
        finetune(s)  # still reused, with a warning naming the difference
    assert "trained with lr=0.001, not 0.0005" in caplog.text
    assert (pipeline["ft"] / "metrics.json").stat().st_mtime_ns == before
    score = read_metrics(pipeline["ft"])["score"]
    s.lr, s.force = 1e-3, True
    finetune(s)  # retrained from scratch: same seed, same result
    assert (pipeline["ft"] / "metrics.json").stat().st_mtime_ns != before
    assert read_metrics(pipeline["ft"])["score"] == score


def test_resume_after_interruption_is_bit_identical(tmp_path, pipeline, monkeypatch):
    """4 steps straight == 2 steps, Ctrl-C, rerun (resumes 2 more)."""
    def settings(out):
        return DistillSettings(teacher=str(pipeline["ft"]), task=pipeline["task"],
                               out=str(tmp_path / out), max_steps=4, lr=1e-3,
                               checkpoint_every=100, **FAST)
    straight = distill(settings("a"))

    def interrupt(step):
        if step == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(loop, "STEP_HOOK", interrupt)
    with pytest.raises(KeyboardInterrupt):
        distill(settings("b"))
    assert (tmp_path / "b" / loop.CHECKPOINT).is_file()
    assert not (tmp_path / "b" / "metrics.json").exists()
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    resumed = distill(settings("b"))
    a = pruning.load(straight / "model").state_dict()
    b = pruning.load(resumed / "model").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_metrics(straight)["score"] == read_metrics(resumed)["score"]


def test_resume_with_other_settings_is_refused(tmp_path, pipeline, monkeypatch):
    s = DistillSettings(teacher=str(pipeline["ft"]), task=pipeline["task"],
                        out=str(tmp_path / "c"), max_steps=4, **FAST)
    monkeypatch.setattr(loop, "STEP_HOOK", lambda step: (_ for _ in ()).throw(
        KeyboardInterrupt) if step == 1 else None)
    with pytest.raises(KeyboardInterrupt):
        distill(s)
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    s.lr = 1e-3
    with pytest.raises(TpError, match="different settings .*lr"):
        distill(s)


def write_config(path, shape, keep):
    PruningConfig.topk(shape, keep).save(path)
    return str(path)


def test_top_gates_reach_a_macs_target_and_export_topk(tmp_path, pipeline):
    shape = pruning.load(pipeline["ds"] / "model").shape
    cfg = write_config(tmp_path / "best.json", shape, [1, 0.6, 0.5])
    out = prune_top(TopSettings(
        teacher=str(pipeline["ft"]), model=str(pipeline["ds"]), task=pipeline["task"],
        config=cfg, out=str(tmp_path / "top"), max_steps=60, target_sparsity=0.4,
        gate_lr=0.3, target_warmup=0.5, bins=10, **FAST))
    m = read_metrics(out)
    top = m["top"]
    assert top["start_sparsity"] < 0.3  # the configuration's own sparsity
    assert abs(top["expected_sparsity"] - 0.4) < 0.02  # moved to the target
    assert abs(top["exported_sparsity"] - 0.4) < 0.06  # bins are 10% steps
    model = pruning.load(out / "model")
    assert model.pruning.policy == "topk" and model.pruning.method == "top"
    assert m["pruning"]["keep"] == list(model.pruning.keep)
    assert m["macs"]["reduction_real"] > 1.3


def test_top_gates_reach_a_latency_target(tmp_path, pipeline):
    shape = pruning.load(pipeline["ds"] / "model").shape
    table = synthetic_table(shape, max_len=32, fp=fake_fingerprint("train-test"),
                            overhead_ms=0.0)
    table.save(tmp_path / "results")
    common = dict(teacher=str(pipeline["ft"]), model=str(pipeline["ds"]), task=pipeline["task"],
                  config=write_config(tmp_path / "best.json", shape, [1, 0.7, 0.5]),
                  machine=table.machine_id, results=str(tmp_path / "results"), seq_len=32,
                  max_steps=60, gate_lr=0.3, bins=10, **FAST)
    from tp_search.profiler import Predictor
    pred = Predictor(table)
    dense = pred.dense(32)
    out = prune_top(TopSettings(out=str(tmp_path / "lat"), latency_ms=0.65 * dense, **common), pred)
    m = read_metrics(out)
    assert m["top"]["constraint"] == "latency"
    assert m["top"]["start_sparsity"] < 0.2
    assert m["top"]["target_sparsity"] == pytest.approx(0.35, abs=0.01)  # CSV rounding
    assert abs(m["top"]["expected_sparsity"] - m["top"]["target_sparsity"]) < 0.02
    assert m["latency"]["machine"] == table.machine_id and m["latency"]["speedup"] > 1.3
    with pytest.raises(pruning.InfeasibleError):
        prune_top(TopSettings(out=str(tmp_path / "inf"), latency_ms=1e-6 * dense, **common), pred)


def test_ltp_learns_thresholds_with_per_example_lengths(tmp_path, pipeline):
    out = prune_ltp(LtpSettings(
        teacher=str(pipeline["ft"]), model=str(pipeline["ds"]), task=pipeline["task"],
        out=str(tmp_path / "ltp"), max_steps=20, reg_lambda=0.2, final_threshold=0.06,
        threshold_lr=0.002, **FAST))
    m = read_metrics(out)
    model = pruning.load(out / "model")
    cfg = model.pruning
    assert cfg.policy == "threshold" and cfg.method == "ltp" and cfg.thresholds[0] == 0
    assert all(t > 0 for t in cfg.thresholds[1:])
    initial = m["ltp"]["thresholds"]  # the regulariser pushed thresholds above l/L init
    assert m["ltp"]["thresholds"] == pytest.approx(list(cfg.thresholds), abs=1e-6)
    texts = random_sentences(12, seed=7, min_words=2, max_words=20)
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    info = ForwardInfo()
    with torch.no_grad():
        model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], info=info)
    n = enc["attention_mask"].sum(1)
    kept = info.kept[-1]
    assert bool((kept < n).any())  # prunes
    assert len(set((kept.float() / n).tolist())) > 2  # the kept fraction varies per input
    assert m["macs"]["reduction_real"] > 1.0 and len(initial) == 3


def test_ltp_latency_calibration_meets_the_target(tmp_path, pipeline):
    shape = pruning.load(pipeline["ds"] / "model").shape
    table = synthetic_table(shape, max_len=32, fp=fake_fingerprint("ltp-test"),
                            overhead_ms=0.0)
    from tp_search.profiler import Predictor
    pred = Predictor(table)
    dense = pred.dense(32)  # the max workload: inputs of 32 real tokens, its p90
    out = prune_ltp(LtpSettings(
        teacher=str(pipeline["ft"]), model=str(pipeline["ds"]), task=pipeline["task"],
        out=str(tmp_path / "ltp"), max_steps=8, latency_ms=0.7 * dense,
        calib_samples=32, **FAST), latency=pred)
    m = read_metrics(out)
    cal = m["ltp"]["calibration"]
    assert cal["dense_ms"] == pytest.approx(dense)
    assert 0.6 * dense < cal["predicted_ms"] <= cal["target_ms"]  # met, but not by far
    assert cal["scale"] > 0 and max(m["pruning"]["thresholds"]) > 0


def test_missing_teacher_and_bad_config_fail_clearly(tmp_path, pipeline):
    with pytest.raises(TpError, match="--teacher"):
        prune_top(TopSettings(model=str(pipeline["ds"]), task=pipeline["task"],
                              out=str(tmp_path / "x"), config="x.json"))
    with pytest.raises(TpError, match="not found"):
        distill(DistillSettings(teacher=str(tmp_path / "nope"), task=pipeline["task"],
                                out=str(tmp_path / "y"), **FAST))
    other = write_config(tmp_path / "other.json", pruning.ModelShape(6, 384, 12, 1536),
                         [1, 1, 0.6, 0.4, 0.3, 0.2])
    with pytest.raises(TpError, match="made for a model with 6 layers"):
        prune_top(TopSettings(teacher=str(pipeline["ft"]), model=str(pipeline["ds"]),
                              task=pipeline["task"], config=other, out=str(tmp_path / "z"),
                              **FAST))


def test_ltp_keeps_the_layers_the_search_left_plain_at_zero(tmp_path, pipeline):
    """Started from searched thresholds that prune from layer 2 only, training (the
    regulariser pushes every threshold up) never makes layer 1 a scoring layer."""
    out = prune_ltp(LtpSettings(
        teacher=str(pipeline["ft"]), model=str(pipeline["ds"]), task=pipeline["task"],
        out=str(tmp_path / "ltp"), max_steps=12, reg_lambda=0.5, threshold_lr=0.002,
        init_thresholds=(0.0, 0.0, 0.05), **FAST))
    th = read_metrics(out)["ltp"]["thresholds"]
    cfg = pruning.load(out / "model").pruning
    assert th[1] == 0 and cfg.thresholds[1] == 0 and not cfg.prunes_at(1)
    assert th[2] > 0 and th[2] != pytest.approx(0.05, abs=1e-6)  # the chosen layer trained
    assert cfg.prunes_at(2)
