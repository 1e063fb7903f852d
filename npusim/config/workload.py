"""The workload of one simulation: a training step, a prefill, or a decode step."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from npusim.config.policy import MAX_BATCH, MAX_SEQ_LEN, StrictModel

SeqLen = Annotated[int, Field(gt=0, le=MAX_SEQ_LEN)]
Batch = Annotated[int, Field(gt=0, le=MAX_BATCH)]


class TrainWorkload(StrictModel):
    """One optimizer step of pre-training."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    seq_len: SeqLen
    """Tokens per sequence."""
    global_batch: Batch
    """Sequences per optimizer step."""

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step."""
        return self.seq_len * self.global_batch


class InferenceWorkload(StrictModel):
    """Serving: prefill of a batch of prompts (TTFT) or one decode step of a batch of sequences (TPOT)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    kind: Literal["prefill", "decode"]
    batch: Batch
    """Concurrent sequences over all devices of the instance."""
    input_len: SeqLen
    """Prompt length (prefill), or the context at which the decode step runs (decode)."""
    output_len: Optional[SeqLen] = None
    """Generated tokens per sequence; the KV cache is sized for input_len + output_len."""
    draft_tokens: int = Field(0, ge=0, le=16)
    """Speculative tokens verified per decode step (MTP or a draft model)."""
    accepted_tokens: float = Field(0.0, ge=0, le=16)
    """Mean draft tokens accepted per step (0..draft_tokens); tokens per step = 1 + accepted."""
    block_size: int = Field(0, ge=0, le=MAX_SEQ_LEN)
    """Diffusion-style block decoding: tokens decoded in parallel per block (0 = autoregressive)."""
    denoise_steps: float = Field(0.0, ge=0, le=10_000)
    """Expected forward passes per block in block decoding (a fixed step count, or the mean a
    confidence-threshold sampler takes: any value from 1 to block_size). Queries inside a block
    attend to each other both ways (bidirectional)."""

    @model_validator(mode="after")
    def _check(self) -> "InferenceWorkload":
        if self.accepted_tokens > self.draft_tokens:
            raise ValueError(f"accepted_tokens ({self.accepted_tokens}) exceeds draft_tokens ({self.draft_tokens})")
        if (self.block_size > 0) != (self.denoise_steps > 0):
            raise ValueError("block decoding needs both block_size and denoise_steps")
        if self.block_size and not 1 <= self.denoise_steps <= self.block_size:
            raise ValueError(f"denoise_steps ({self.denoise_steps}) must be within 1..block_size ({self.block_size}): "
                             "a block takes at least one pass and finalises at least one token per pass")
        if self.block_size and self.draft_tokens:
            raise ValueError("draft_tokens and block decoding are exclusive")
        if self.kind == "prefill" and (self.draft_tokens or self.block_size):
            raise ValueError("draft_tokens / block decoding apply to decode only")
        return self

    @property
    def query_tokens(self) -> int:
        """Tokens per sequence in one forward pass."""
        if self.kind == "prefill":
            return self.input_len
        return self.block_size or 1 + self.draft_tokens

    @property
    def tokens_per_step(self) -> float:
        """Output tokens per sequence per decode step (1 for plain decoding)."""
        if self.block_size:
            return self.block_size / self.denoise_steps
        return 1.0 + self.accepted_tokens

    @property
    def kv_len(self) -> int:
        """Tokens per sequence the KV cache must hold."""
        return self.input_len + (self.output_len or 0)
