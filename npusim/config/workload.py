"""The workload of one simulation: a training step (inference workloads arrive with the inference issue)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PositiveInt


class TrainWorkload(BaseModel):
    """One optimizer step of pre-training."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    seq_len: PositiveInt
    """Tokens per sequence."""
    global_batch: PositiveInt
    """Sequences per optimizer step."""

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step."""
        return self.seq_len * self.global_batch
