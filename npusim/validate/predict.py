"""Predict the measured metric of one run record with the simulator."""
from __future__ import annotations

from npusim.validate.convert import SERVING_PLAN  # noqa: F401 - documented here since the first version
from npusim.validate.schema import RunRecord

AUTO_MICRO_BATCHES = (1, 2, 4, 8)
"""Candidates tried when a row does not state its micro-batch."""
AUTO_RECOMPUTE = ("none", "selective", "full")
"""Recompute policies tried, lightest first, when a row does not state one."""

MTP_ACCEPTED_TOKENS = 0.85
"""Accepted draft tokens per step for one MTP head when a row does not state it: the DeepSeek-V3
technical report measures 85-90 % acceptance of the second token (we take the low end)."""


def predict_record(rec: RunRecord) -> float:
    """Predicted value of the row's metric (``measured_metric``): step time, tokens/s (all devices or
    per device) or MFU for training rows; TTFT or TPOT (s) for prefill and decode rows."""
    return predict_result(rec)[0]


def predict_result(rec: RunRecord, hw=None):
    """(predicted value of the row's metric, simulated Result); ``hw`` replaces the row's hardware
    profile for training rows (sensitivity studies)."""
    if rec.workload == "train":
        from npusim.validate.metrics import metric_value

        res = simulate_record(rec, hw)
        return metric_value(rec, res), res
    res = simulate_serving_record(rec)
    return (res.ttft_s if rec.workload == "prefill" else res.tpot_s), res


def simulate_serving_record(rec: RunRecord):
    """Simulate a prefill or decode row (layout: ``convert.serving_plan_fields``). A decode row whose
    notes mention MTP decodes one draft token per step with MTP_ACCEPTED_TOKENS accepted. The row's
    ``devices`` counts cards (``node.chips_per_card`` chips each). A row that does not state its KV
    dtype has a 16-bit cache when its batch fits, else an int8 one (what the deployment had to do)."""
    from npusim.config.plan import make_plan
    from npusim.config.workload import InferenceWorkload
    from npusim.engine.serve import resolve_serving_plan, serving_memory, simulate_serving
    from npusim.validate.convert import record_hardware, record_model, serving_plan_fields

    model, hw = record_model(rec), record_hardware(rec)
    chips = rec.devices * hw.node.chips_per_card
    fields = serving_plan_fields(rec, model, chips)
    mtp = "MTP" in (rec.notes or "") and rec.workload == "decode"
    wl = InferenceWorkload(kind=rec.workload, batch=rec.batch, input_len=rec.input_len, output_len=rec.output_len,
                           draft_tokens=1 if mtp else 0, accepted_tokens=MTP_ACCEPTED_TOKENS if mtp else 0.0)
    plan = make_plan(fields, rec.origin or rec.id)
    if plan.kv_precision == "auto":
        full = resolve_serving_plan(plan, model, chips, rec.batch, rec.origin or rec.id)
        if sum(serving_memory(model, full, wl, rec.batch // full.dp).values()) > hw.chip.hbm_capacity_GB * 1e9:
            plan = plan.model_copy(update={"kv_precision": "int8"})
    return simulate_serving(model, hw, plan, wl, chips)


def simulate_record(rec: RunRecord, hw=None):
    """Simulate a training row. Choices the row does not state are filled the way the run's authors
    had to: the recompute policy is the lightest of AUTO_RECOMPUTE that fits in memory, and the
    micro-batch the fastest of AUTO_MICRO_BATCHES that fits. Neither looks at the measured value.
    When nothing fits, the first valid plan is returned (its ``fits_in_memory`` is False). ``hw``
    (default: the row's profile) replaces the hardware profile."""
    from npusim.config.errors import ConfigError
    from npusim.config.plan import make_plan
    from npusim.simulate import simulate
    from npusim.validate.convert import record_hardware, record_model, record_plan_fields, record_workload

    hw = hw if hw is not None else record_hardware(rec)
    model, wl = record_model(rec), record_workload(rec)
    fields = record_plan_fields(rec)
    recomputes = (fields["recompute"],) if "recompute" in fields else AUTO_RECOMPUTE
    micro = (fields["micro_batch"],) if "micro_batch" in fields else AUTO_MICRO_BATCHES
    source = rec.origin or rec.id
    fallback, first_error = None, None
    for rc in recomputes:
        best = None
        for mb in micro:
            try:
                res = simulate(model, hw, make_plan({**fields, "recompute": rc, "micro_batch": mb}, source), wl,
                               rec.devices)
            except ConfigError as e:  # e.g. global batch not divisible by this micro-batch
                first_error = first_error or e
                continue
            fallback = fallback or res
            if res.fits_in_memory and (best is None or res.step_time_s < best.step_time_s):
                best = res
        if best is not None:
            return best
    if fallback is None:
        raise first_error or ValueError(f"{rec.id}: no valid micro-batch in {micro}")
    return fallback
