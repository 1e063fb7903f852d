"""Predict the measured metric of one run record with the simulator."""
from __future__ import annotations

from npusim.validate.runs import RunRecord

AUTO_MICRO_BATCHES = (1, 2, 4, 8)
"""Candidates tried when a row does not publish its micro-batch."""


def predict_record(rec: RunRecord) -> float:
    """Predicted value of the row's metric (train: step time in s); raises for unsupported rows."""
    return simulate_record(rec).step_time_s


def simulate_record(rec: RunRecord):
    """Simulate a training row; an unpublished micro-batch is the fastest candidate that fits."""
    from npusim.config.errors import ConfigError
    from npusim.config.hardware import load_profile
    from npusim.config.plan import make_plan
    from npusim.simulate import simulate
    from npusim.validate.runs import record_model, record_plan_fields, record_workload

    if rec.workload != "train":
        raise NotImplementedError(f"{rec.workload} rows need the inference workloads (not built yet)")
    hw, model, wl = load_profile(rec.hardware), record_model(rec), record_workload(rec)
    fields = record_plan_fields(rec)
    if fields.get("micro_batch") is not None:
        return simulate(model, hw, make_plan(fields), wl, rec.devices)
    best, first_error = None, None
    for mb in AUTO_MICRO_BATCHES:
        try:
            res = simulate(model, hw, make_plan({**fields, "micro_batch": mb}), wl, rec.devices)
        except ConfigError as e:  # e.g. global batch not divisible by this micro-batch
            first_error = first_error or e
            continue
        if res.fits_in_memory and (best is None or res.step_time_s < best.step_time_s):
            best = res
        if best is None and res is not None and not res.fits_in_memory and mb == AUTO_MICRO_BATCHES[0]:
            best = res  # nothing smaller exists: report the smallest even if it does not fit
    if best is None:
        raise first_error or ValueError(f"{rec.id}: no micro-batch in {AUTO_MICRO_BATCHES} is valid")
    return best
