"""Every supported family: HF parity, drop == mask, save/load, tp-bench, bad model types.

Tiny random checkpoints of each family, written by transformers' own classes, with noise on
every parameter so that a wrong key mapping (a swapped bias or layer norm) shows.
"""
import json

import pytest
import torch
import transformers

from tp_search import pruning
from tp_search.pruning import FAMILIES, ForwardInfo, PruningConfig, TpError
from tp_search.pruning.bench.compare import hf_inputs, hf_twin
from tp_search.pruning.testing import FAMILIES as TINY_FAMILIES
from tp_search.pruning.testing import make_tiny_checkpoint, masked_reference, random_sentences

assert set(TINY_FAMILIES) == set(FAMILIES)

# batch 1; batch 3 of one length (no padding); batch 3 right-padded; batch 3 left-padded
CASES = {"one": (["a very good film , loved the story"], "right"),
         "equal": (["good film", "bad plot", "fine actor"], "right"),
         "padded": (["a very good film , loved the story", "bad", "not quite the best plot"],
                    "right"),
         "left-padded": (["a very good film , loved the story", "bad", "not quite the best"],
                         "left")}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "model"
    return request.param, make_tiny_checkpoint(path, family=request.param, noise=0.1)


@pytest.fixture(scope="module")
def loaded(family_ckpt):
    """(family, checkpoint dir, our model, transformers' own class on the same dir)."""
    fam, ckpt = family_ckpt
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval()
    assert type(hf).__name__ == FAMILIES[fam].hf_class
    return fam, ckpt, pruning.from_pretrained(ckpt), hf


def encode(model, texts, side="right"):
    model.tokenizer.padding_side = side
    try:
        return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))
    finally:
        model.tokenizer.padding_side = "right"


@pytest.mark.parametrize("case", list(CASES))
def test_dense_parity_with_transformers(loaded, case):
    fam, _, model, hf = loaded
    texts, side = CASES[case]
    enc = encode(model, texts, side)
    assert ("token_type_ids" in enc) == FAMILIES[fam].token_types
    assert bool((enc["attention_mask"] == 0).any()) == (case.endswith("padded"))
    with torch.no_grad():
        ours = model(**enc)
        ref = hf(**enc).logits
    assert model.config.family == fam
    assert ref.abs().max() > 0.01, "logits too small for the tolerance to mean anything"
    assert (ours - ref).abs().max() <= 1e-4


def test_base_model_checkpoint_loads(family_ckpt, tmp_path):
    """RobertaModel, DistilBertModel ... (no head): the encoder loads, a fresh head is made."""
    fam, _ = family_ckpt
    ckpt = make_tiny_checkpoint(tmp_path / "base", num_labels=None, family=fam, noise=0.1)
    model = pruning.from_pretrained(ckpt, num_labels=3)
    twin = hf_twin(model)  # transformers' class with our weights, fresh head included
    enc = encode(model, CASES["padded"][0])
    with torch.no_grad():
        assert (model(**enc) - twin(**hf_inputs(model, enc)).logits).abs().max() <= 1e-4
        base = transformers.AutoModel.from_pretrained(str(ckpt)).eval()
        x = model.embeddings(enc["input_ids"], enc.get("token_type_ids"))
        valid = enc["attention_mask"].bool()
        for layer in model.layers:  # the encoder output equals the base model's
            ctx, _ = layer.attention(x, valid, need_probs=False)
            x = layer.finish(x, ctx)
        ref = base(**enc).last_hidden_state
        assert ((x - ref) * valid[..., None]).abs().max() <= 1e-4


@pytest.mark.parametrize("policy", ["topk", "threshold"])
def test_dropping_equals_masking(loaded, policy):
    _, _, model, _ = loaded
    cfg = (PruningConfig.topk(model.shape, [0.6, 0.3]) if policy == "topk"
           else PruningConfig.threshold(model.shape, [0.03, 0.06]))
    enc = encode(model, random_sentences(5, seed=1, min_words=3))
    info = ForwardInfo()
    with torch.no_grad():
        dropped = model(**enc, pruning=cfg, info=info)
        ref = masked_reference(model, enc, info)
    assert (info.kept[-1] < enc["attention_mask"].sum(1)).any(), "nothing was pruned"
    assert (dropped - ref).abs().max() <= 1e-5


def test_save_load_keeps_family_and_loads_in_transformers(loaded, tmp_path):
    fam, _, model, _ = loaded
    pruned = PruningConfig.topk(model.shape, [1.0, 0.5], method="static")
    model.set_pruning(pruned)
    try:
        out = pruning.save(model, tmp_path / "pruned")
    finally:
        model.set_pruning(PruningConfig.dense(model.shape))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == fam and cfg["architectures"] == [FAMILIES[fam].hf_class]
    back = pruning.load(out)
    assert back.config.family == fam and back.pruning == pruned
    enc = encode(model, random_sentences(4, seed=5))
    with torch.no_grad():
        assert torch.equal(model(**enc, pruning=pruned), back(**enc))
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
        assert type(hf).__name__ == FAMILIES[fam].hf_class
        assert (hf(**enc).logits - model(**enc)).abs().max() <= 1e-4


def test_random_weights_save_in_family_layout(family_ckpt, tmp_path):
    """A model without a source config.json (random weights) writes its family's config."""
    fam, _ = family_ckpt
    model = pruning.random_model(dict(family=fam, num_layers=2, hidden_size=32, num_heads=4,
                                      intermediate_size=64, vocab_size=100,
                                      max_position_embeddings=40))
    out = pruning.save(model, tmp_path / "m")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    ids = torch.randint(5, 100, (2, 12))
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - model(ids)).abs().max() <= 1e-4


@pytest.mark.parametrize("model_type", ["gpt2", "t5", "deberta-v2", "modernbert"])
def test_unsupported_model_type_is_one_line_naming_families(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(TpError) as e:
        pruning.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and model_type in msg
    assert all(f in msg for f in FAMILIES)


@pytest.mark.parametrize("arch,family", [("roberta-base", "roberta"),
                                         ("xlm-roberta-base", "xlm-roberta"),
                                         ("distilbert-base", "distilbert"),
                                         ("electra-small", "electra")])
def test_tp_bench_arch_of_each_family(monkeypatch, capsys, arch, family):
    """tp-bench --arch builds the family (shrunk here) and reports parity to its HF class."""
    from tp_search.pruning import bench_cli
    from tp_search.pruning.model import checkpoint
    real = checkpoint.random_model
    made = {}

    def tiny(name):
        made["model"] = real(name, num_layers=2, hidden_size=32, num_heads=4,
                             intermediate_size=64, **({"embedding_size": 16}
                                                      if family == "electra" else {}))
        return made["model"]

    monkeypatch.setattr(checkpoint, "random_model", tiny)
    rc = bench_cli.main(["--arch", arch, "--keep", "1,0.5", "--seq-len", "24", "--repeats", "2",
                         "--warmup", "1", "--format", "json", "-q", "--backend", "torch"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert made["model"].config.family == family
    assert report["max_logit_diff_vs_hf"] <= 1e-4
    assert report["speedup"]["pruned_vs_dense"] > 0


def test_family_structure():
    """What each --arch's family turns into: the differences the encoder absorbs."""
    def small(arch):
        return pruning.random_model(arch, num_layers=1, hidden_size=32, num_heads=4,
                                    intermediate_size=64, vocab_size=100)
    r = small("roberta-base")
    assert (r.config.position_offset, r.config.max_len, r.config.head) == (2, 512, "roberta")
    assert small("xlm-roberta-base").config.family == "xlm-roberta"
    d = small("distilbert-base")
    assert d.embeddings.token_type is None and d.config.head == "distilbert"
    e = small("electra-small")
    assert e.embeddings.project.in_features == 128 and e.config.head == "electra"
    b = small("bert-base")
    assert b.embeddings.project is None and b.config.position_offset == 0


@pytest.mark.parametrize("arch", ["roberta-base", "electra-small"])
def test_tp_profile_arch_of_a_family(tmp_path, monkeypatch, capsys, arch):
    """The profiler times a family's own embeddings (RoBERTa positions, ELECTRA's
    projection) and head; tables key on the encoder shape only."""
    from tp_search.profiler.profile_cli import main as profile_main
    from tp_search.pruning.model import checkpoint
    real = checkpoint.random_model
    monkeypatch.setattr(checkpoint, "random_model", lambda name: real(
        name, num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64))
    rc = profile_main(["--arch", arch, "--max-len", "8", "--grid", "1,2,4,8",
                       "--point-budget", "0", "--min-repeats", "1", "--quiet-wait", "0",
                       "--out", str(tmp_path),
                       "--validate", "--samples", "2", "--seq-len", "8", "--format", "json",
                       "-q"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["validation"][0]["samples"] == 2
    assert (tmp_path / "machines" / out["machine_id"] / "bert-L2-H32-A4-F64.json").is_file()


def test_table_names_key_on_shape():
    """One latency table per encoder shape: roberta-base and xlm-roberta-base share
    bert-base's; DistilBERT's and ELECTRA-small's shapes have their own names."""
    from tp_search.profiler.table import shape_name
    from tp_search.pruning import ARCHS, ModelShape
    names = {a: shape_name(ModelShape(**ARCHS[a])) for a in
             ("roberta-base", "xlm-roberta-base", "distilbert-base", "electra-small")}
    assert names == {"roberta-base": "bert-base", "xlm-roberta-base": "bert-base",
                     "distilbert-base": "distilbert-base", "electra-small": "electra-small"}


@pytest.mark.parametrize("fam", ["roberta", "distilbert", "electra"])
def test_training_runs_on_a_family(tmp_path, fam):
    """tp-train's stages do not care which family they train (a few steps each)."""
    import pandas as pd

    from tp_search.pruning.train_cli import main
    fast = ["--max-steps", "2", "--batch-size", "8", "--max-len", "32", "-q"]
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", family=fam)
    texts = random_sentences(32, seed=2, min_words=3, max_words=15)
    pd.DataFrame({"text": texts, "label": [int("fun" in t) for t in texts]}).to_csv(
        tmp_path / "task.csv", index=False)
    task = str(tmp_path / "task.csv")
    assert main(["finetune", "--model", str(ckpt), "--task", task, "--out",
                 str(tmp_path / "ft"), *fast]) == 0
    PruningConfig.topk(pruning.load(tmp_path / "ft" / "model").shape, [1, 0.5]).save(
        tmp_path / "cfg.json")
    assert main(["prune", "--method", "top", "--config", str(tmp_path / "cfg.json"),
                 "--teacher", str(tmp_path / "ft"), "--model", str(tmp_path / "ft"),
                 "--task", task, "--out", str(tmp_path / "top"), "--bins", "4", *fast]) == 0
    model = pruning.load(tmp_path / "top" / "model")
    assert model.config.family == fam and model.pruning.policy == "topk"
