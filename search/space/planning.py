"""What a prediction must stay under for the *measured* percentile to meet the target.

A latency table predicts something like the median pass in the state the table was
calibrated in. The target is a percentile (p90 by default) measured later, on a machine
whose own tail (repeated passes' p90 over their median) was 1.07x on the quietest AMD VM
this project saw and 1.42-1.46x on the Intel Xeon where a flat 5% margin missed by a third.
So each backend of each machine gets its own limit:

    limit = target * min(1 - margin, 1 / (tail * (1 + error)))

``tail``: the percentile over the median of the backend's repeated full passes, measured
with the table's calibration (and again by the closed loop, which replaces it with the
tail it measures); ``error``: the median |error| the table's own validation found (a new
machine validates itself when its table is built); ``margin``: a floor (``--margin``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Plan:
    target_ms: float
    percentile: float
    margin: float
    tail: float
    error: float
    limit_ms: float

    def describe(self) -> str:
        return (f"{self.limit_ms:.2f} ms predicted = {self.target_ms:g} ms x "
                f"min(1 - margin {self.margin:.0%}, 1 / (p{self.percentile:g} tail "
                f"{self.tail:.3f} x (1 + validated error {self.error:.1%})))")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(target_ms: float, percentile: float, margin: float, tail: float = 1.0,
         error: float = 0.0) -> Plan:
    factor = min(1.0 - margin, 1.0 / (max(tail, 1.0) * (1.0 + max(error, 0.0))))
    return Plan(target_ms, percentile, margin, max(tail, 1.0), max(error, 0.0),
                target_ms * factor)


def predictor_plan(predictor: Any, target_ms: float, percentile: float, margin: float,
                   tail: float | None = None) -> Plan:
    """The plan of one backend's predictor: its table's tail (or ``tail``, measured since)
    and its validated error."""
    t = predictor.tail(percentile) if tail is None else tail
    return plan(target_ms, percentile, margin, t, validated_error(predictor))


def validated_error(predictor: Any) -> float:
    v = getattr(predictor, "calibration", {}).get("validation") or {}
    return float(v.get("median_abs_error", 0.0))


Plans = Mapping[str, Mapping[str, Plan]]  # [machine][backend]


def plans_for(predictors: Mapping[str, Mapping[str, Any]], target_ms: float,
              percentile: float, margin: float) -> dict[str, dict[str, Plan]]:
    return {m: {b: predictor_plan(p, target_ms, percentile, margin) for b, p in preds.items()}
            for m, preds in predictors.items()}
