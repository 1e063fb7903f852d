"""Shared setup of the serving tests: the Pangu Pro MoE plan on 800I A2 and one-step runs."""
from npusim.config.hardware import load_profile
from npusim.config.model import load_model
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import InferenceWorkload
from npusim.engine.serve import simulate_serving

PRO = "tp=4,ep=4,etp=1,shared_tp=4,sp=1,moe_dispatch=allgather,precision=int8"
"""Pangu Pro MoE's serving plan on 4 Atlas 800I A2 devices (the P00x rows)."""


def run(plan=PRO, model="pangu-pro-moe-72b", hw="atlas-800i-a2", devices=4, **wl):
    """One decode step (or the workload ``wl`` overrides) of ``model`` on ``devices`` of ``hw``."""
    wl = {"kind": "decode", "batch": 64, "input_len": 2048, **wl}
    return simulate_serving(load_model(model), load_profile(hw), make_plan(parse_plan(plan)),
                            InferenceWorkload(**wl), devices)
