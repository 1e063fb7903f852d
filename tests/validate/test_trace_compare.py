"""npusim compare: classification rules, trace summaries (device, Ascend, CPU), prediction per class, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from npusim.config.errors import ConfigError
from npusim.report.rebuild import load_inputs, simulate_inputs
from npusim.validate.trace_compare import (classify, compare_classes, predicted_by_class, read_trace,
                                           summarize_trace)
from cli_helpers import cli

TINY = """name: tiny-2l
layers: 2
hidden: 256
ffn_hidden: 1024
heads: 4
kv_heads: 4
vocab: 512
attention: mha
mlp: gelu
norm: layernorm
source: "test: the 2-layer transformer profiled in tests/validate/test_trace_compare.py"
"""
LAYERS, HIDDEN, HEADS, FFN, VOCAB, BATCH, SEQ = 2, 256, 4, 1024, 512, 2, 128




@pytest.mark.parametrize("name,cls", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_tn", "gemm"),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", "gemm"),
    ("aten::mm", "gemm"), ("aten::addmm", "gemm"), ("MatMulV2", "gemm"), ("GroupedMatmul", "gemm"),
    ("autograd::engine::evaluate_function: MmBackward0", "gemm"),
    ("flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>", "attention"),
    ("fmha_cutlassB_bf16_aligned_64x64_k128_sm80", "attention"), ("FlashAttentionScoreGrad", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel>", "elementwise"),
    ("aten::native_layer_norm", "elementwise"), ("RmsNorm", "elementwise"), ("cunn_SoftMaxForward", "elementwise"),
    ("Memcpy DtoD (Device -> Device)", "elementwise"), ("aten::add_", "elementwise"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "comm:all_reduce"), ("hcom_allReduce__425_0_1", "comm:all_reduce"),
    ("ncclDevKernel_AllGather_RING_LL", "comm:all_gather"), ("hcom_reduceScatter__1", "comm:reduce_scatter"),
    ("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL", "comm:reduce_scatter"),
    ("ncclDevKernel_SendRecv", "comm:send_recv"), ("hcom_alltoallv_", "comm:all_to_all"),
    ("ncclDevKernel_Broadcast_RING_LL", "comm:other"),
    ("multi_tensor_apply_kernel<TensorListMetadata<4>, AdamFunctor>", "optimizer"), ("ApplyAdamW", "optimizer"),
    ("Optimizer.step#AdamW.step", "optimizer"), ("aten::view", None), ("aten::empty", None),
])
def test_rules(name, cls):
    assert classify(name) == cls


def x(name, ts, dur, cat="kernel", pid=1, tid=7):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid}


def test_device_trace_counts_kernels_only_and_per_step():
    events = [
        x("ProfilerStep#1", 0, 1000, "user_annotation", pid=9, tid=9),
        x("ProfilerStep#2", 1000, 1000, "user_annotation", pid=9, tid=9),
        x("aten::mm", 0, 900, "cpu_op", pid=9, tid=9),  # host side: ignored when kernels exist
        x("sm90_xmma_gemm_bf16", 0, 400), x("flash_fwd_kernel", 400, 200),
        x("vectorized_elementwise_kernel", 600, 100),
        x("Optimizer.step#AdamW.step", 700, 300, "gpu_user_annotation"),
        x("vectorized_elementwise_kernel", 720, 60), x("multi_tensor_apply_kernel", 800, 100),
        x("ncclDevKernel_AllReduce_Sum_bf16", 0, 500, tid=8), x("some_custom_kernel", 1500, 20),
    ]
    s = summarize_trace(events)
    assert s.what == "device kernels" and s.steps == 2 and s.events == 7
    got = {k: round(v * 1e6, 6) for k, v in s.by_class_s.items()}
    assert got == {"gemm": 200, "attention": 100, "elementwise": 50, "optimizer": 80, "comm:all_reduce": 250,
                   "other": 10}
    assert s.total_s == pytest.approx(690e-6) and s.coverage == pytest.approx(1 - 10 / 690)
    assert list(s.unclassified_s) == ["some_custom_kernel"]
    assert summarize_trace(events, steps=1).by_class_s["gemm"] == pytest.approx(400e-6)


def test_cpu_trace_uses_self_time_and_inherits_classes():
    events = [
        x("aten::linear", 0, 100, "cpu_op"), x("aten::t", 1, 9, "cpu_op"), x("aten::addmm", 10, 80, "cpu_op"),
        x("aten::scaled_dot_product_attention", 100, 50, "cpu_op"), x("aten::bmm", 110, 20, "cpu_op"),
        x("aten::softmax", 130, 10, "cpu_op"),
        x("Optimizer.step#AdamW.step", 200, 50, "user_annotation"), x("aten::mul_", 205, 20, "cpu_op"),
        x("aten::view", 260, 5, "cpu_op"),
    ]
    s = summarize_trace(events)
    assert s.what == "CPU ops" and s.steps == 1
    got = {k: round(v * 1e6, 6) for k, v in s.by_class_s.items()}
    assert got == {"gemm": 100, "attention": 50, "optimizer": 20, "other": 5}


def test_ascend_trace():
    meta = [{"ph": "M", "name": "process_name", "pid": 3, "args": {"name": "Ascend Hardware"}},
            {"ph": "M", "name": "process_name", "pid": 4, "args": {"name": "HCCL"}},
            {"ph": "M", "name": "process_name", "pid": 5, "args": {"name": "Overlap Analysis"}}]
    events = meta + [x("MatMulV2", 0, 30, "", pid=3), x("FlashAttentionScore", 30, 20, "", pid=3),
                     x("RmsNorm", 50, 5, "", pid=3), x("hcom_allGather__1", 0, 40, "", pid=4),
                     x("Notify_Wait", 0, 40, "", pid=4), x("Computing", 0, 55, "", pid=5)]
    got = {k: round(v * 1e6, 6) for k, v in summarize_trace(events).by_class_s.items()}
    assert got == {"gemm": 30, "attention": 20, "elementwise": 5, "comm:all_gather": 40}


def test_bad_traces(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        read_trace(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        read_trace(bad)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"traceEvents": [x("ProfilerStep#1", 0, 5, "user_annotation")]}))
    with pytest.raises(ConfigError, match="no kernels or CPU ops"):
        summarize_trace(read_trace(empty))


def test_compare_rows_largest_gap_first():
    rows = compare_classes({"gemm": 1.0, "elementwise": 0.2, "other": 0.1}, {"gemm": 0.8, "elementwise": 0.5,
                                                                            "optimizer": 0.05})
    assert [r["class"] for r in rows] == ["elementwise", "gemm", "other", "optimizer"]
    assert rows[0]["gap_pct"] == 150.0 and rows[-1]["gap_pct"] is None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_prediction_adds_up_to_the_step_without_parallelism(tiny_model):
    inp = load_inputs(str(tiny_model), "atlas-800t-a2", "tp=1", 1, SEQ, BATCH, micro_batch=1)
    pred = predicted_by_class(inp)
    assert set(pred) == {"gemm", "attention", "elementwise", "optimizer"}
    assert sum(pred.values()) == pytest.approx(simulate_inputs(inp, keep_timeline=False).step_time_s, rel=1e-6)


def test_prediction_has_collectives_by_kind():
    inp = load_inputs("llama2-7b", "atlas-800t-a2", "tp=2,pp=2,sp=1,zero=1", 8, 2048, 8, micro_batch=1)
    pred = predicted_by_class(inp, rank=1)
    for c in ("comm:reduce_scatter", "comm:all_gather", "comm:send_recv"):
        assert pred[c] > 0, c
    with pytest.raises(ConfigError, match="pipeline rank"):
        predicted_by_class(inp, rank=2)


def profile_tiny_step(path: Path) -> None:
    """Profile one training step of a 2-layer transformer (functional ops, AdamW) on the CPU."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    p = lambda *shape: torch.nn.Parameter(torch.randn(*shape) * 0.02)  # noqa: E731
    layers = [dict(qkv=p(3 * HIDDEN, HIDDEN), o=p(HIDDEN, HIDDEN), up=p(FFN, HIDDEN), down=p(HIDDEN, FFN))
              for _ in range(LAYERS)]
    emb, head = p(VOCAB, HIDDEN), p(VOCAB, HIDDEN)
    opt = torch.optim.AdamW([emb, head] + [w for d in layers for w in d.values()], lr=1e-3)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))

    def step():
        h = F.embedding(tokens, emb)
        for d in layers:
            y = F.layer_norm(h, (HIDDEN,))
            q, k, v = (y @ d["qkv"].t()).view(BATCH, SEQ, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(BATCH, SEQ, HIDDEN)
            h = h + a @ d["o"].t()
            h = h + F.gelu(F.layer_norm(h, (HIDDEN,)) @ d["up"].t()) @ d["down"].t()
        logits = F.layer_norm(h, (HIDDEN,)) @ head.t()
        F.cross_entropy(logits.view(-1, VOCAB), tokens.view(-1)).backward()
        opt.step()
        opt.zero_grad()

    step()  # optimizer state and kernels warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    prof.export_chrome_trace(str(path))


@pytest.fixture(scope="module")
def cpu_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "step.json"
    profile_tiny_step(path)
    return path


def test_cpu_profiler_trace_is_classified(cpu_trace):
    s = summarize_trace(read_trace(cpu_trace))
    assert s.what == "CPU ops" and s.coverage > 0.9, (s.by_class_s, s.unclassified_s)
    assert {"gemm", "attention", "elementwise", "optimizer"} <= set(s.by_class_s)


def test_compare_cli(cpu_trace, tiny_model, capsys):
    argv = ["compare", "--trace", str(cpu_trace), "--model", str(tiny_model), "--hardware", "atlas-800t-a2",
            "--devices", "1", "--plan", "tp=1", "--seq-len", str(SEQ), "--global-batch", str(BATCH),
            "--micro-batch", str(BATCH)]
    rc, out, err = cli(argv, capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["class", "measured", "s", "predicted", "s", "gap", "s", "gap", "%"]
    body = [ln.split()[0] for ln in lines[2:] if not ln.startswith(("measured:", "unclassified:", "predicted:"))]
    assert {"gemm", "attention", "elementwise", "optimizer"} <= set(body)
    gaps = [abs(float(ln.split()[3])) for ln in lines[2:2 + len(body)]]
    assert gaps == sorted(gaps, reverse=True)
    assert any(ln.startswith("measured:") and "CPU ops" in ln for ln in lines)
    rc, out, err = cli(argv + ["--json"], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["coverage"] > 0.9 and doc["predicted_step_time_s"] > 0
    assert {r["class"] for r in doc["rows"]} >= {"gemm", "attention", "elementwise", "optimizer"}


def test_compare_cli_errors(tmp_path, capsys):
    rc, _, err = cli(["compare", "--trace", str(tmp_path / "none.json"), "--model", "llama2-7b", "--devices", "8"],
                     capsys)
    assert rc == 2 and "file not found" in err and len(err.splitlines()) == 1
    rc, _, err = cli(["compare", "--model", "llama2-7b"], capsys)
    assert rc == 2 and "--trace" in err
