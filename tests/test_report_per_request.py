"""The run report checks the plan request by request (issue 19): predicted against measured
at evenly spaced ranks, and the percentile of each side."""
from __future__ import annotations

import numpy as np

from tp_search.pruning.measure.requests import percentile_of
from tp_search.search.pipeline.summary import per_request_lines


def test_per_request_section_ranks_by_prediction_and_states_both_percentiles() -> None:
    rng = np.random.default_rng(0)
    rows = [{"tokens": int(n), "predicted_ms": float(n) / 10, "measured_ms": float(n) / 9}
            for n in rng.integers(20, 500, 50)]
    m = {"per_request": rows, "per_request_median_abs_error_pct": 10.0, "percentile": 90.0,
         "workload": "dev"}
    text = "\n".join(per_request_lines(m))
    pred90 = percentile_of([r["predicted_ms"] for r in rows], 90)
    meas90 = percentile_of([r["measured_ms"] for r in rows], 90)
    assert f"p90 of the per-request predictions {pred90:.2f} ms" in text
    assert f"measured medians {meas90:.2f} ms" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and " of 50 |" in line]
    assert len(table) == 7 and table[0].startswith("| 1 of 50") and table[-1].startswith("| 50 of")
    preds = [float(line.split("|")[3]) for line in table]
    assert preds == sorted(preds) and preds[0] == min(r["predicted_ms"] for r in rows)


def test_no_section_without_per_request_rows() -> None:
    assert per_request_lines({"per_request": [], "percentile": 90.0, "workload": "max"}) == []
