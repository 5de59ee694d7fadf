"""Building blocks of tp-train: masked training forward, hard-concrete gates, ranking loss."""

import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from tp_search import pruning
from tp_search.pruning import ForwardInfo, ModelShape, PruningConfig
from tp_search.pruning.model.checkpoint import init_weights
from tp_search.pruning.model.keep import importance
from tp_search.pruning.testing import make_tiny_checkpoint, random_sentences
from tp_search.pruning.train.forward import soft_importance, threshold_keep_fns, topk_keep_fns, train_forward
from tp_search.pruning.train.gates import HardConcrete, graded_log_alpha
from tp_search.pruning.train.ranking import IGNORE, lambda_loss, teacher_relevance
from tp_search.pruning.train.top import TopGates, config_sparsity, macs_cost


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory):
    """A 3-layer tiny model with large random weights, so logits depend on every token."""
    model = pruning.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("t3") / "m",
                                                         layers=3))
    torch.manual_seed(0)
    init_weights(model, std=0.3)
    return model


def batch_of(model, n=6, seed=1):
    enc = model.tokenizer(random_sentences(n, seed=seed, min_words=3, max_words=20),
                          padding=True, return_tensors="pt")
    return dict(enc)


# --------------------------------------------------------------------------- forward

@pytest.mark.parametrize("cfg", [
    PruningConfig.topk(pruning.ModelShape(3, 32, 4, 64), [1, 0.6, 0.3]),
    PruningConfig.topk(pruning.ModelShape(3, 32, 4, 64), [0.5, 0.5, 0.2]),
    PruningConfig.threshold(pruning.ModelShape(3, 32, 4, 64), [0, 0.05, 0.08]),
])
def test_masked_forward_equals_token_dropping_encoder(tiny3, cfg):
    b = batch_of(tiny3)
    n_real = b["attention_mask"].sum(1)
    fns = topk_keep_fns(cfg, n_real) if cfg.policy == "topk" else \
        threshold_keep_fns(list(cfg.thresholds))
    with torch.no_grad():
        info = ForwardInfo()
        ref = tiny3(b["input_ids"], b["attention_mask"], b["token_type_ids"], pruning=cfg,
                    info=info)
        out = train_forward(tiny3, b, fns)
        dense = tiny3(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert (ref - dense).abs().max() > 1e-3  # pruning changes the logits ...
    assert (ref - out.logits).abs().max() < 1e-5  # ... and masking reproduces them
    kept = torch.stack([k.sum(1) for k in out.keep], 1).long()
    assert torch.equal(kept, torch.stack(info.kept, 1))
    assert bool((kept[:, -1] < n_real).any())


def test_soft_importance_reduces_to_importance_and_keeps_cls(tiny3):
    probs = torch.rand(2, 4, 7, 7).softmax(-1)
    valid = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7], dtype=torch.bool)
    assert torch.allclose(soft_importance(probs, valid.float()), importance(probs, valid))
    b = batch_of(tiny3)
    out = train_forward(tiny3, b, {1: lambda s, m: torch.zeros_like(m)})
    assert torch.equal(out.keep[1].sum(1), torch.ones(len(out.keep[1])))  # only CLS left


def test_soft_masks_are_differentiable(tiny3):
    b = batch_of(tiny3)
    theta = torch.tensor([0.0, 0.05, 0.08], requires_grad=True)
    out = train_forward(tiny3, b, threshold_keep_fns(theta, temperature=0.01))
    (out.logits.sum() + sum(k.sum() for k in out.keep)).backward()
    assert theta.grad is not None and theta.grad[1:].abs().sum() > 0


# --------------------------------------------------------------------------- gates

def test_hard_concrete_probability_and_rounding():
    torch.manual_seed(0)
    g = HardConcrete(4, torch.tensor([-3.0, 0.0, 1.0, 4.0]))
    samples = torch.stack([g.sample() for _ in range(4000)])
    assert samples.min() >= 0 and samples.max() <= 1
    assert ((samples == 0) | (samples == 1)).float().mean() > 0.2  # exact zeros/ones occur
    freq = (samples > 0).float().mean(0)
    assert torch.allclose(freq, g.prob_open().detach(), atol=0.03)
    closed = round(float((1 - g.prob_open().detach()).sum()))
    hard = g.hard()
    assert int((hard == 0).sum()) == closed and hard[0] == 0  # lowest log-alpha closes first


@pytest.mark.parametrize("ratio", [0.1, 0.37, 0.5, 0.9])
def test_graded_init_matches_ratio_and_ranks(ratio):
    la = graded_log_alpha(ratio, 20)
    g = HardConcrete(20, la)
    assert abs(float(g.prob_open().detach().mean()) - ratio) < 1e-3
    assert torch.all(la[1:] <= la[:-1])  # best-ranked bins most open


def test_gates_start_at_configuration_and_export_it():
    shape = pruning.ModelShape(6, 32, 4, 64)
    cfg = PruningConfig.topk(shape, [1, 1, 0.6, 0.4, 0.3, 0.2])
    gates = TopGates(cfg, bins=20)
    keep, prob = gates.expected_keep()
    assert torch.allclose(keep, torch.tensor(cfg.keep), atol=2e-3)
    assert prob[:2].max() < 1e-3 and prob[2:].min() > 0.999
    cost = macs_cost(shape, 64)
    with torch.no_grad():
        s = float(cost(keep.double(), prob.double()))
    assert abs(s - config_sparsity(cost, cfg)) < 5e-3
    exported = gates.export(shape)
    assert exported.method == "top" and exported.policy == "topk"
    assert all(abs(a - b) <= 0.026 for a, b in zip(exported.keep, cfg.keep))


def test_hard_gates_drop_what_the_exported_config_drops(tiny3):
    shape = tiny3.shape
    gates = TopGates(PruningConfig.topk(shape, [1, 0.6, 0.6]), bins=10)
    with torch.no_grad():  # make layer 2 also prune 30% of the survivors
        gates.layer.log_alpha[2] = 10.0
        gates.token.log_alpha[2] = graded_log_alpha(0.7, 10)
    zl, zt = gates.hard()
    assert zl.tolist() == [0, 1, 1] and zt.sum(1).tolist() == [10, 6, 7]
    cfg = gates.export(shape)
    assert cfg.keep == pytest.approx((1.0, 0.6, 0.42))
    b = batch_of(tiny3, n=8, seed=3)
    with torch.no_grad():
        info = ForwardInfo()
        tiny3(b["input_ids"], b["attention_mask"], b["token_type_ids"], pruning=cfg, info=info)
        out = train_forward(tiny3, b, gates.keep_fns(zl, zt))
    masked = torch.stack([k.sum(1) for k in out.keep], 1).long()
    physical = torch.stack(info.kept, 1)
    assert torch.equal(masked[:, :2], physical[:, :2])  # one pruning layer: exact
    assert (masked[:, 2] - physical[:, 2]).abs().max() <= 1  # compounded ceil: +-1 token


# --------------------------------------------------------------------------- ranking

def test_teacher_relevance_marks_top_k():
    scores = torch.tensor([[0.5, 0.1, 0.4, 0.2, 0.3, 0.0]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    rel = teacher_relevance(scores, valid, k=2)
    assert rel.tolist() == [[IGNORE, 0, 2, 0, 1, IGNORE]]  # CLS and padding ignored


def test_lambda_loss_decreases_and_raises_rank_correlation():
    torch.manual_seed(0)
    B, N = 6, 30
    teacher = torch.rand(B, N)
    rel = teacher_relevance(teacher, None, k=20)
    pred = torch.nn.Parameter(torch.randn(B, N))
    opt = torch.optim.Adam([pred], lr=0.05)

    def tau() -> float:
        return sum(kendalltau(pred[b, 1:].detach(), teacher[b, 1:]).statistic
                   for b in range(B)) / B
    first, tau0 = lambda_loss(pred, rel).item(), tau()
    for _ in range(150):
        loss = lambda_loss(pred, rel)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert lambda_loss(pred, rel).item() < 0.3 * first
    assert tau() > tau0 + 0.4


def test_ranking_distillation_teaches_an_early_layer(tiny3):
    """Train layer 1's attention to rank tokens like a (here: arbitrary) teacher ranking."""
    torch.manual_seed(0)
    model = pruning.from_pretrained(tiny3.source)  # the checkpoint's small weights
    b = batch_of(model, n=8, seed=5)
    teacher_scores = torch.rand(b["input_ids"].shape)
    rel = teacher_relevance(teacher_scores, b["attention_mask"].bool(), k=20)

    def rho() -> float:
        with torch.no_grad():
            s = train_forward(model, b, score_layers={1}).scores[1]
        vals = []
        for i in range(len(s)):
            n = int(b["attention_mask"][i].sum())
            vals.append(spearmanr(s[i, 1:n], teacher_scores[i, 1:n]).statistic)
        return sum(vals) / len(vals)
    model.eval()  # no dropout: a clean check
    rho0 = rho()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        s = train_forward(model, b, score_layers={1}).scores[1]
        loss = lambda_loss(s.clamp_min(1e-9).log(), rel)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert rho() > rho0 + 0.3


def test_hard_export_rounds_up_where_rounding_loses_most():
    """Rounding the expected closed bins can keep more tokens than the constraint allows;
    the export can round up per layer instead (largest lost fraction first)."""
    shape = ModelShape(3, 32, 4, 64)
    gates = TopGates(PruningConfig.topk(shape, [1, 0.6, 0.3]), bins=10)
    with torch.no_grad():  # layer 1: 3.3 closed bins expected; layer 2: 5.2
        for l, closed in ((1, 3.3), (2, 5.2)):
            p_open = torch.full((10,), 1 - closed / 10)
            shift = gates.token.prob_open()[l].logit() - gates.token.log_alpha[l]
            gates.token.log_alpha[l] = p_open.logit() - shift
    assert gates.rounding_gaps() == [1, 2]
    plain = gates.export(shape)
    assert plain.keep[1] == pytest.approx(0.7)  # 3 bins closed (3.3 rounded)
    up = gates.export(shape, round_up=frozenset({1}))
    assert up.keep[1] == pytest.approx(0.6) and up.keep[2] == pytest.approx(0.6 * 0.5)


def test_teacher_cache_gives_the_per_step_targets(tmp_path):
    """Cached teacher outputs (one pass over the training set) equal the teacher's forward
    pass in a training batch: same logits, same ranking relevance."""
    from tp_search.pruning.data import Split, TaskSpec, batches
    from tp_search.pruning.train.distillation import RankingDistiller
    from tp_search.pruning.train.teacher_cache import TeacherCache
    ckpt = make_tiny_checkpoint(tmp_path / "t", layers=3)
    teacher = pruning.from_pretrained(ckpt).eval()
    texts = random_sentences(40, seed=5, min_words=2, max_words=25)
    split = Split(texts, None, [i % 2 for i in range(40)], TaskSpec("t", ("text",), "label", 2,
                                                                  "accuracy"))
    path = tmp_path / "cache.pt"
    cache = TeacherCache.build(teacher, split, 32, batch_size=7, path=path, progress=False)
    assert path.is_file() and TeacherCache.build(teacher, split, 32, path=path).logits.equal(
        cache.logits)  # loaded, not recomputed
    plain = RankingDistiller(teacher, (1,), 5, 2.0, False)
    cached = RankingDistiller(teacher, (1,), 5, 2.0, False, cache)
    for b in batches(teacher.tokenizer, split, 32, 8, shuffle=True, seed=3):
        lp, rp = plain.targets(b)
        lc, rc = cached.targets(b)
        assert (lp - lc).abs().max() <= 1e-5
        assert torch.equal(rp, rc)
