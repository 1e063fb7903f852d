"""Sweeps and capacity planning: spec, search space, fast and full tiers, executors, ranking."""
