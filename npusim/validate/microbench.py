"""Kernel microbenchmarks: time the calibration kernel set with PyTorch on the local accelerator.

``run_microbench(out_dir, device, quick)`` writes ``gemm.csv``, ``grouped_gemm.csv``,
``attention.csv``, ``memory.csv`` and ``env.json`` with the columns and semantics of
``npusim/data/calibration/h200`` (see its README), so ``npusim calibrate --from out_dir`` can fit a
profile from them. The full kernel set is the H200 one (the GEMM, grouped-GEMM and attention shapes
are read from the shipped H200 CSVs; memory kernels over 1 MiB .. 4 GiB tensors); ``quick`` uses
tiny sizes that run in seconds on a CPU (the numbers then only exercise the pipeline).

Timing: every figure is the median of ``ROUNDS`` rounds, each timing several back-to-back calls
after ``WARMUP`` warm-up calls; on CUDA and Ascend (torch_npu) between two device events after a
synchronisation, on the CPU with ``time.perf_counter``. PyTorch is imported lazily; without it
``import_torch`` raises a one-line ConfigError saying how to install it.
"""
from __future__ import annotations

import csv
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from npusim.config.errors import ConfigError

ROUNDS = 3
"""Timed rounds per kernel; the reported time is their median."""
WARMUP = 2
"""Untimed calls before the rounds."""
ROUND_MS = {"full": 20.0, "quick": 1.0}
"""Target duration of one round (calls per round = this / one call's time, at least 1)."""
MAX_CALLS = 100
"""Most back-to-back calls in one round."""
MEMORY_KERNELS = ("copy", "add", "rms_norm_h4096", "softmax_h4096", "silu_mul")
"""Memory-bound kernels of memory.csv."""
TRAFFIC = {"copy": 2.0, "add": 3.0, "rms_norm_h4096": 2.0, "softmax_h4096": 2.0, "silu_mul": 1.5}
"""Minimum traffic (read + write) per byte of the input tensor (silu_mul reads a packed [gate, up] tensor
and writes half of it)."""
FULL_MEMORY_BYTES = tuple(2 ** 20 * 4 ** i for i in range(7))
"""Input tensor sizes of the full memory set: 1 MiB .. 4 GiB (the H200 set)."""
QUICK = {
    "gemm": [(m, n, k) for m in (1, 16, 64, 256) for n, k in ((64, 64), (256, 128), (128, 512))],
    "grouped": [(4, 16, 64, 128), (8, 32, 128, 64), (4, 64, 128, 256)],
    "attention": [(1, 2, 64, 32), (1, 4, 128, 32), (2, 2, 256, 64)],
    "memory": (2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22),
}
"""Tiny sizes of ``--quick``: (M, N, K); (experts, tokens_per_expert, K, N); (batch, heads, seq, head_dim);
input bytes of the memory kernels."""
COLUMNS = {
    "gemm.csv": ("M", "N", "K", "dtype", "ms", "tflops"),
    "grouped_gemm.csv": ("experts", "tokens_per_expert", "K", "N", "impl", "ms", "tflops", "loop_ms", "loop_tflops"),
    "attention.csv": ("batch", "heads", "seq", "head_dim", "causal", "fwd_ms", "fwd_bwd_ms", "fwd_tflops",
                      "fwd_bwd_tflops"),
    "memory.csv": ("kernel", "bytes", "ms", "gbps"),
}
"""Columns of every CSV, as in npusim/data/calibration/h200."""
INSTALL_HINT = "pip install 'npusim[bench]'"


def import_torch():
    """The ``torch`` module, or a one-line ConfigError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ConfigError("npusim microbench", "torch", "not installed",
                          f"PyTorch is needed to run kernels; install it with {INSTALL_HINT}") from None
    return torch


@dataclass
class Device:
    """Where kernels run and how they are timed."""

    kind: str
    """'cuda', 'npu' or 'cpu'."""
    torch: Any
    dtype: Any

    @property
    def backend(self):
        """``torch.cuda`` / ``torch.npu`` (None on the CPU)."""
        return None if self.kind == "cpu" else getattr(self.torch, self.kind)

    def sync(self) -> None:
        """Wait for every queued kernel."""
        if self.backend is not None:
            self.backend.synchronize()

    def randn(self, *shape, grad: bool = False):
        """A random tensor of the benchmark dtype on the device."""
        return self.torch.randn(*shape, dtype=self.dtype, device=self.kind, requires_grad=grad)


def _npu_available(torch) -> bool:
    """True when torch_npu imports and sees an Ascend NPU."""
    try:
        import torch_npu  # noqa: F401 - registers torch.npu
    except ImportError:
        return False
    return bool(getattr(torch, "npu", None) and torch.npu.is_available())


def pick_device(want: str = "auto") -> Device:
    """The device to benchmark: CUDA, else Ascend (torch_npu), else the CPU for 'auto'; a one-line
    ConfigError when an explicitly asked accelerator is not there."""
    torch = import_torch()
    have = {"cuda": torch.cuda.is_available(), "cpu": True}
    if want in ("npu", "auto") and not have["cuda"]:
        have["npu"] = _npu_available(torch)
    kind = want if want != "auto" else next(k for k in ("cuda", "npu", "cpu") if have.get(k))
    if not have.get(kind):
        raise ConfigError("--device", "device", want, "not available on this machine",
                          "auto, cpu" + "".join(f", {k}" for k in ("cuda", "npu") if have.get(k)))
    return Device(kind, torch, torch.bfloat16)


def time_ms(fn: Callable[[], Any], dev: Device, target_ms: float) -> float:
    """Median over ROUNDS of the per-call time (ms) of ``fn``, after WARMUP calls; events on accelerators."""
    for _ in range(WARMUP):
        fn()
    dev.sync()
    one = float("inf")
    for _ in range(3):  # the fastest of three single calls sizes the rounds (robust to a stall)
        t0 = time.perf_counter()
        fn()
        dev.sync()
        one = min(one, max((time.perf_counter() - t0) * 1e3, 1e-6))
    calls = int(min(MAX_CALLS, max(1, target_ms / one)))
    rounds = []
    for _ in range(ROUNDS):
        if dev.backend is not None:
            start, end = dev.backend.Event(enable_timing=True), dev.backend.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            rounds.append(start.elapsed_time(end) / calls)
        else:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            rounds.append((time.perf_counter() - t0) * 1e3 / calls)
    return float(statistics.median(rounds))


def _tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` in ``ms`` milliseconds."""
    return flops / (ms * 1e-3) / 1e12


def bench_gemm(dev: Device, shapes, target_ms: float) -> list[dict]:
    """gemm.csv rows: ``A[M,K] @ B[K,N]``."""
    rows = []
    for m, n, k in shapes:
        a, b = dev.randn(m, k), dev.randn(k, n)
        ms = time_ms(lambda: a @ b, dev, target_ms)
        rows.append({"M": m, "N": n, "K": k, "dtype": str(dev.dtype), "ms": ms, "tflops": _tflops(2.0 * m * n * k, ms)})
    return rows


def grouped_fn(dev: Device, x, w, offs):
    """One ``torch._grouped_mm`` call over the experts, or None when this build or device lacks it."""
    torch = dev.torch
    if not hasattr(torch, "_grouped_mm"):
        return None
    try:
        torch._grouped_mm(x, w, offs=offs)
        dev.sync()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return lambda: torch._grouped_mm(x, w, offs=offs)


def bench_grouped(dev: Device, shapes, target_ms: float) -> list[dict]:
    """grouped_gemm.csv rows: ``[E*m, K] x [E, K, N]`` as one grouped call (impl 'grouped_mm') and as a
    Python loop of one GEMM per expert (``loop_ms``); impl 'loop' (ms = loop_ms) without grouped_mm."""
    rows = []
    for e, m, k, n in shapes:
        x, w = dev.randn(e * m, k), dev.randn(e, k, n)
        offs = dev.torch.arange(m, e * m + 1, m, dtype=dev.torch.int32, device=dev.kind)
        flops = 2.0 * e * m * n * k

        def loop(x=x, w=w, e=e, m=m):
            """One GEMM per expert."""
            return [x[i * m:(i + 1) * m] @ w[i] for i in range(e)]

        loop_ms = time_ms(loop, dev, target_ms)
        fused = grouped_fn(dev, x, w, offs)
        ms = time_ms(fused, dev, target_ms) if fused else loop_ms
        rows.append({"experts": e, "tokens_per_expert": m, "K": k, "N": n, "impl": "grouped_mm" if fused else "loop",
                     "ms": ms, "tflops": _tflops(flops, ms), "loop_ms": loop_ms,
                     "loop_tflops": _tflops(flops, loop_ms)})
    return rows


def bench_attention(dev: Device, shapes, target_ms: float) -> list[dict]:
    """attention.csv rows: causal ``scaled_dot_product_attention`` forward (no grad) and forward+backward;
    FLOPs count the causal half (forward 2*b*h*s^2*d, backward 2.5x forward)."""
    torch = dev.torch
    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for b, h, s, d in shapes:
        q, k, v = (dev.randn(b, h, s, d, grad=True) for _ in range(3))
        g = dev.randn(b, h, s, d)

        def fwd():
            """Forward only, no autograd graph."""
            with torch.no_grad():
                return sdpa(q, k, v, is_causal=True)

        def fwd_bwd():
            """Forward and the gradients of q, k and v."""
            return torch.autograd.grad(sdpa(q, k, v, is_causal=True), (q, k, v), g)

        f_ms, fb_ms = time_ms(fwd, dev, target_ms), time_ms(fwd_bwd, dev, target_ms)
        flops = 2.0 * b * h * s * s * d
        rows.append({"batch": b, "heads": h, "seq": s, "head_dim": d, "causal": True, "fwd_ms": f_ms,
                     "fwd_bwd_ms": fb_ms, "fwd_tflops": _tflops(flops, f_ms),
                     "fwd_bwd_tflops": _tflops(3.5 * flops, fb_ms)})
    return rows


def memory_fn(dev: Device, kernel: str, nbytes: int) -> tuple[Callable[[], Any], int]:
    """One memory-bound kernel over an input tensor of about ``nbytes`` (rows of 4096 elements), and the
    input's exact size in bytes."""
    torch, F = dev.torch, dev.torch.nn.functional
    size = torch.finfo(dev.dtype).bits // 8
    x = dev.randn(max(1, nbytes // size // 4096), 4096)
    in_bytes = x.numel() * size
    if kernel == "copy":
        out = torch.empty_like(x)
        return (lambda: out.copy_(x)), in_bytes
    if kernel == "add":
        y = torch.randn_like(x)
        return (lambda: torch.add(x, y)), in_bytes
    if kernel == "rms_norm_h4096":
        w = dev.randn(4096)
        if hasattr(F, "rms_norm"):
            return (lambda: F.rms_norm(x, (4096,), w)), in_bytes
        return (lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w), in_bytes
    if kernel == "softmax_h4096":
        return (lambda: torch.softmax(x, dim=-1)), in_bytes
    if kernel == "silu_mul":
        gate, up = x[:, :2048], x[:, 2048:]
        return (lambda: F.silu(gate) * up), in_bytes
    raise ValueError(f"unknown memory kernel {kernel!r}")


def bench_memory(dev: Device, sizes, target_ms: float) -> list[dict]:
    """memory.csv rows: every kernel of MEMORY_KERNELS at every input size; ``bytes`` is the minimum traffic."""
    rows = []
    for nbytes in sizes:
        for kernel in MEMORY_KERNELS:
            fn, in_bytes = memory_fn(dev, kernel, nbytes)
            ms = time_ms(fn, dev, target_ms)
            traffic = int(TRAFFIC[kernel] * in_bytes)
            rows.append({"kernel": kernel, "bytes": traffic, "ms": ms, "gbps": traffic / (ms * 1e-3) / 1e9})
            del fn
        if dev.backend is not None and hasattr(dev.backend, "empty_cache"):
            dev.backend.empty_cache()
    return rows


def h200_shapes() -> dict[str, list[tuple]]:
    """The full kernel set: GEMM, grouped-GEMM and attention shapes of the shipped H200 CSVs."""
    import npusim.data

    d = Path(npusim.data.__file__).parent / "calibration" / "h200"

    def read(name: str, cols: tuple[str, ...]) -> list[tuple]:
        """Integer columns ``cols`` of every row of one H200 CSV."""
        with (d / name).open(encoding="utf-8") as f:
            return [tuple(int(r[c]) for c in cols) for r in csv.DictReader(f)]

    return {"gemm": read("gemm.csv", ("M", "N", "K")),
            "grouped": read("grouped_gemm.csv", ("experts", "tokens_per_expert", "K", "N")),
            "attention": read("attention.csv", ("batch", "heads", "seq", "head_dim")),
            "memory": FULL_MEMORY_BYTES}


def environment(dev: Device, quick: bool) -> dict:
    """env.json: device, versions, and (where a tool is installed) clocks and power limit."""
    torch = dev.torch
    env = {"torch": torch.__version__, "python": sys.version, "device": dev.kind, "dtype": str(dev.dtype),
           "rounds": ROUNDS, "warmup": WARMUP, "quick": quick, "has_grouped_mm": hasattr(torch, "_grouped_mm")}
    if dev.kind == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(name=p.name, sm_count=p.multi_processor_count, mem_bytes=p.total_memory, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        env["nvidia_smi"] = _tool_output(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,"
                                          "clocks.max.memory,power.limit", "--format=csv"])
    elif dev.kind == "npu":
        import torch_npu

        env.update(name=torch.npu.get_device_name(0), torch_npu=getattr(torch_npu, "__version__", None))
        env["npu_smi"] = _tool_output(["npu-smi", "info"])
    else:
        env.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


def _tool_output(cmd: list[str]) -> str | None:
    """Standard output of a vendor tool, or None when it is missing or fails."""
    import shutil
    import subprocess

    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows with the file's documented columns."""
    from npusim.outputs import atomic_open

    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS[path.name], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def run_microbench(out_dir: str | Path, device: str = "auto", quick: bool = False,
                   log: Callable[[str], None] | None = None, steps: bool = False,
                   hardware: str | None = None) -> dict[str, int]:
    """Time the kernel set on ``device`` and write the four CSVs and env.json into ``out_dir`` (with
    ``steps``, also training_steps.csv: npusim.validate.stepbench); returns the number of rows per file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", "out", str(out), "is a file", "a folder (created when missing)")
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    dev.torch.manual_seed(0)
    shapes = QUICK if quick else h200_shapes()
    target = ROUND_MS["quick" if quick else "full"]
    benches = (("gemm.csv", bench_gemm, "gemm"), ("grouped_gemm.csv", bench_grouped, "grouped"),
               ("attention.csv", bench_attention, "attention"), ("memory.csv", bench_memory, "memory"))
    counts = {}
    for name, bench, key in benches:
        rows = bench(dev, shapes[key], target)
        write_csv(out / name, rows)
        counts[name] = len(rows)
        if log:
            log(f"{name}: {len(rows)} rows")
        if log and key == "grouped" and not any(r["impl"] == "grouped_mm" for r in rows):
            log("note: torch._grouped_mm did not run here; grouped_gemm.csv holds the per-expert loop only")
    env = environment(dev, quick)
    from npusim.outputs import write_text

    write_text(out / "env.json", json.dumps(env, indent=1) + "\n")
    if steps:
        from npusim.validate.stepbench import run_stepbench

        counts["training_steps.csv"] = counts["training_steps_host.csv"] = run_stepbench(dev, out, env, quick,
                                                                                         hardware, log)
    return counts
