"""Sweep spec validation: every defect is one ConfigError line naming the file, field, value and
what is allowed; the CLI exits with code 2 and no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import assert_spec_error, SMALL, merged, write_spec

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.sweep.spec import load_spec

BAD = [
    ("unknown top-level key", merged(SMALL, objectve={"metric": "mfu"}), "objectve", "unknown key"),
    ("missing workload", merged(SMALL, workload=None), "workload", "missing"),
    ("bad device count", merged(SMALL, devices=[16, 0]), "devices.1", "greater than 0"),
    ("unknown vary field", merged(SMALL, model={"base": "llama2-7b", "vary": {"layer": [24]}}), "model.vary.layer",
     "did you mean 'layers'"),
    ("bad vary value", merged(SMALL, model={"base": "llama2-7b", "vary": {"hidden_size": ["wide"]}}),
     "model.vary.hidden_size", "integer"),
    ("unknown base", merged(SMALL, model={"base": "llama9-1t"}), "model.base", "unknown model preset"),
    ("bad constraint", merged(SMALL, model={"base": "llama2-7b", "constraints": {"total_params_B": {"min": 9, "max": 1}}}),
     "model.constraints.total_params_B", "exceeds max"),
    ("unknown constraint", merged(SMALL, model={"base": "llama2-7b", "constraints": {"flops": {"max": 1}}}),
     "model.constraints.flops", "unknown key"),
    ("unknown hardware", merged(SMALL, hardware=["atlas-800t-a2", "atlas-9000"]), "hardware.1", "unknown hardware"),
    ("plan string", merged(SMALL, plan="fast"), "plan", "expected 'auto'"),
    ("unknown plan key", merged(SMALL, plan={"auto": True, "tpp": [2]}), "plan.tpp", "did you mean 'tp'"),
    ("bad plan value", merged(SMALL, plan={"recompute": ["some"]}), "plan.recompute", "none"),
    ("dp in plan", merged(SMALL, plan={"dp": [4]}), "plan.dp", "derived"),
    ("range on a choice", merged(SMALL, plan={"auto": True, "recompute": {"min": 1}}), "plan.recompute", "numeric axis"),
    ("range without auto", merged(SMALL, plan={"pp": {"max": 4}}), "plan.pp", "plan.auto: true"),
    ("bad metric", merged(SMALL, objective={"metric": "speed"}), "objective.metric", "mfu"),
    ("bad headroom", merged(SMALL, objective={"memory_headroom": 1.5}), "objective.memory_headroom", "less than 1"),
    ("price for unknown hardware", merged(SMALL, objective={"metric": "cost", "price_per_device_hour": {"h100": 2.0}}),
     "objective.price_per_device_hour.h100", "not in the sweep"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_spec_error_is_one_line(tmp_path, case):
    _, spec, field, needle = case
    assert_spec_error(tmp_path, spec, field, needle)


def test_yaml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nhardware: [atlas-800t-a2\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert "\n" not in str(err.value) and "<syntax>" in str(err.value)


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    path = write_spec(tmp_path, merged(SMALL, plan={"auto": True, "tpp": [2]}))
    rc = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "plan.tpp" in err


def test_resolved_spec_canonicalises_aliases(tmp_path):
    spec, resolved = load_spec(write_spec(tmp_path, merged(SMALL, plan="auto")))
    assert list(resolved["model"]["vary"]) == ["layers"]
    assert resolved["plan"] == {"auto": True}
    assert resolved["tiers"]["full_top"] == 12 and len(resolved["key"]) == 16
    assert spec.workload.seq_len == [2048]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_example_specs_load(path):
    spec, resolved = load_spec(path)
    assert spec.name == path.stem and resolved["key"]
