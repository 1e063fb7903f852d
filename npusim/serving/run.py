"""One request-level serving run: the pure core behind ``npusim serve``."""
from __future__ import annotations

from npusim.serving.metrics import summarize
from npusim.serving.requests import Request
from npusim.serving.sim import run_requests
from npusim.serving.spec import ServeSpec
from npusim.serving.steps import StepModel


def simulate_requests(model, hw, plan, devices: int, requests: list[Request], spec: ServeSpec,
                      window_s: float, prefill_plan=None, prefill_devices: int | None = None,
                      steps: dict | None = None) -> dict:
    """Serve ``requests`` on instances of ``plan`` over ``devices`` devices each (the prefill pool
    of a disaggregated layout: ``prefill_plan`` on ``prefill_devices``, default the same); return
    the metrics of ``npusim.serving.metrics.summarize`` plus the layout, cards and step-model calls.
    ``steps`` keeps step models between runs of the same model and hardware, keyed by (plan, devices)."""
    steps = {} if steps is None else steps
    requests = [Request(r.id, r.arrival_s, r.input_len, r.output_len) for r in requests]  # runs never share state

    def step_model(p, d: int) -> StepModel:
        """The memoised step model of plan ``p`` on ``d`` devices."""
        if (p, d) not in steps:
            steps[(p, d)] = StepModel(model, hw, p, d)
        return steps[(p, d)]

    decode = step_model(plan, devices)
    prefill = None
    if spec.disaggregated:
        prefill = step_model(prefill_plan or plan, prefill_devices or devices)
    pools, tracker, end = run_requests(requests, spec, decode, window_s, prefill)
    chips = sum(i.steps.devices for i in pools)
    cards = chips / hw.node.chips_per_card
    busy = sum(i.busy_s for i in pools)
    out = summarize(requests, cards, window_s, tracker.output_tokens, tracker.input_tokens, end, busy,
                    end * len(pools), spec.ttft_slo_s, spec.tpot_slo_s)
    out["layout"] = {
        "instances": spec.instances, "prefill_instances": spec.prefill_instances,
        "decode_instances": spec.decode_instances, "devices_per_instance": devices,
        "prefill_devices_per_instance": (prefill_devices or devices) if spec.disaggregated else None,
        "chips": chips, "plan": decode.plan.model_dump(mode="json"),
        "prefill_plan": prefill.plan.model_dump(mode="json") if prefill else None,
    }
    out["step_model_calls"] = decode.evals + (prefill.evals if prefill else 0)
    return out
