"""Typed core (issue 13): mypy passes on ``npusim/config``, ``npusim/cost`` and ``npusim/engine``
(settings in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_config_cost_engine(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extras: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
