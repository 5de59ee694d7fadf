"""tp-bench's measurement: Hugging Face vs our dense vs our pruned encoder, in one process.

Every speedup tp-search claims comes from here: wall-clock medians of a model that
physically gathers the kept tokens, timed interleaved with the dense baselines.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import PruningConfig
from .data import Split, batches, load_task, task_spec
from .encoder import PrunedBert
from .evaluate import evaluate
from .macs import macs_report
from .timing import Timing, time_interleaved


@dataclass
class BenchSettings:
    seq_len: int = 128
    batch: int = 1
    threads: int = 1
    repeats: int = 50
    warmup: int = 5
    eval_samples: int = 300
    workload: str = "fixed"  # fixed: every input has seq_len real tokens; dev: real dev batches
    device: str = "cpu"
    hf: bool = True
    seed: int = 0


def hf_twin(model: PrunedBert) -> torch.nn.Module:
    """The same weights in transformers' own BertForSequenceClassification (default SDPA)."""
    from transformers import BertConfig, BertForSequenceClassification

    from .checkpoint import to_hf_state_dict
    c = model.config
    cfg = BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                     num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                     intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
                     max_position_embeddings=c.max_position_embeddings,
                     type_vocab_size=c.type_vocab_size, layer_norm_eps=c.layer_norm_eps,
                     num_labels=c.num_labels, pad_token_id=c.pad_token_id)
    hf = BertForSequenceClassification(cfg)
    hf.load_state_dict(to_hf_state_dict(model), strict=False)
    return hf.eval()


def fixed_inputs(model: PrunedBert, split: Split | None, seq_len: int, batch: int,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` inputs of exactly ``seq_len`` real tokens: dev text run together (so
    attention looks like real text), or random ids for a weightless shape."""
    tok = model.tokenizer
    if tok is not None and split is not None:
        ids: list[int] = []
        i = 0
        while len(ids) < batch * (seq_len - 2) and i < len(split):
            ids += tok(split.texts[i], add_special_tokens=False)["input_ids"]
            i += 1
        ids = (ids * (1 + batch * seq_len // max(len(ids), 1)))[:batch * (seq_len - 2)]
        body = torch.tensor(ids).view(batch, seq_len - 2)
        cls = torch.full((batch, 1), tok.cls_token_id)
        sep = torch.full((batch, 1), tok.sep_token_id)
        input_ids = torch.cat([cls, body, sep], 1)
    else:
        g = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size  # ids above BERT's special tokens where they exist
        lo = 1000 if vocab > 2000 else min(5, vocab - 1)
        input_ids = torch.randint(lo, vocab, (batch, seq_len), generator=g)
        input_ids[:, 0] = 101 if vocab > 101 else 0
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids)}


def run_bench(model: PrunedBert, cfg: PruningConfig, task: str | None,
              s: BenchSettings) -> dict[str, Any]:
    torch.set_num_threads(s.threads)
    model = model.to(s.device).eval()
    dense = PruningConfig.dense(model.shape)
    dev = load_task(task, "dev") if task and model.tokenizer is not None else None
    max_len = s.seq_len
    hf = hf_twin(model).to(s.device) if s.hf else None

    if s.workload == "dev" and dev is not None:
        feed = [{k: v.to(s.device) for k, v in b.items() if k != "labels"} for b in
                batches(model.tokenizer, dev.subset(s.batch * 16, s.seed), max_len, s.batch)]
    else:
        feed = [{k: v.to(s.device) for k, v in
                 fixed_inputs(model, dev, s.seq_len, s.batch, s.seed).items()}]
    cursor = {"hf": 0, "dense": 0, "pruned": 0}

    def runner(name: str, fn):
        def call():
            b = feed[cursor[name] % len(feed)]
            cursor[name] += 1
            return fn(b)
        return call

    fns = {}
    if hf is not None:
        fns["hf"] = runner("hf", lambda b: hf(**b).logits)
    fns["dense"] = runner("dense", lambda b: model(b["input_ids"], b["attention_mask"],
                                                  b["token_type_ids"], pruning=dense))
    fns["pruned"] = runner("pruned", lambda b: model(b["input_ids"], b["attention_mask"],
                                                    b["token_type_ids"], pruning=cfg))
    samples = time_interleaved(fns, repeats=s.repeats, warmup=s.warmup, device=s.device)
    lat = {k: Timing.of(v) for k, v in samples.items()}

    def paired(a: str, b: str) -> float:
        return float(np.median(samples[a] / samples[b]))

    out: dict[str, Any] = {
        "config": cfg.to_dict(),
        "workload": {"kind": s.workload, "seq_len": s.seq_len, "batch": s.batch,
                     "threads": s.threads, "device": s.device, "repeats": s.repeats,
                     "note": ("every input has seq_len real tokens (no padding)"
                              if s.workload != "dev" else "real dev batches, dynamic padding")},
        "latency_ms": {k: v.to_dict() for k, v in lat.items()},
        "speedup": {"pruned_vs_dense": paired("dense", "pruned")},
    }
    if hf is not None:
        out["speedup"]["dense_vs_hf"] = paired("hf", "dense")
        out["speedup"]["pruned_vs_hf"] = paired("hf", "pruned")
        with torch.inference_mode():
            b = feed[0]
            ref = hf(**b).logits
            ours = model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                         pruning=dense)
        out["max_logit_diff_vs_hf"] = float((ref - ours).abs().max())
    lengths = [int(x.sum()) for b in feed for x in b["attention_mask"]]
    if cfg.policy != "threshold":
        out["macs_workload"] = macs_report(cfg, lengths, max_len).to_dict()
    if dev is not None and s.eval_samples > 0:
        sub = dev.subset(s.eval_samples, s.seed)
        d = evaluate(model, sub, max_len, pruning=dense, device=s.device)
        p = evaluate(model, sub, max_len, pruning=cfg, device=s.device)
        out["accuracy"] = {"metric": d.primary, "dense": d.score, "pruned": p.score,
                           "eval_samples": len(sub)}
        out["macs_dev"] = p.macs(cfg, max_len).to_dict()
        out["dev_mean_length"] = float(np.mean(p.lengths))
    out["environment"] = environment(s.threads, s.device)
    return out


def environment(threads: int, device: str) -> dict[str, Any]:
    import transformers
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "threads": threads, "device": device,
           "machine": platform.machine()}
    try:
        from profiler.fingerprint import fingerprint
        env["machine_id"] = fingerprint(device=device, threads=threads).machine_id
    except Exception:  # fingerprinting is informative here, never fatal
        pass
    return env


def default_max_len(task: str | None) -> int:
    return task_spec(task).max_len if task else 128
