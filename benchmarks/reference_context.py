"""Is the profiler's reference pass a pure gauge of the machine's state? Times it beside a
grid component (256 tokens) and beside 512-token full passes, and back to back, per backend.
Usage: .venv/bin/python benchmarks/reference_context.py torch,ov-int8,ov,ort-int8"""
import sys, numpy as np, torch
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.pruning.runtime import get_backend
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.measure import fixed_inputs
from tp_search.pruning.measure.timing import time_interleaved
from tp_search.profiler.grid import time_reference
torch.set_num_threads(1)
model = from_pretrained(None).eval()
for name in sys.argv[1].split(","):
    be = get_backend(name)
    timers = be.component_timers(model, 1)
    ref = timers(1, 32); ref.warm()
    comp = timers(1, 256); comp.warm()
    full = be.full_pass(model, 1)
    ids = fixed_inputs(model, None, 512, 1, seed=512)["input_ids"]
    dense = full(PruningConfig.dense(model.shape), ids)
    out = {}
    for trial in range(2):
        a = time_interleaved({"ref": lambda: time_reference(ref), "comp": comp.plain_pass}, repeats=15, warmup=2, min_time_s=5)
        b = time_interleaved({"ref": lambda: time_reference(ref), "full": dense}, repeats=15, warmup=2, min_time_s=5)
        c = time_interleaved({"ref": lambda: time_reference(ref)}, repeats=30, warmup=2, min_time_s=3)
        print(f"{name} trial {trial}: ref beside components {np.median(a['ref']):.2f} ms, beside 512 full passes {np.median(b['ref']):.2f} ms "
              f"(x{np.median(b['ref'])/np.median(a['ref']):.3f}), alone {np.median(c['ref']):.2f} ms; full 512 {np.median(b['full']):.1f} ms", flush=True)
