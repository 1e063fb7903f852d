"""Options of a request-level serving run (strict, units in the names)."""
from __future__ import annotations

from typing import Optional

from pydantic import ConfigDict, Field, PositiveFloat, model_validator

from npusim.config.policy import MAX_DEVICES, MAX_SEQ_LEN, StrictModel


class ServeSpec(StrictModel):
    """How requests are scheduled on instances, and the service-level objective."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    instances: int = Field(1, ge=0, le=MAX_DEVICES)
    """Collocated instances (each prefills and decodes, continuous batching with chunked prefill);
    0 with a disaggregated layout."""
    prefill_instances: int = Field(0, ge=0, le=MAX_DEVICES)
    """Disaggregated layout: instances that only prefill (0 = collocated)."""
    decode_instances: int = Field(0, ge=0, le=MAX_DEVICES)
    """Disaggregated layout: instances that only decode; KV caches move to them over the profile's
    scale-out links."""
    prefill_chunk_tokens: int = Field(2048, gt=0, le=MAX_SEQ_LEN)
    """Most prompt tokens one step prefills (chunked prefill); longer prompts take several steps."""
    max_batch: int = Field(0, ge=0, le=1 << 20)
    """Most sequences decoding at once on one instance (0 = as many as the KV cache holds)."""
    drain_s: float = Field(60.0, ge=0, le=1e6)
    """Seconds simulated after the last arrival; requests unfinished by then miss the SLO."""
    ttft_slo_s: Optional[PositiveFloat] = None
    """Time-to-first-token objective of one request."""
    tpot_slo_s: Optional[PositiveFloat] = None
    """Time-per-output-token objective of one request."""

    @model_validator(mode="after")
    def _layout(self) -> "ServeSpec":
        disagg = self.prefill_instances or self.decode_instances
        if disagg and not (self.prefill_instances and self.decode_instances):
            raise ValueError("a disaggregated layout needs prefill_instances and decode_instances >= 1")
        if disagg and self.instances:
            raise ValueError("give collocated instances or prefill/decode instances, not both")
        if not disagg and not self.instances:
            raise ValueError("no instances: instances >= 1, or prefill_instances and decode_instances")
        return self

    @property
    def disaggregated(self) -> bool:
        """True for separate prefill and decode pools."""
        return self.prefill_instances > 0
