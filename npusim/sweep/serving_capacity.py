"""Serving-capacity points of a sweep (``workload: {kind: serve, ...}``): the fewest cards of one
instance layout that serve a request rate within p99 TTFT and TPOT objectives.

A point is a hardware profile, an instance size (``devices``) and a serving plan, as for a decode
sweep. Its evaluation is ``npusim.serving.capacity.search_layouts`` over that one instance layout:
the fewest collocated instances meeting the objectives and (``disaggregated: true``) the cheapest
prefill + decode pools of that layout, each check one request-level run on the same seeded Poisson
arrivals. The cheaper of the two is the point's answer; ``objective.metric`` ranks the answers:
``cards`` (fewest), ``cost`` (price x device-hours per million output tokens at the rate) or
``tokens_per_s_per_card`` (output tokens per second per card). The full tier re-sizes the leaders
on an arrival window ``full_duration_s`` long (default four times ``duration_s``), so their p99s
rest on about four times as many requests.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, ConfigDict, Field, PositiveFloat

from npusim.config.policy import MAX_BATCH, StrictModel
from npusim.sweep.spec import SeqLen, listify

SERVE_METRICS = ("cards", "cost", "tokens_per_s_per_card")
"""Objective metrics that rank serving-capacity points (cards and cost minimised)."""
FULL_WINDOW_FACTOR = 4.0
"""The full tier's arrival window over the fast tier's when ``full_duration_s`` is not given."""
CAPACITY_COLS = ("cards", "chips", "layout", "instances", "prefill_instances", "decode_instances",
                 "slo_attainment", "cost_per_hour", "runs")
"""Metric columns a serving-capacity row adds to those of a decode sweep."""


def _max_batch(v: Any) -> Any:
    """One per-instance sequence cap: 'auto' (what the KV cache holds) or a positive integer."""
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_BATCH):
        return v
    raise ValueError(f"expected 'auto' or a positive integer (at most {MAX_BATCH:,})")


class ServeLoadSpec(StrictModel):
    """Traffic to serve and its service-level objective (``workload.kind: serve``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["serve"]
    qps: float = Field(gt=0, le=1e6)
    """Mean request rate (Poisson arrivals), requests per second."""
    input_len: Annotated[list[SeqLen], BeforeValidator(listify), Field(min_length=1)]
    """Prompt tokens per request (one value or a list: each is a workload of its own)."""
    output_len: SeqLen
    """Output tokens per request."""
    ttft_p99_s: PositiveFloat
    """p99 time-to-first-token objective, seconds."""
    tpot_p99_s: PositiveFloat
    """p99 time-per-output-token objective, seconds."""
    batch: Annotated[list[Annotated[Any, BeforeValidator(_max_batch)]], BeforeValidator(listify),
                     Field(min_length=1)] = ["auto"]
    """Most sequences decoding at once on one instance; 'auto' = as many as its KV cache holds."""
    duration_s: float = Field(60.0, gt=0, le=86_400)
    """Arrival window of each request-level run of the fast tier, seconds."""
    full_duration_s: Optional[float] = Field(None, gt=0, le=86_400)
    """Arrival window of the full tier's runs (default FULL_WINDOW_FACTOR x duration_s)."""
    seed: int = Field(0, ge=0, le=2**31 - 1)
    """Seed of the arrivals (every layout sees the same requests)."""
    disaggregated: bool = True
    """Also size prefill + decode pools of each layout (KV caches move over the scale-out links)."""
    chunk_tokens: int = Field(2048, gt=0, le=1 << 20)
    """Most prompt tokens one collocated step prefills (chunked prefill)."""


def capacity_metric_cols(prefix: str = "") -> list[str]:
    """Names of the capacity columns of one tier (beside the decode sweep's metric columns)."""
    return [prefix + k for k in CAPACITY_COLS]


def evaluate_capacity(ctx: dict, points: list[dict], full: bool = False) -> list[dict]:
    """Rows of serving-capacity points: validity, then the layout search of each (``full``: the
    full tier's ``full_*`` columns on the longer window)."""
    from npusim.sweep.evaluate import one_line
    from npusim.sweep.serving import point_rows, serving_input_row

    pre = "full_" if full else ""

    def evaluate(p: dict, prepared: tuple) -> dict:
        model, hw, plan = prepared
        status, reason, message, metrics = _size(ctx, p, model, hw, plan, full)
        head = {"id": p["id"]} if full else serving_input_row(ctx, p, model, plan)
        return {**head, pre + "status": status, pre + "reason": reason, pre + "message": message,
                **{pre + k: v for k, v in metrics.items()}}

    def failed(p: dict, prepared: tuple | None, e: Exception) -> dict:
        head = {"id": p["id"]} if full else serving_input_row(ctx, p, *(prepared[::2] if prepared else (None, None)))
        return {**head, pre + "status": "error", pre + "reason": type(e).__name__, pre + "message": one_line(e)}

    return point_rows(ctx, points, _prepare, evaluate, failed)


def _prepare(ctx: dict, p: dict):
    """(model, hardware, resolved plan) of a point; ConfigError for an invalid plan."""
    from npusim.config.plan import make_plan
    from npusim.engine.serve import resolve_serving_plan
    from npusim.sweep.evaluate import point_model, worker_state

    model = point_model(ctx, p["model"])
    hw = worker_state(ctx)["hw"][p["hardware"]]
    plan = resolve_serving_plan(make_plan(p["plan"], source="plan"), model, p["devices"], p["devices"], source="plan")
    return model, hw, plan


def _size(ctx: dict, p: dict, model, hw, plan, full: bool) -> tuple[str, Optional[str], str, dict]:
    """(status, reason, message, metric columns) of the point's layout search."""
    from npusim.config.errors import ConfigError
    from npusim.serving.capacity import Slo, search_layouts
    from npusim.serving.requests import poisson_requests
    from npusim.serving.spec import ServeSpec
    from npusim.serving.steps import StepModel

    wl = ctx["workload"]
    window = (wl.get("full_duration_s") or FULL_WINDOW_FACTOR * wl["duration_s"]) if full else wl["duration_s"]
    cap = 0 if p["batch"] == "auto" else p["batch"]
    if StepModel(model, hw, plan, p["devices"]).max_sequences(p["input_len"] + p["output_len"]) == 0:
        return "infeasible", "memory", "one request's KV cache does not fit beside the weights", {}
    slo = Slo(wl["ttft_p99_s"], wl["tpot_p99_s"])
    base = ServeSpec(prefill_chunk_tokens=wl["chunk_tokens"], max_batch=cap, ttft_slo_s=slo.ttft_p99_s,
                     tpot_slo_s=slo.tpot_p99_s)
    requests = poisson_requests(wl["qps"], window, p["input_len"], p["output_len"], wl["seed"])
    try:
        found = search_layouts(model, hw, requests, window, slo, [(p["devices"], plan)], wl["disaggregated"], base)
    except ConfigError as e:
        return "infeasible", "slo", e.problem, {}
    return "ok", None, "", _metrics(ctx, p, found, plan)


def _metrics(ctx: dict, p: dict, found: dict, plan) -> dict[str, Any]:
    """Metric columns of a layout search's answer, scored by the objective."""
    from npusim.sweep.serving import per_hardware

    b, lay = found["best"], found["best"]["layout"]
    obj = ctx["objective"]
    chips, cards = lay["chips"], b["cards"]
    tps = b["output_tokens_per_s"]
    price = per_hardware(obj["price_per_device_hour"], p["hardware"], 1.0)
    if lay["prefill_instances"]:
        text = (f"{lay['prefill_instances']} prefill x {lay['prefill_devices_per_instance']} + "
                f"{lay['decode_instances']} decode x {lay['devices_per_instance']} devices")
    else:
        text = f"{lay['instances']} x {lay['devices_per_instance']} devices"
    vals = {"batch": p["batch"] if p["batch"] != "auto" else None, "kv_dtype": plan.kv_precision, "bound": "slo",
            "evals": found["step_model_calls"], "step_time_s": b["tpot_s"]["p50"], "tpot_s": b["tpot_s"]["p99"],
            "ttft_s": b["ttft_s"]["p99"], "tokens_per_s": tps, "tokens_per_s_per_device": tps / chips,
            "tokens_per_s_per_card": tps / cards, "cost_per_Mtok": price * chips / 3600.0 / tps * 1e6 if tps else None,
            "cards": cards, "chips": chips, "layout": text, "instances": lay["instances"],
            "prefill_instances": lay["prefill_instances"], "decode_instances": lay["decode_instances"],
            "slo_attainment": b["slo_attainment"], "cost_per_hour": price * chips, "runs": len(found["tried"])}
    metric = obj["metric"]
    vals["score"] = -cards if metric == "cards" else -vals["cost_per_Mtok"] if metric == "cost" else vals[metric]
    return vals

