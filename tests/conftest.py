"""Shared test setup.

This folder is on sys.path (pytest's prepend import mode), so test modules in subfolders can import
helpers such as ``cli_helpers``.

Hypothesis runs under a named profile chosen by ``HYPOTHESIS_PROFILE``:

- ``ci`` (the default, and what ``.ci/run`` uses): derandomised, so every run draws the same examples
  and CI cannot flake on a draw; no example database, no deadline.
- ``random``: fresh random draws each run, with the local example database, for opt-in exploration
  (``HYPOTHESIS_PROFILE=random python -m pytest tests/test_fuzz.py``). A failure it finds is added to
  the test as an ``@example`` so the ``ci`` profile replays it for ever.
- ``seeded``: random draws from the seed in ``HYPOTHESIS_SEED``-style runs
  (``python -m pytest --hypothesis-seed=N`` with ``HYPOTHESIS_PROFILE=seeded``); used to check that
  the suite passes under many seeds.
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("random", derandomize=False, deadline=None, print_blob=True)
settings.register_profile("seeded", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
