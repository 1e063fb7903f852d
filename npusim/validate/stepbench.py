"""Single-device training steps: time whole bf16 training steps of small dense and MoE decoders with
PyTorch on the local accelerator and write them as run records (the published.csv schema), so that
``npusim validate`` predicts each one and reports the error.

The model is what a GPT-style run record describes (``npusim.validate.runs.record_model`` for a row
without a preset): pre-LayerNorm decoder layers with biases, tied input embedding and LM head,
causal flash attention (``scaled_dot_product_attention``) with GQA, a SwiGLU MLP or a routed-expert
block. Expert routing is forced to balance (token i's j-th expert is (i*k + j) mod E, the router's
probabilities still weight the outputs and get gradients), as ``routing=balanced`` in the records;
the expert GEMMs run as one batched GEMM per projection over [experts, tokens per expert, hidden]
(a grouped GEMM with equal groups). A ``dropless`` model routes as eager dropless MoE code does
instead: the router's top-k picks the experts (a ``dropless`` record with ``routing=uniform`` in
its plan cell: an untrained router spreads tokens about evenly), the per-expert token counts are
copied to the host (one device-to-host synchronisation per MoE layer, which dropless dispatchers
need to size their buffers) and each expert runs its own GEMMs on its rows. The pair of the same
shape measures what that way of running costs beyond the kernels npusim prices.

Training: bf16 parameters, gradients and AdamW states (fused AdamW where PyTorch has it), no recomputation, one micro-batch per step. In plan terms: tp = pp =
dp = 1, zero 0, precision bf16, master_weights none.

Timing: ``WARMUP`` untimed steps, then ``STEPS`` steps each timed between synchronisations; the
record's step time is their median. The host side is measured too (``training_steps_host.csv``):
the time until the last kernel of a step has been issued (the Python call returning, before the
final synchronisation; a host-bound step issues for about as long as it runs) and the operators one
step dispatches (counted in one extra untimed step under a dispatch mode).
"""
from __future__ import annotations

import csv
import importlib
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from npusim.outputs import atomic_open
from npusim.validate.host_side import HOST_COLUMNS, HostRow
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
    dropless: bool = False
    """Route with the router's top-k, expert row counts on the host and a GEMM per expert (see above)."""

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def host_syncs_per_step(self) -> int:
        """Device-to-host synchronisations in one step besides the final one: one per MoE layer forward."""
        return self.layers if self.dropless else 0


FULL = (
    StepModel("dense-0.9b", 16, 2048, 16, 16, 5632, 4096, 4),
    StepModel("dense-2.9b", 28, 3072, 24, 8, 8192, 4096, 2),
    StepModel("dense-6.6b", 32, 4096, 32, 32, 11008, 4096, 1),
    StepModel("moe-2.5b-8e", 16, 2048, 16, 8, 2816, 4096, 4, experts=8, top_k=2),
    StepModel("moe-7.0b-32e", 24, 2048, 16, 4, 1408, 4096, 2, experts=32, top_k=4),
    # Qwen3-30B-A3B's MoE layer (hidden 2048, 128 experts of width 768, top-8) and V074's 8192
    # tokens per micro-batch, balanced and batched, then dropless with a GEMM per expert
    StepModel("moe-5.0b-128e", 8, 2048, 16, 4, 768, 4096, 2, experts=128, top_k=8),
    StepModel("moe-5.0b-128e-dropless", 8, 2048, 16, 4, 768, 4096, 2, experts=128, top_k=8, dropless=True),
)
"""Models for an 80-141 GB accelerator: dense and MoE decoders of about 1-7B parameters."""
QUICK = (
    StepModel("tiny-dense", 2, 64, 4, 2, 128, 64, 2, vocab=256),
    StepModel("tiny-moe", 2, 64, 4, 2, 32, 64, 2, experts=4, top_k=2, vocab=256),
    StepModel("tiny-moe-dropless", 2, 64, 4, 2, 32, 64, 2, experts=4, top_k=2, vocab=256, dropless=True),
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
            if m.dropless:
                gate, idx = probs.topk(k, -1)
                gate = gate.to(flat.dtype)
            else:
                idx = (torch.arange(tokens * k, device=flat.device) % m.experts).view(tokens, k)
                gate = probs.gather(1, idx).to(flat.dtype)
            order = idx.reshape(-1).argsort(stable=True)
            rows = flat.repeat_interleave(k, 0)[order]
            out = self.per_expert(rows, idx) if m.dropless else self.batched(rows)
            unpermuted = torch.empty_like(out).index_copy(0, order, out)
            return (unpermuted.view(tokens, k, m.hidden) * gate.unsqueeze(-1)).sum(1).view_as(y)

        def batched(self, rows):
            """Equal groups: one batched GEMM per projection."""
            a, g = torch.baddbmm(self.b_up, rows.view(m.experts, -1, m.hidden), self.w_up).chunk(2, -1)
            return torch.baddbmm(self.b_down, F.silu(a) * g, self.w_down).reshape(-1, m.hidden)

        def per_expert(self, rows, idx):
            """Rows sorted by expert: counts to the host (the dropless synchronisation), a GEMM per expert."""
            counts = torch.bincount(idx.reshape(-1), minlength=m.experts).tolist()
            outs = []
            for e, part in enumerate(rows.split(counts)):
                a, g = (part @ self.w_up[e] + self.b_up[e]).chunk(2, -1)
                outs.append((F.silu(a) * g) @ self.w_down[e] + self.b_down[e])
            return torch.cat(outs)

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


@dataclass(frozen=True)
class StepTiming:
    """What timing one model measured."""

    step_s: list[float]
    """Wall time of each timed step, synchronisation to synchronisation."""
    issue_s: list[float]
    """Of each timed step, the wall time until its last kernel was issued (before the final synchronisation)."""
    dispatched_ops: int
    """Operators one step dispatches (forward, backward and optimizer), counted in one untimed step."""
    peak_GB: Optional[float]
    """Peak allocated device memory (accelerators)."""


def count_dispatched_ops(torch, fn) -> int:
    """Operators that reach the dispatcher below autograd while ``fn()`` runs (about one kernel each)."""
    mode_base = importlib.import_module("torch.utils._python_dispatch").TorchDispatchMode

    class Count(mode_base):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def time_steps(dev: Device, m: StepModel, warmup: int = WARMUP, steps: int = STEPS) -> StepTiming:
    """Time training steps of ``m`` on ``dev``: each step's wall and host-issue time, the operators one
    step dispatches and the peak memory in GB (accelerators)."""
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
    times, issued = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        issued.append(time.perf_counter() - t0)
        dev.sync()
        times.append(time.perf_counter() - t0)
    peak = dev.backend.max_memory_allocated() / 1e9 if dev.backend is not None else None
    ops = count_dispatched_ops(torch, step)
    dev.sync()
    return StepTiming(times, issued, ops, peak)


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
                  "SDPA causal attention"
                  + (("; dropless: router top-k, expert row counts copied to the host in every MoE layer, "
                      "one GEMM per expert" if m.dropless else "; balanced routing, experts as batched GEMMs")
                     if m.is_moe else "")
                  + (f"; peak memory {peak_gb:.1f} GB" if peak_gb is not None else "")),
    })
    if m.is_moe:
        row.update({"experts": m.experts, "top_k": m.top_k, "shared_experts": 0, "expert_ffn_hidden": m.ffn_hidden,
                    "dense_layers": 0, "ep": 1, "etp": 1, "routing": "dropless" if m.dropless else "balanced"})
        if m.dropless:  # an untrained router spreads tokens about evenly: random top-k, not a trained router's skew
            row["plan"] = "routing=uniform"
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


def host_row(row_id: str, m: StepModel, t: StepTiming) -> HostRow:
    """The host-side line of one measured model: median step and issue times."""
    return HostRow(row_id, statistics.median(t.step_s), statistics.median(t.issue_s), t.dispatched_ops,
                   m.host_syncs_per_step)


def run_stepbench(dev: Device, out: Path, env: dict, quick: bool, hardware: Optional[str] = None,
                  log=None) -> int:
    """Time every model of the set; write ``training_steps.csv`` (run records) and
    ``training_steps_host.csv`` (``npusim.validate.host_side``) into ``out``; returns the row count."""
    preset = hardware_for(env, hardware)
    rows, host = [], []
    for i, m in enumerate(QUICK if quick else FULL):
        try:
            t = time_steps(dev, m, warmup=1 if quick else WARMUP, steps=2 if quick else STEPS)
        except RuntimeError as e:  # torch.OutOfMemoryError: record the others, say which did not fit
            if "out of memory" not in str(e).lower():
                raise
            if log:
                log(f"training step {m.name}: out of memory on this device, skipped")
            if dev.backend is not None:
                dev.backend.empty_cache()
            continue
        rows.append(record_row(i, m, preset, statistics.median(t.step_s), t.peak_GB, env))
        h = host_row(rows[-1]["id"], m, t)
        host.append(asdict(h))
        if log:
            log(f"training step {m.name}: {h.step_s * 1e3:.1f} ms, issued in {h.host_issue_s * 1e3:.1f} ms, "
                f"{h.dispatched_ops} operators" + (f", peak {t.peak_GB:.1f} GB" if t.peak_GB is not None else ""))
        if dev.backend is not None:
            dev.backend.empty_cache()
    for name, cols, lines in (("training_steps.csv", COLUMNS, rows), ("training_steps_host.csv", HOST_COLUMNS, host)):
        with atomic_open(out / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(cols), lineterminator="\n")
            w.writeheader()
            w.writerows(lines)
    return len(rows)
