"""Measured quantities of a training run and their step-time equivalents, and MFU by FLOP convention.

A training row gives its measurement as a step time, tokens/s of all devices, tokens/s per device or
an MFU; each converts to a step time with ``tokens = global_batch * seq_len`` per step, and MFU with

    step = FLOPs per step (in the row's convention) / (MFU * devices * peak)

where peak is the dense matrix peak of the plan's GEMM precision (the peak ``npusim simulate``
reports MFU against). FLOPs per step by ``flop_convention``:

- ``npusim``: ``npusim.flops.model_flops_per_token`` x tokens (3 x 2 x activated matmul parameters
  plus causal attention, no recompute). ``megatron-core`` and ``nemo-automodel`` use the same count:
  it reproduces the model TFLOP/s printed for the Megatron-Bridge and NeMo AutoModel rows of
  ``published.csv`` within 1 % (GPT-OSS with its sliding windows and the NeMo 24.12 rows aside).
- ``megatron-eq3``: Narayanan et al. Eq. 3 (full recompute, non-causal attention).
- ``korthikanti-eq7``: Korthikanti et al. Eq. 7.
- ``palm``: PaLM App. B, 6N + 12 L H Q T per token.

``deepseek`` and ``none`` have no formula here: such a row gives a time or a throughput.
"""
from __future__ import annotations

from typing import Optional

from npusim.validate.schema import MFU_CONVENTIONS

NPUSIM_COUNT = ("npusim", "megatron-core", "nemo-automodel")


def tokens_per_step(rec) -> int:
    """Tokens of one optimizer step of a training row."""
    return rec.global_batch * rec.seq_len


def flops_per_step(model, rec, convention: str) -> float:
    """Model FLOPs of one training step of ``rec`` counted in ``convention`` (one of MFU_CONVENTIONS)."""
    from npusim import flops

    if convention in NPUSIM_COUNT:
        return flops.model_flops_per_token(model, rec.seq_len) * tokens_per_step(rec)
    if convention == "megatron-eq3":
        return flops.megatron_eq3_flops(model, rec.global_batch, rec.seq_len)
    if convention == "korthikanti-eq7":
        return flops.korthikanti_eq7_flops(model, rec.global_batch, rec.seq_len)
    if convention == "palm":
        return flops.palm_flops_per_token(model, rec.seq_len) * tokens_per_step(rec)
    raise ValueError(f"no FLOP formula for convention {convention!r}; allowed: {', '.join(MFU_CONVENTIONS)}")


def mfu_convention(rec) -> str:
    """The convention MFU is shown in: the row's ``flop_convention`` when npusim can count it, else npusim's."""
    return rec.flop_convention if rec.flop_convention in MFU_CONVENTIONS else "npusim"


class StepScale:
    """Conversions between a training row's step time and its other measured quantities."""

    def __init__(self, rec, model, peak: float):
        """``peak``: per-device matrix peak in FLOP/s (``peak_flops``)."""
        self.rec, self.tokens, self.devices = rec, tokens_per_step(rec), rec.devices
        self.convention = mfu_convention(rec)
        self.flops = flops_per_step(model, rec, self.convention)
        self.peak = peak

    def mfu(self, step_s: float) -> float:
        """MFU in ``self.convention`` of a step of ``step_s`` seconds."""
        return self.flops / (step_s * self.devices * self.peak)

    def value(self, metric: str, step_s: float) -> float:
        """The value of ``metric`` for a step of ``step_s`` seconds."""
        if metric == "step_time_s":
            return step_s
        if metric == "tokens_per_s":
            return self.tokens / step_s
        if metric == "tokens_per_s_per_device":
            return self.tokens / step_s / self.devices
        if metric == "mfu":
            return self.mfu(step_s)
        raise ValueError(f"not a training metric: {metric}")

    def step(self, metric: str, value: float) -> float:
        """The step time (s) a measured ``metric`` of ``value`` stands for (the metric is its own inverse map)."""
        if metric == "step_time_s":
            return value
        return self.value(metric, value)  # tokens/s, tokens/s/device and MFU are all k / step


def scale_for(rec, res) -> StepScale:
    """The StepScale of a training row simulated as ``res``."""
    from npusim.cost.compute import matrix_dtype
    from npusim.validate.convert import record_hardware, record_model

    hw = record_hardware(rec)
    peak = hw.matrix_peak_flops(matrix_dtype(hw, res.config["plan"]["precision"]))
    return StepScale(rec, record_model(rec), peak)


def metric_value(rec, res) -> float:
    """The predicted value of the row's metric from its simulated training Result."""
    from npusim.validate.convert import measured_metric

    metric, _ = measured_metric(rec)
    if metric == "step_time_s":
        return res.step_time_s
    return scale_for(rec, res).value(metric, res.step_time_s)


def mfu_pair(rec, res, measured_step_s: float) -> Optional[dict]:
    """``{convention, measured, predicted}`` MFU of a training row, or None for a serving row."""
    if rec.workload != "train":
        return None
    sc = scale_for(rec, res)
    return {"convention": sc.convention, "measured": sc.mfu(measured_step_s), "predicted": sc.mfu(res.step_time_s)}
