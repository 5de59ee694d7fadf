"""Backends: ONNX export parity with the PyTorch encoder at lengths the export never saw, on
ONNX Runtime and OpenVINO; the keep-input graph, int8 (ORT dynamic, OpenVINO NNCF), bf16 where
the CPU has it, the export cache, deployment and ``pruning.load``, the deployed file run by
plain onnxruntime / OpenVINO, tp-bench."""
from __future__ import annotations

import json

import pytest
import torch

from tp_search import pruning
from tp_search.pruning import PruningConfig, TpError
from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning.runtime import available_backends, get_backend, why_unavailable
from tp_search.pruning.runtime.export import cache_dir, exported
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    """Exports go to a fresh cache: a test never reads another run's files."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TP_SEARCH_CACHE", str(tmp_path_factory.mktemp("onnx")))
    yield
    mp.undo()


def tiny(tmp_path_factory, family: str):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp(family) / "m", layers=3, family=family,
                                noise=0.1)
    return pruning.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny(tmp_path_factory, "bert")


@pytest.fixture(scope="module", params=["roberta", "distilbert", "electra"])
def family_model(request, tmp_path_factory):
    return tiny(tmp_path_factory, request.param)


def topk(model):
    """The one baked top-k configuration most tests share: exported once, then cached."""
    return PruningConfig.topk(model.shape, [1, 0.6, 0.3])


def batch(model, texts):
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask",
                                                   "token_type_ids")}


def reference(model, b, cfg):
    with torch.no_grad():
        return model(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), pruning=cfg)


# the export example is 16 tokens: these are all other lengths, one and three examples
INPUTS = {"short": random_sentences(1, seed=1, min_words=3, max_words=3),
          "long": random_sentences(1, seed=2, min_words=40, max_words=40),
          "padded": random_sentences(3, seed=3, min_words=2, max_words=30)}


FP32_EXPORTED = ("ort", "ov")  # the fp32 backends that run the exported graph


@pytest.mark.parametrize("backend", FP32_EXPORTED)
@pytest.mark.parametrize("policy", ["topk", "threshold"])
def test_exported_fp32_matches_the_encoder_at_unseen_lengths(model, policy, backend):
    shape = model.shape
    cfg = topk(model) if policy == "topk" else PruningConfig.threshold(shape, [0, 0.05, 0.08])
    runner = get_backend(backend).build(model, cfg)
    for name, texts in INPUTS.items():
        b = batch(model, texts)
        assert b["input_ids"].shape[1] != 16
        diff = (runner(b) - reference(model, b, cfg)).abs().max()
        assert diff <= 1e-4, (name, float(diff))


@pytest.mark.parametrize("backend", FP32_EXPORTED)
def test_counts_where_keep_times_length_is_whole(model, backend):
    """keep x n exactly an integer (0.7 x 10, 0.28 x 25, 0.6 x 25, 0.14 x 50): where a
    runtime that evaluates float64 in float32 (OpenVINO: 0.6f x 25 = 15.0000006) would keep
    one token too many, unless counts are integers."""
    runner = get_backend(backend).build(model, None, keep_input=True)
    for n, schedules in ((10, ([1, 0.7, 0.3], [1, 0.6, 0.2])), (25, ([1, 0.28, 0.28],
                                                                      [1, 0.6, 0.3])),
                         (50, ([1, 0.14, 0.14],))):
        b = batch(model, [" ".join(["good"] * (n - 2))])  # n - 2 words + [CLS] + [SEP]
        assert b["input_ids"].shape[1] == n
        for keep in schedules:
            ref = reference(model, b, PruningConfig.topk(model.shape, keep))
            assert (runner(b, keep=keep) - ref).abs().max() <= 1e-4, (n, keep)


def test_every_family_exports(family_model):
    """Position offsets (RoBERTa), no token types (DistilBERT), a projection (ELECTRA)."""
    cfg = topk(family_model)
    runner = get_backend("ort").build(family_model, cfg)
    for texts in (INPUTS["long"], INPUTS["padded"]):
        b = batch(family_model, texts)
        assert (runner(b) - reference(family_model, b, cfg)).abs().max() <= 1e-4


@pytest.mark.parametrize("backend", FP32_EXPORTED)
def test_keep_input_graph_runs_any_schedule(model, backend):
    runner = get_backend(backend).build(model, None, keep_input=True)
    b = batch(model, INPUTS["padded"])
    for keep in ([1, 1, 1], [1, 0.5, 0.5], [1, 0.7, 0.2], [1, 0.01, 0.01]):  # last: CLS only
        ref = reference(model, b, PruningConfig.topk(model.shape, keep))
        assert (runner(b, keep=keep) - ref).abs().max() <= 1e-4, keep


def test_int8_runs_and_changes_numerics_only_a_little(model):
    cfg = topk(model)
    runner = get_backend("ort-int8").build(model, cfg)
    b = batch(model, INPUTS["padded"])
    out = runner(b)
    assert out.shape == (3, model.config.num_labels) and torch.isfinite(out).all()
    assert runner.describe()["precision"] == "int8"


def test_openvino_int8_is_calibrated_on_the_given_examples(model):
    """NNCF quantizes the keep-input graph once per calibration set: other examples are
    another quantization (another file), the same examples reuse it."""
    b = batch(model, INPUTS["padded"])
    calib = [batch(model, [t]) for t in random_sentences(6, seed=9, min_words=3)]
    ov8 = get_backend("ov-int8")
    runner = ov8.build(model, None, keep_input=True, calibration=calib)
    for keep in ([1, 1, 1], [1, 0.5, 0.3]):
        out = runner(b, keep=keep)
        assert out.shape == (3, model.config.num_labels) and torch.isfinite(out).all()
    d = runner.describe()
    assert d["precision"] == "int8" and d["compiled_precision"] == "f32"  # the rest in fp32
    again = ov8.file(model, None, True, calib)
    other = ov8.file(model, None, True, calib[:3])
    assert again == runner.path and other != runner.path


def test_openvino_bf16_where_the_cpu_has_it(model):
    why = why_unavailable("ov-bf16")
    if why is not None:
        pytest.skip(f"ov-bf16 not available here: {why}")
    runner = get_backend("ov-bf16").build(model, topk(model))
    b = batch(model, INPUTS["padded"])
    out = runner(b)
    assert runner.describe()["compiled_precision"] == "bf16" and torch.isfinite(out).all()
    # bf16 changes numerics: reported, not asserted beyond a loose sanity bound
    assert (out - reference(model, b, topk(model))).abs().max() < 0.5


def test_export_is_cached(model):
    cfg = topk(model)
    first = exported(model, cfg)
    mtime = first.stat().st_mtime_ns
    assert exported(model, cfg) == first and first.stat().st_mtime_ns == mtime  # not redone
    assert first.parent == cache_dir()
    other = exported(model, PruningConfig.topk(model.shape, [1, 0.5, 0.2]))
    assert other != first  # another configuration is another graph


@pytest.mark.parametrize("backend", ["torch", "ort", "ort-int8", "ov", "ov-int8"])
def test_deploy_and_load_round_trip(model, tmp_path, backend):
    cfg = topk(model)
    path = pruning.deploy(model, cfg, backend, tmp_path / "model", max_len=12,
                          task="rotten_tomatoes", metric="accuracy", seq_len=32, threads=1)
    info = json.loads((path / "deployment.json").read_text())
    assert (info["task"], info["metric"], info["max_len"], info["seq_len"], info["threads"]) \
        == ("rotten_tomatoes", "accuracy", 12, 32, 1)
    loaded = pruning.load(path)
    b = batch(loaded, INPUTS["padded"])
    assert loaded.tokenizer.model_max_length == 12  # the chosen truncation travels
    assert loaded.pruning.keep == cfg.keep and loaded.shape == model.shape
    if backend == "torch":
        assert isinstance(loaded, pruning.PrunedBert)
    else:
        assert loaded.backend == backend and loaded.max_len == 12
        out = loaded(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
        ref = reference(model, b, cfg)
        assert out.shape == ref.shape
        if backend in FP32_EXPORTED:
            assert (out - ref).abs().max() <= 1e-4
        assert isinstance(pruning.load(path, backend="torch"), pruning.PrunedBert)
        with pytest.raises(TpError, match="deployed for"):
            pruning.load(path, backend="ort" if backend == "ort-int8" else "ort-int8")


def test_corrupt_deployment_is_refused(model, tmp_path):
    path = pruning.deploy(model, topk(model), "ort", tmp_path / "m")
    (path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(TpError, match="does not match its deployment.json"):
        pruning.load(path)


def test_unknown_backend_is_one_line():
    with pytest.raises(TpError, match="unknown backend 'tpu': use torch, ort, ort-int8, ov"):
        get_backend("tpu")
    # every runtime this install has runs here, except bf16 where the CPU lacks it (the CPU
    # flags the profiler reads, not OpenVINO's own capability list, decide the expectation)
    isa = set(fingerprint().isa)
    native_bf16 = bool(isa & {"avx512_bf16", "amx_bf16"})
    expected = ["torch", "ort", "ort-int8", "ov"] + (["ov-bf16"] if native_bf16 else []) + \
        ["ov-int8"]
    assert available_backends() == expected
    if not native_bf16:
        assert "no native bf16" in why_unavailable("ov-bf16")


def test_tp_bench_times_every_backend(model, tmp_path, capsys):
    from tp_search.pruning.bench_cli import main
    out = tmp_path / "report.json"  # the shared model and schedule: their exports are cached
    rc = main(["--model", model.source, "--task", "rotten_tomatoes", "--keep", "1,0.6,0.3",
               "--seq-len", "24", "--repeats", "2", "--warmup", "0", "--eval-samples", "16",
               "--out", str(out), "--format", "json", "-q"])
    assert rc == 0
    r = json.loads(out.read_text())
    for name in ("hf", "dense", "pruned", "ort dense", "ort pruned", "ort-int8 dense",
                 "ort-int8 pruned"):
        assert r["latency_ms"][name]["median_ms"] > 0, name
    assert r["max_logit_diff_vs_reference"]["ort"]["pruned"] <= 1e-4
    assert set(r["accuracy"]["by_backend"]) == set(available_backends()) - {"torch"}
    assert r["runners"]["ort-int8 pruned"]["precision"] == "int8"


def test_list_backends_reports_every_backend_and_why_not(capsys):
    """tp-bench --list-backends: the registry as this machine sees it, a reason for each
    backend that cannot run here (never an emulated one passed off as available)."""
    from tp_search.pruning import bench_cli
    from tp_search.pruning.runtime.registry import names
    assert bench_cli.main(["--list-backends", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["backends"]
    assert [r["backend"] for r in rows] == list(names())
    for r in rows:
        assert r["why_unavailable"] == why_unavailable(r["backend"])
        assert (r["why_unavailable"] is None) == (r["backend"] in available_backends())
