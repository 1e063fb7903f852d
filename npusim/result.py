"""Result of a simulated step: time as a named sum, throughput, MFU/HFU and memory."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

FLOP_CONVENTION = (
    "model FLOPs = 3 x forward FLOPs of the activated matmuls (routed top-k + shared experts, "
    "LM head; input embedding excluded) + causal attention counted as half of the score matrix; "
    "no recompute. HFU counts every FLOP the simulated kernels execute (recompute included, "
    "materialised attention at full size). Peak = dense matrix peak of the plan's GEMM precision "
    "(fp8 runs are measured against the fp8 peak, so MFU <= 1). Routed-expert FLOPs of tokens dropped "
    "by a capacity factor are not counted (they do not run)."
)
FLOP_CONVENTIONS = {
    "npusim": FLOP_CONVENTION,
    "megatron": "model FLOPs = Korthikanti et al. Eq. 7 (72 B s l h^2 (1 + s/6h + V/12lh) per iteration, "
                "dense shape, non-causal attention); no recompute. HFU and peak as for 'npusim'.",
    "palm": "model FLOPs = PaLM Appendix B (6N + 12 L H Q T per token, N = activated parameters, non-causal "
            "attention); routed-expert FLOPs of dropped tokens not counted. HFU and peak as for 'npusim'.",
}
"""What each MFU numerator convention counts (``--flop-convention``)."""


@dataclass(frozen=True)
class Result:
    """One simulated training step."""

    step_time_s: float
    breakdown_s: dict[str, float]
    tokens_per_s: float
    tokens_per_s_per_device: float
    mfu: float
    hfu: float
    model_flops_per_token: float
    peak_memory_GB: float
    memory_GB: dict[str, float]
    hbm_capacity_GB: float
    config: dict[str, Any]
    timeline: list = field(default_factory=list, compare=False, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    ttft_s: float | None = None
    """Serving: time to first token (prefill)."""
    tpot_s: float | None = None
    """Serving: time per output token per sequence (decode)."""
    kv_cache_GB: float | None = None
    """Serving: KV cache per device."""

    @property
    def fits_in_memory(self) -> bool:
        """True when the busiest device's peak memory fits its HBM."""
        return self.peak_memory_GB <= self.hbm_capacity_GB

    @property
    def flop_convention(self) -> str:
        """The MFU numerator convention of this result (the same name as ``extra['flop_convention']``)."""
        return str(self.extra.get("flop_convention", "npusim"))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the ``--json`` output)."""
        r = lambda x: float(f"{x:.6g}")  # noqa: E731 - stable, readable rounding
        return {
            "step_time_s": r(self.step_time_s),
            "tokens_per_s": r(self.tokens_per_s),
            "tokens_per_s_per_device": r(self.tokens_per_s_per_device),
            "mfu": r(self.mfu),
            "hfu": r(self.hfu),
            "model_flops_per_token": r(self.model_flops_per_token),
            "peak_memory_GB": r(self.peak_memory_GB),
            "hbm_capacity_GB": r(self.hbm_capacity_GB),
            "fits_in_memory": self.fits_in_memory,
            "breakdown_s": {k: r(v) for k, v in self.breakdown_s.items()},
            "memory_GB": {k: r(v) for k, v in self.memory_GB.items()},
            "flop_convention": self.flop_convention,
            "flop_convention_description": FLOP_CONVENTIONS.get(self.flop_convention, ""),
            "extra": {k: (r(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in self.extra.items()},
            "config": self.config,
            **({"ttft_s": r(self.ttft_s) if self.ttft_s is not None else None,
                "tpot_s": r(self.tpot_s) if self.tpot_s is not None else None,
                "kv_cache_GB": r(self.kv_cache_GB)} if self.kv_cache_GB is not None else {}),
        }

    def to_frame(self):
        """A one-row pandas DataFrame with flat columns."""
        import pandas as pd

        d = self.to_dict()
        row = {k: v for k, v in d.items() if not isinstance(v, dict) and k not in ("flop_convention", "flop_convention_description")}
        row.update({f"breakdown_{k}_s": v for k, v in d["breakdown_s"].items()})
        row.update({f"memory_{k}_GB": v for k, v in d["memory_GB"].items()})
        return pd.DataFrame([row])
