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
