"""Per-row analysis of ``npusim validate``: the metric the row gives, MFU, memory fit and the gap.

:func:`analyse_runs` runs :func:`npusim.validate.compare.validate_runs` with a predictor that keeps
each simulated Result, then adds to every row with a prediction:

- ``step_time_s``: ``{measured, predicted}``; a measured tokens/s or MFU converted to a step time
  (``npusim.validate.metrics``); training rows only.
- ``mfu``: ``{convention, measured, predicted}`` in the row's ``flop_convention`` (npusim's count when
  the row names none it can count); training rows only.
- ``memory_GB``: ``{peak, capacity}`` of the busiest device. A row whose prediction does not fit gets
  status ``does_not_fit`` with reason ``"N GB of M GB"`` instead of ``ok``: the run did fit, so the
  plan or npusim's memory model differs from the run.
- ``breakdown_s`` and ``gap``: the named parts of the predicted step and, for each of the largest,
  how much it alone would have to change to explain the difference to the measured step.

The summary gains ``does_not_fit`` (its rows are counted in n, MAPE and tau with the ok rows).
"""
from __future__ import annotations

from typing import Any, Optional

from npusim.validate.compare import validate_runs

PART_LABELS = {
    "compute": "compute", "recompute": "recompute", "tp_comm": "exposed TP communication",
    "cp_comm": "exposed CP communication", "ep_comm": "exposed EP all-to-all", "pp_comm": "exposed PP send/receive",
    "dp_comm": "exposed DP gradient/parameter communication", "bubble": "pipeline bubble",
    "imbalance": "MoE load imbalance", "optimizer": "optimizer step", "other": "other",
}
"""How the named parts of a step (``Result.breakdown_s``) are written in explanations."""
WITHIN_PCT = 2.0
"""A measured step within this many percent of the prediction needs no explanation."""
TOP_PARTS = 4
"""Parts listed per gap, largest predicted first."""
MIN_SHARE_OF_GAP = 0.1
"""Parts smaller than this fraction of the gap are not listed (the largest part always is)."""


class ResultPredictor:
    """``predict(rec)`` for ``validate_runs`` (the value of the row's metric) that keeps each Result."""

    def __init__(self):
        """Start with no kept Results."""
        self.results: dict[str, Any] = {}

    def __call__(self, rec) -> float:
        """Simulate the row, keep its Result, return the predicted value of its metric."""
        from npusim.validate.predict import predict_result

        value, res = predict_result(rec)
        self.results[rec.id] = res
        return value


def _s(x: float) -> str:
    """Seconds for prose: 3 significant digits."""
    return f"{x:.3g} s"


def explain_gap(measured_s: float, predicted_s: float, parts: dict[str, float], top: int = TOP_PARTS) -> dict:
    """What would have to change in the predicted step to give the measured one.

    Returns ``{measured_s, predicted_s, gap_s, text, parts: [{part, label, predicted_s, change_pct, text}]}``
    with ``gap_s = measured - predicted``; ``parts`` are up to ``top`` of the largest predicted parts (those
    of at least MIN_SHARE_OF_GAP of the gap), each with the change (in % of itself) that would alone explain
    the gap."""
    gap = measured_s - predicted_s
    out: dict[str, Any] = {"measured_s": measured_s, "predicted_s": predicted_s, "gap_s": gap, "parts": []}
    if abs(gap) <= WITHIN_PCT / 100 * measured_s:
        out["text"] = (f"the measured step ({_s(measured_s)}) is within {WITHIN_PCT:g} % of the prediction "
                       f"({_s(predicted_s)}); no part has to change")
        return out
    longer = gap > 0
    out["text"] = (f"the measured step is {_s(abs(gap))} {'longer' if longer else 'shorter'} than predicted "
                   f"({_s(measured_s)} measured, {_s(predicted_s)} predicted)")
    ranked = sorted(((v, k) for k, v in parts.items() if v > 1e-9), reverse=True)
    ranked = [p for i, p in enumerate(ranked) if i == 0 or p[0] >= MIN_SHARE_OF_GAP * abs(gap)][:top]
    for v, k in ranked:
        label = PART_LABELS.get(k, k)
        if longer:
            text = f"{label} is {_s(v)} of the prediction; alone it would have to take {_s(v + gap)} ({100 * gap / v:+.0f} %)"
        elif v >= -gap:
            text = f"{label} is {_s(v)} of the prediction; alone it would have to shrink by {100 * -gap / v:.0f} %"
        else:
            text = (f"{label} is {_s(v)} of the prediction; even without it the prediction stays "
                    f"{_s(-gap - v)} longer than measured")
        out["parts"].append({"part": k, "label": label, "predicted_s": v, "change_pct": round(100 * gap / v, 1),
                             "text": text})
    return out


def _fit_reason(res) -> str:
    return f"{res.peak_memory_GB:.1f} GB of {res.hbm_capacity_GB:.1f} GB"


def enrich_row(row: dict, rec, res) -> None:
    """Add step time, MFU, memory, breakdown and gap to one row with a prediction; mark does_not_fit."""
    from npusim.validate.metrics import mfu_pair, scale_for

    row["memory_GB"] = {"peak": res.peak_memory_GB, "capacity": res.hbm_capacity_GB}
    row["breakdown_s"] = dict(res.breakdown_s)
    if rec.workload == "train":
        measured_step = scale_for(rec, res).step(row["metric"], row["measured"])
        row["step_time_s"] = {"measured": measured_step, "predicted": res.step_time_s}
        row["mfu"] = mfu_pair(rec, res, measured_step)
        row["gap"] = explain_gap(measured_step, res.step_time_s, res.breakdown_s)
    if not res.fits_in_memory:
        row["status"], row["reason"] = "does_not_fit", _fit_reason(res)


def analyse_runs(records) -> tuple[dict, dict[str, Any]]:
    """(``validate_runs`` output with the per-row additions above, {id: simulated Result})."""
    records = list(records)
    by_id = {r.id: r for r in records}
    predict = ResultPredictor()
    result = validate_runs(records, predict)
    for row in result["rows"]:
        rec = by_id[row["id"]]
        row.update(workload=rec.workload, hardware=rec.hardware, model=rec.model or "(inline shape)",
                   step_time_s=None, mfu=None, memory_GB=None, breakdown_s=None, gap=None)
        res = predict.results.get(row["id"])
        if row["status"] != "ok" or res is None:
            continue
        try:
            enrich_row(row, rec, res)
        except Exception as exc:  # noqa: BLE001 - an analysis problem must not hide the comparison
            row["reason"] = f"analysis incomplete: {' '.join(str(exc).split()) or type(exc).__name__}"
    result["summary"]["does_not_fit"] = sum(1 for r in result["rows"] if r["status"] == "does_not_fit")
    return result, predict.results


def predicted_rows(result: dict) -> list[dict]:
    """The rows with a prediction (status ok or does_not_fit)."""
    return [r for r in result["rows"] if r["status"] in ("ok", "does_not_fit")]


def time_view(result: dict) -> dict:
    """``result`` for the measured-vs-predicted plot: every row with a prediction, training rows as step
    times (whatever they measured), serving rows as TTFT / TPOT."""
    rows = []
    for r in predicted_rows(result):
        st: Optional[dict] = r.get("step_time_s")
        if st:
            rows.append({"id": r["id"], "metric": "step_time_s", "measured": st["measured"],
                         "predicted": st["predicted"], "status": "ok"})
        elif r["metric"] in ("step_time_s", "ttft_s", "tpot_s"):
            rows.append({"id": r["id"], "metric": r["metric"], "measured": r["measured"], "predicted": r["predicted"],
                         "status": "ok"})
    return {"rows": rows, "summary": result["summary"]}
