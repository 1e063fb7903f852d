"""Single-device training steps: time whole bf16 training steps of small dense and MoE decoders with
PyTorch on the local accelerator and write them as run records (the published.csv schema), so that
``npusim validate`` predicts each one and reports the error.

The model is what a GPT-style run record describes (``npusim.validate.runs.record_model`` for a row
without a preset): pre-LayerNorm decoder layers with biases, tied input embedding and LM head,
causal flash attention (``scaled_dot_product_attention``) with GQA, a SwiGLU MLP or a routed-expert
block. Expert routing is forced to balance (token i's j-th expert is (i*k + j) mod E, the router's
probabilities still weight the outputs and get gradients), as ``routing=balanced`` in the records;
the expert GEMMs run as one batched GEMM per projection over [experts, tokens per expert, hidden]
(a grouped GEMM with equal groups). Training: bf16 parameters, gradients and AdamW states (fused
AdamW where PyTorch has it), no recomputation, one micro-batch per step. In plan terms: tp = pp =
dp = 1, zero 0, precision bf16, master_weights none.

Timing: ``WARMUP`` untimed steps, then ``STEPS`` steps each timed between synchronisations; the
record's step time is their median.
"""
from __future__ import annotations

import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from npusim.validate.microbench import Device
from npusim.validate.runs import COLUMNS

WARMUP = 3
STEPS = 5
LR = 1e-4


@dataclass(frozen=True)
class StepModel:
    """One benchmarked decoder and its batch (sizes in tokens / elements)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn_hidden: int
    """Dense FFN width, or the width of one expert."""
    seq_len: int
    micro_batch: int
    experts: int = 0
    top_k: int = 0
    vocab: int = 32000

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


FULL = (
    StepModel("dense-0.9b", 16, 2048, 16, 16, 5632, 4096, 4),
    StepModel("dense-2.9b", 28, 3072, 24, 8, 8192, 4096, 2),
    StepModel("dense-6.6b", 32, 4096, 32, 32, 11008, 4096, 1),
    StepModel("moe-2.5b-8e", 16, 2048, 16, 8, 2816, 4096, 4, experts=8, top_k=2),
    StepModel("moe-7.0b-32e", 24, 2048, 16, 4, 1408, 4096, 2, experts=32, top_k=4),
)
"""Models for an 80-141 GB accelerator: dense and MoE decoders of about 1-7B parameters."""
QUICK = (
    StepModel("tiny-dense", 2, 64, 4, 2, 128, 64, 2, vocab=256),
    StepModel("tiny-moe", 2, 64, 4, 2, 32, 64, 2, experts=4, top_k=2, vocab=256),
)
"""Tiny models of ``--quick`` (seconds on a CPU; they check the pipeline, not the numbers)."""


def build_model(torch, m: StepModel):
    """The PyTorch module of ``m`` (on the CPU, float32; the caller moves and casts it)."""
    nn, F = torch.nn, torch.nn.functional
    d = m.hidden // m.heads

    class Experts(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(m.hidden, m.experts, bias=False)
            scale = m.hidden ** -0.5
            self.w_up = nn.Parameter(torch.randn(m.experts, m.hidden, 2 * m.ffn_hidden) * scale)
            self.b_up = nn.Parameter(torch.zeros(m.experts, 1, 2 * m.ffn_hidden))
            self.w_down = nn.Parameter(torch.randn(m.experts, m.ffn_hidden, m.hidden) * m.ffn_hidden ** -0.5)
            self.b_down = nn.Parameter(torch.zeros(m.experts, 1, m.hidden))

        def forward(self, y):
            flat = y.reshape(-1, m.hidden)
            tokens, k = flat.shape[0], m.top_k
            probs = self.router(flat).float().softmax(-1)
            idx = (torch.arange(tokens * k, device=flat.device) % m.experts).view(tokens, k)
            gate = probs.gather(1, idx).to(flat.dtype)
            order = idx.reshape(-1).argsort(stable=True)
            grouped = flat.repeat_interleave(k, 0)[order].view(m.experts, -1, m.hidden)
            a, g = torch.baddbmm(self.b_up, grouped, self.w_up).chunk(2, -1)
            out = torch.baddbmm(self.b_down, F.silu(a) * g, self.w_down).reshape(-1, m.hidden)
            unpermuted = torch.empty_like(out).index_copy(0, order, out)
            return (unpermuted.view(tokens, k, m.hidden) * gate.unsqueeze(-1)).sum(1).view_as(y)

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Linear(m.hidden, 2 * m.ffn_hidden)
            self.down = nn.Linear(m.ffn_hidden, m.hidden)

        def forward(self, y):
            a, g = self.up(y).chunk(2, -1)
            return self.down(F.silu(a) * g)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(m.hidden), nn.LayerNorm(m.hidden)
            self.qkv = nn.Linear(m.hidden, (m.heads + 2 * m.kv_heads) * d)
            self.proj = nn.Linear(m.heads * d, m.hidden)
            self.ffn = Experts() if m.is_moe else Mlp()

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split([m.heads * d, m.kv_heads * d, m.kv_heads * d], -1)
            q = q.view(b, t, m.heads, d).transpose(1, 2)
            k = k.view(b, t, m.kv_heads, d).transpose(1, 2)
            v = v.view(b, t, m.kv_heads, d).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=m.kv_heads != m.heads)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, m.heads * d))
            return x + self.ffn(self.ln2(x))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(m.vocab, m.hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(m.layers))
            self.ln_f = nn.LayerNorm(m.hidden)

        def forward(self, ids, labels):
            x = self.embed(ids)
            for layer in self.layers:
                x = layer(x)
            logits = self.ln_f(x) @ self.embed.weight.t()  # tied LM head
            return F.cross_entropy(logits.view(-1, m.vocab).float(), labels.view(-1))

    return Decoder()


def time_steps(dev: Device, m: StepModel, warmup: int = WARMUP, steps: int = STEPS) -> tuple[list[float], Optional[float]]:
    """Seconds of each timed training step of ``m`` on ``dev``, and the peak memory in GB (accelerators)."""
    torch = dev.torch
    torch.manual_seed(0)
    with torch.device(dev.kind):  # initialise on the device (a 7B model in fp32 is 28 GB of host memory)
        model = build_model(torch, m)
    model = model.to(dtype=dev.dtype)
    fused = {"fused": True} if dev.kind == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=LR, **fused)
    ids = torch.randint(0, m.vocab, (m.micro_batch, m.seq_len), device=dev.kind)
    labels = torch.roll(ids, -1, dims=1)

    def step():
        opt.zero_grad(set_to_none=True)
        model(ids, labels).backward()
        opt.step()

    for _ in range(warmup):
        step()
    dev.sync()
    if dev.backend is not None:
        dev.backend.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        dev.sync()
        times.append(time.perf_counter() - t0)
    peak = dev.backend.max_memory_allocated() / 1e9 if dev.backend is not None else None
    return times, peak


def parameter_count(torch, m: StepModel) -> int:
    """Parameters of the PyTorch model of ``m``."""
    return sum(p.numel() for p in build_model(torch, m).parameters())


def record_row(index: int, m: StepModel, hardware: str, step_s: float, peak_gb: Optional[float], env: dict) -> dict:
    """A run record (published.csv columns) for one measured model; ids V901, V902, ... with the model
    name as the variant suffix (the run-record id format)."""
    tokens = m.micro_batch * m.seq_len
    row = dict.fromkeys(COLUMNS, "")
    row.update({
        "id": f"V{901 + index:03d}-{m.name}", "reliability": "A", "workload": "train", "hardware": hardware, "devices": 1,
        "source": f"npusim microbench --steps on {env.get('name', env.get('device'))} (torch {env.get('torch')})",
        "layers": m.layers, "hidden": m.hidden, "heads": m.heads, "kv_heads": m.kv_heads, "vocab": m.vocab,
        "attention": "mha" if m.kv_heads == m.heads else "gqa", "mlp": "swiglu",
        "seq_len": m.seq_len, "global_batch": m.micro_batch, "micro_batch": m.micro_batch,
        "tp": 1, "pp": 1, "vpp": 1, "cp": 1, "dp": 1, "sp": 0, "zero": 0, "recompute": "none",
        "precision": "bf16", "master_weights": "none", "measured_step_time_s": f"{step_s:.6g}",
        "measured_tokens_per_s_per_device": f"{tokens / step_s:.6g}", "published_metric": f"step_time_s={step_s:.6g}",
        "flop_convention": "none",
        "notes": (f"median of {STEPS} steps after {WARMUP} warm-up steps; bf16 parameters, gradients and AdamW states; "
                  "SDPA causal attention; balanced routing, experts as batched GEMMs"
                  + (f"; peak memory {peak_gb:.1f} GB" if peak_gb is not None else "")),
    })
    if m.is_moe:
        row.update({"experts": m.experts, "top_k": m.top_k, "shared_experts": 0, "expert_ffn_hidden": m.ffn_hidden,
                    "dense_layers": 0, "ep": 1, "etp": 1, "routing": "balanced"})
    else:
        row["ffn_hidden"] = m.ffn_hidden
    return row


HARDWARE_BY_NAME = (("H200", "nvidia-h200-sxm-141g"), ("H100", "nvidia-h100-sxm-80g"), ("H800", "nvidia-h800-sxm-80g"),
                    ("A100", "nvidia-a100-sxm-80g"), ("910B", "atlas-800t-a2"))
"""Hardware preset for a device name (substring match); others need ``--hardware``."""


def hardware_for(env: dict, given: Optional[str]) -> str:
    """The preset the records name: ``given``, else the one matching the device name, else the H200."""
    if given:
        return given
    name = str(env.get("name", ""))
    return next((preset for key, preset in HARDWARE_BY_NAME if key in name), "nvidia-h200-sxm-141g")


def run_stepbench(dev: Device, out: Path, env: dict, quick: bool, hardware: Optional[str] = None,
                  log=None) -> int:
    """Time every model of the set and write ``training_steps.csv`` into ``out``; returns the row count."""
    preset = hardware_for(env, hardware)
    rows = []
    for i, m in enumerate(QUICK if quick else FULL):
        try:
            times, peak = time_steps(dev, m, warmup=1 if quick else WARMUP, steps=2 if quick else STEPS)
        except RuntimeError as e:  # torch.OutOfMemoryError: record the others, say which did not fit
            if "out of memory" not in str(e).lower():
                raise
            if log:
                log(f"training step {m.name}: out of memory on this device, skipped")
            if dev.backend is not None:
                dev.backend.empty_cache()
            continue
        step = statistics.median(times)
        rows.append(record_row(i, m, preset, step, peak, env))
        if log:
            log(f"training step {m.name}: {step * 1e3:.1f} ms" + (f", peak {peak:.1f} GB" if peak is not None else ""))
        if dev.backend is not None:
            dev.backend.empty_cache()
    from npusim.outputs import atomic_open

    with atomic_open(out / "training_steps.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return len(rows)
