"""Request-level serving simulation: requests arrive, schedulers batch them on instances, and step
times come from the serving step model (``npusim.engine.serve``); see docs/serving.md."""
