"""The train stage constrains the chosen candidate with the closed loop's measured/predicted
ratio of its backend: an under-predicting table otherwise made the plan's limit look looser
than the dense model (issue 16, run 1 on the Intel AMX host: ToP trained with target 0)."""
from __future__ import annotations

from tp_search.pruning import ModelShape
from tp_search.pruning.config import PruningConfig
from tp_search.search.pipeline.training import loop_correction
from tp_search.search.result import MachineChoice
from tp_search.search.selection.closed_loop import BackendWindow, LoopRound

SHAPE = ModelShape(4, 32, 4, 64)


def choice(rounds: list[LoopRound], backend: str = "b") -> MachineChoice:
    return MachineChoice("m", 10.0, 1.0, PruningConfig.topk(SHAPE, [1, .5, .5, .5]), 5.0,
                         0.9, {}, backend=backend, rounds=rounds)


def rnd(chosen: str | None, corrections: dict[str, float]) -> LoopRound:
    return LoopRound(0, 20.0, 90.0, [], [BackendWindow(b, 1.0, 1.0, 1.0, c)
                                         for b, c in corrections.items()], 1.0, chosen)


def test_the_chosen_backends_ratio_from_the_round_that_chose() -> None:
    assert loop_correction(choice([rnd("k", {"a": 0.9, "b": 1.68})])) == 1.68
    # an earlier round refitted (its correction is stored with the table): only the last counts
    assert loop_correction(choice([rnd(None, {"b": 2.0}), rnd("k", {"b": 1.1})])) == 1.1


def test_a_fast_window_never_loosens_the_training_constraint() -> None:
    # the Intel host a day after calibrating: 0.68; loosened, LTP trained thresholds to zero
    assert loop_correction(choice([rnd("k", {"b": 0.68})])) == 1.0


def test_no_correction_without_a_loop_or_a_choice() -> None:
    assert loop_correction(choice([])) == 1.0
    assert loop_correction(choice([rnd(None, {"b": 1.5})])) == 1.0
    assert loop_correction(choice([rnd("k", {"a": 1.5})])) == 1.0


def test_ltp_choice_whose_dense_model_meets_the_plan_deploys_the_teacher(tmp_path):
    """LTP's calibration would zero every threshold after its soft stage retrained the
    weights (rotten_tomatoes 5 ms on the Intel host: -1.24 points): the train stage deploys
    the teacher at the chosen length instead, and says why."""
    from types import SimpleNamespace

    from tp_search.profiler import fingerprint, load_predictor
    from tp_search.profiler.synthetic import synthetic_table
    from tp_search.search.pipeline.stages import Stages
    from tp_search.search.pipeline.training import train_choice
    from tp_search.search.space.workload import Workload

    synthetic_table(SHAPE, max_len=64, fp=fingerprint()).save(tmp_path / "res")
    pred = load_predictor(SHAPE, results=tmp_path / "res")
    w = Workload("dev", 32, dev_lengths=(10, 20, 30, 32, 32))
    cfg = PruningConfig.threshold(SHAPE, [0.0, 0.0, 0.01, 0.02])
    dense16 = w.predict(pred, PruningConfig.dense(SHAPE), 16)

    def run(limit: float) -> tuple:
        c = MachineChoice("m", 10.0, 1.0, cfg, 1.0, 0.9, {}, backend="torch", max_len=16,
                          limit_ms=limit)
        sr = SimpleNamespace(status="searched", primary=c, workload=w, out_dir=tmp_path)
        s = SimpleNamespace(machines=None, device="cpu", threads=1, batch=1,
                            results=str(tmp_path / "res"), latency_ms=20.0)
        stages = Stages(tmp_path)
        out = train_choice(SimpleNamespace(train=True), s, sr, stages, tmp_path, "student",
                           "teacher", {}, {}, {}, SHAPE, None, 32)
        return out, c, stages

    (model, static), c, stages = run(dense16 * 1.01)
    assert (model, static) == ("teacher", True)
    assert c.config.is_dense and c.latency_ms == dense16
    assert stages.records[-1].status == "skipped" and "thresholds would train to 0" in \
        stages.records[-1].output
