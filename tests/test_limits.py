"""Limits: 1 to 1,000,000 devices, 1M to 10T parameters, sequences of 1 to 1M tokens either simulate
with finite numbers or are refused with a one-line ConfigError — never hang, never overflow."""
import math

import pytest

from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile
from npusim.config.model import ModelConfig
from npusim.config.plan import make_plan, parse_plan
from npusim.config.workload import TrainWorkload
from npusim.simulate import simulate

TINY = ModelConfig(name="tiny-1m", layers=2, hidden=128, ffn_hidden=512, heads=2, vocab=1000)
HUGE = ModelConfig(name="huge-10t", layers=256, hidden=65536, ffn_hidden=262144, heads=512, vocab=256000)


def test_model_sizes_span_1m_to_10t():
    assert 0.5e6 < TINY.total_params() < 2e6
    assert 10e12 < HUGE.total_params() < 20e12


def check(model, plan, devices, seq, gb, hw="nvidia-h100-sxm-80g"):
    try:
        r = simulate(model, load_profile(hw), make_plan(parse_plan(plan)), TrainWorkload(seq_len=seq, global_batch=gb),
                     devices)
    except ConfigError as e:
        assert "\n" not in str(e)
        return None
    for v in (r.step_time_s, r.mfu, r.hfu, r.peak_memory_GB, *r.breakdown_s.values()):
        assert math.isfinite(v) and v >= 0
    assert r.mfu <= 1.0
    return r


@pytest.mark.parametrize("model,plan,devices,seq,gb", [
    (TINY, "tp=1", 1, 1, 1),
    (TINY, "tp=1", 1, 1_000_000, 1),
    (TINY, "tp=2", 1_000_000, 128, 500_000),
    (HUGE, "tp=8,pp=64,vpp=4", 999_424, 4096, 1952 * 64),
    (HUGE, "tp=8,pp=64,vpp=4,cp=8", 999_424, 1_000_000, 244 * 64),
    (HUGE, "tp=1", 1, 1, 1),
])
def test_extremes_simulate(model, plan, devices, seq, gb):
    assert check(model, plan, devices, seq, gb) is not None


@pytest.mark.parametrize("devices", [0, 1_000_001])
def test_device_count_out_of_range_is_refused(devices):
    with pytest.raises(ConfigError) as e:
        simulate(TINY, load_profile("nvidia-h100-sxm-80g"), make_plan({}), TrainWorkload(seq_len=8, global_batch=1), devices)
    assert "devices" in str(e.value)


def test_too_many_pipeline_units_is_refused_not_hung():
    with pytest.raises(ConfigError) as e:
        simulate(TINY, load_profile("nvidia-h100-sxm-80g"), make_plan({"pp": 2}),
                 TrainWorkload(seq_len=8, global_batch=2_000_000), 2)
    assert "pipeline units" in str(e.value)
