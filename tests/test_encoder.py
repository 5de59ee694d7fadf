"""The pruned encoder: HF parity, drop == mask equivalence, batching, policies, save/load."""
import pytest
import torch
from transformers import BertForSequenceClassification

from tp_search import pruning
from tp_search.pruning import ForwardInfo, PruningConfig, TpError
from tp_search.pruning.testing import make_tiny_checkpoint, masked_reference, random_sentences


def encode(model, texts):
    return model.tokenizer(texts, padding=True, return_tensors="pt")


def hf_logits(ckpt, ours, enc):
    hf = BertForSequenceClassification.from_pretrained(str(ckpt), num_labels=2).eval()
    with torch.no_grad():  # a checkpoint without head: give HF our fresh head
        hf.classifier.weight.copy_(ours.head.out.weight)
        hf.classifier.bias.copy_(ours.head.out.bias)
        return hf(**enc).logits


@pytest.mark.parametrize("ckpt_name", ["tiny_ckpt", "tiny_bertmodel_ckpt"])
@pytest.mark.parametrize("texts", [["good film"], ["a very good film , loved the story", "bad",
                                                   "not quite the best plot ever"]])
def test_dense_parity_with_hugging_face(request, ckpt_name, texts):
    ckpt = request.getfixturevalue(ckpt_name)
    model = pruning.from_pretrained(ckpt)
    enc = encode(model, texts)
    with torch.no_grad():
        ours = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    ref = hf_logits(ckpt, model, enc)
    assert (ours - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("policy", ["topk", "threshold"])
def test_dropping_equals_masking(tiny_ckpt, policy):
    model = pruning.from_pretrained(tiny_ckpt)
    shape = model.shape
    cfg = (PruningConfig.topk(shape, [0.6, 0.3]) if policy == "topk"
           else PruningConfig.threshold(shape, [0.03, 0.06]))
    enc = encode(model, random_sentences(5, seed=1, min_words=3))
    info = ForwardInfo()
    with torch.no_grad():
        dropped = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                        pruning=cfg, info=info)
        ref = masked_reference(model, enc, info)
    assert (info.kept[-1] < enc["attention_mask"].sum(1)).any(), "nothing was pruned"
    assert (dropped - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("policy", ["topk", "threshold"])
def test_batch_equals_one_by_one(tiny_ckpt, policy):
    """Per-example counts and re-padding: a mixed-length batch gives each example's own
    result, as if it ran alone."""
    model = pruning.from_pretrained(tiny_ckpt)
    cfg = (PruningConfig.topk(model.shape, [0.7, 0.4]) if policy == "topk"
           else PruningConfig.threshold(model.shape, [0.0, 0.05]))
    texts = random_sentences(6, seed=2)
    enc = encode(model, texts)
    info = ForwardInfo()
    with torch.no_grad():
        batch = model(enc["input_ids"], enc["attention_mask"], pruning=cfg, info=info)
        for i, t in enumerate(texts):
            e = encode(model, [t])
            one_info = ForwardInfo()
            one = model(e["input_ids"], e["attention_mask"], pruning=cfg, info=one_info)
            assert (one - batch[i]).abs().max() <= 1e-5
            assert [int(k[0]) for k in one_info.kept] == [int(k[i]) for k in info.kept]


def test_topk_counts_cls_padding_and_cumulative(tiny_ckpt):
    model = pruning.from_pretrained(tiny_ckpt)
    cfg = PruningConfig.topk(model.shape, [0.5, 0.25])
    enc = encode(model, random_sentences(8, seed=3))
    n = enc["attention_mask"].sum(1)
    info = ForwardInfo()
    with torch.no_grad():
        model(enc["input_ids"], enc["attention_mask"], pruning=cfg, info=info)
    for b in range(len(n)):
        assert [int(k[b]) for k in info.kept] == cfg.kept_counts(int(n[b]))
    prev = None
    for l in range(2):
        for b in range(len(n)):
            k = int(info.kept[l][b])
            idx = info.kept_index[l][b, :k]
            assert int(idx[0]) == 0, "CLS must always be kept"
            assert bool((idx < n[b]).all()), "padding kept over a real token"
            assert bool((idx[1:] > idx[:-1]).all()), "original order lost"
            if prev is not None:
                assert set(idx.tolist()) <= set(prev[b]), "pruning must be cumulative"
        prev = [info.kept_index[l][b, :int(info.kept[l][b])].tolist() for b in range(len(n))]


def test_topk_keeps_highest_importance(tiny_ckpt):
    model = pruning.from_pretrained(tiny_ckpt)
    cfg = PruningConfig.topk(model.shape, [0.5, 0.5])
    enc = encode(model, ["good film not quite the best plot ever , loved the music"])
    info = ForwardInfo()
    with torch.no_grad():
        model(enc["input_ids"], pruning=cfg, info=info)
    s = info.scores[0][0].clone()
    s[0] = float("inf")
    k = int(info.kept[0][0])
    assert set(info.kept_index[0][0].tolist()) == set(s.topk(k).indices.tolist())


def test_threshold_lengths_adapt_per_example(tiny_ckpt):
    model = pruning.from_pretrained(tiny_ckpt)
    cfg = PruningConfig.threshold(model.shape, [0.0, 0.06])
    enc = encode(model, random_sentences(10, seed=4, min_words=2, max_words=25))
    info = ForwardInfo()
    with torch.no_grad():
        model(enc["input_ids"], enc["attention_mask"], pruning=cfg, info=info)
    n = enc["attention_mask"].sum(1)
    assert torch.equal(info.kept[0], n), "layer 0 has threshold 0: nothing pruned"
    frac = info.kept[1].float() / n
    assert frac.max() - frac.min() > 0.05, "kept fraction should vary with the input"
    for b in range(len(n)):  # survivors are exactly the tokens at or above the threshold
        k = int(info.kept[1][b])
        s = info.scores[1][b, :int(n[b])]
        expect = int((s >= 0.06).sum()) + int(s[0] < 0.06)
        assert k == max(expect, 1)


def test_save_load_roundtrip(tiny_bertmodel_ckpt, tmp_path):
    model = pruning.from_pretrained(tiny_bertmodel_ckpt)
    model.set_pruning(PruningConfig.topk(model.shape, [1.0, 0.5], method="static"))
    out = pruning.save(model, tmp_path / "pruned")
    back = pruning.load(out)
    assert back.pruning == model.pruning
    enc = encode(model, random_sentences(4, seed=5))
    with torch.no_grad():
        a = model(enc["input_ids"], enc["attention_mask"])
        b = back(enc["input_ids"], enc["attention_mask"])
    assert torch.equal(a, b)
    # the directory is also a plain HF checkpoint with the same dense outputs
    hf = BertForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        dense = model(enc["input_ids"], enc["attention_mask"],
                      pruning=PruningConfig.dense(model.shape))
        assert (hf(**enc).logits - dense).abs().max() <= 1e-4


def test_save_is_atomic(tiny_ckpt, tmp_path, monkeypatch):
    model = pruning.from_pretrained(tiny_ckpt)
    out = pruning.save(model, tmp_path / "m")
    before = sorted(p.name for p in out.iterdir())

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(model.pruning.__class__, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        pruning.save(model, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    pruning.load(out)


def test_head_mismatch_and_bad_dirs(tiny_ckpt, tmp_path):
    with pytest.raises(TpError, match="2 labels but the task has 3"):
        pruning.from_pretrained(tiny_ckpt, num_labels=3)
    with pytest.raises(TpError, match="directory not found"):
        pruning.from_pretrained(tmp_path / "nope")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(TpError, match="is not BERT"):
        pruning.from_pretrained(tmp_path / "gpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TpError, match="no config.json"):
        pruning.from_pretrained(tmp_path / "empty")


def test_config_for_other_shape_is_refused(tiny_ckpt):
    model = pruning.from_pretrained(tiny_ckpt)
    other = PruningConfig.topk(pruning.ModelShape(6, 384, 12, 1536), [1, 1, .7, .5, .4, .3])
    with pytest.raises(TpError, match="made for a model with 6 layers"):
        model.set_pruning(other)


def test_bigger_checkpoint_shapes_load(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "m3", layers=3, hidden=48, heads=6, num_labels=3)
    model = pruning.from_pretrained(ckpt)
    assert model.shape == pruning.ModelShape(3, 48, 6, 96)
    assert model.config.num_labels == 3


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writes_keep_the_umask_permissions(tmp_path, mask):
    """Outputs written through a temporary file get what the user's umask gives a plainly
    created file (mkstemp's 0600 would lock a service running as another user out of the
    deployed model), for single files, directories and saved models alike."""
    import os
    import stat
    from tp_search.pruning.core.atomic import atomic_path, atomic_write_text
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "model") as d:
            d.mkdir(parents=True, exist_ok=True)
            (d / "w.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~mask
