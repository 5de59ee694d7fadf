"""How a candidate is judged: the constraint check (predictor only) and the proxy metric (the candidate's own numerics)."""
