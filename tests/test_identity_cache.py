"""The identity cache: values live as long as their object, and a reused id never hits."""
import gc

from npusim.config.hardware import load_profile
from npusim.identity_cache import IdentityCache


def test_value_is_forgotten_with_its_object():
    cache = IdentityCache()
    hw = load_profile("nvidia-h100-sxm-80g")
    assert cache.put(hw, 42) == 42 and cache.get(hw) == 42 and len(cache) == 1
    other = load_profile("nvidia-h100-sxm-80g")  # equal, but another object
    assert cache.get(other) is None
    del hw
    gc.collect()
    assert len(cache) == 0
