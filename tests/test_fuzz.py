"""Fuzzing the boundaries: every malformed profile, model, plan, run record or CLI flag must give a
one-line ConfigError (exit code 2 from the CLI), never a traceback or another exception type."""
import copy
import io
import json
import random
from contextlib import redirect_stderr, redirect_stdout

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npusim.cli import main
from npusim.config.errors import ConfigError
from npusim.config.hardware import load_profile, profile_path
from npusim.config.model import load_model, preset_dirs
from npusim.config.plan import make_plan, parse_plan, resolve_plan
from npusim.validate.runs import published_path, read_runs

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                 st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(d, prefix=()):
    """Every key path of a nested mapping."""
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


def _mutate(data: dict, seed: int, junk, drop: bool) -> dict:
    """Replace (or delete) one randomly chosen entry of a nested mapping."""
    data = copy.deepcopy(data)
    paths = list(_paths(data))
    path = random.Random(seed).choice(paths)
    node = data
    for k in path[:-1]:
        node = node[k]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = junk
    return data


def _one_line(err: Exception) -> None:
    assert isinstance(err, ConfigError), repr(err)
    assert "\n" not in str(err) and str(err)


def _load_mutated(loader, base: dict, tmp_path, seed, junk, drop):
    f = tmp_path / f"mut_{seed}.yaml"
    f.write_text(yaml.safe_dump(_mutate(base, seed, junk, drop)))
    try:
        loader(str(f))
    except Exception as e:  # noqa: BLE001 - the point is to check the type
        _one_line(e)


@SETTINGS
@given(seed=st.integers(0, 10**6), junk=JUNK, drop=st.booleans())
def test_mutated_profiles(tmp_path, seed, junk, drop):
    base = yaml.safe_load(profile_path("atlas-800t-a2").read_text())
    _load_mutated(load_profile, base, tmp_path, seed, junk, drop)


@SETTINGS
@given(seed=st.integers(0, 10**6), junk=JUNK, drop=st.booleans())
def test_mutated_models(tmp_path, seed, junk, drop):
    base = yaml.safe_load((preset_dirs()[0] / "deepseek-v3.yaml").read_text())
    _load_mutated(load_model, base, tmp_path, seed, junk, drop)


@SETTINGS
@given(blob=st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".json", ".csv"]))
def test_random_bytes_files(tmp_path, blob, suffix):
    f = tmp_path / f"blob{suffix}"
    f.write_bytes(blob)
    loaders = [read_runs] if suffix == ".csv" else [load_profile, load_model]
    for loader in loaders:
        try:
            loader(str(f))
        except Exception as e:  # noqa: BLE001
            _one_line(e)


KEYS = ["tp", "pp", "vpp", "cp", "dp", "ep", "etp", "zero", "mb", "sp", "recompute", "schedule", "a2a",
        "routing", "capacity_factor", "precision", "ep_overlap", "bogus"]
VALUES = st.one_of(st.integers(-3, 70).map(str), st.sampled_from(["", "x", "1.5", "true", "full", "hierarchical",
                                                                   "zipf", "fp8", "interleaved", "nan", "-0"]))


@SETTINGS
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6),
       devices=st.integers(-2, 5000), gb=st.integers(-2, 4096), seq=st.integers(-2, 70000))
def test_random_plans(pairs, devices, gb, seq):
    model = load_model("qwen3-30b-a3b")
    text = ",".join(f"{k}={v}" for k, v in pairs)
    try:
        resolve_plan(make_plan(parse_plan(text)), model, devices, gb, seq)
    except Exception as e:  # noqa: BLE001
        _one_line(e)


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


FLAGS = {
    "--model": st.sampled_from(["llama2-7b", "qwen3-30b-a3b", "llama2-7", "nope", ""]),
    "--hardware": st.sampled_from(["nvidia-a100-sxm-80g", "atlas-800t-a2", "atlas-800t", "x.yaml"]),
    "--devices": st.sampled_from(["8", "16", "0", "-1", "x", "7", "1000001"]),
    "--plan": st.sampled_from(["tp=8", "tp=2,pp=2", "tp=3", "ep=8", "zz=1", "tp=x", "tp=8,ep=2"]),
    "--seq-len": st.sampled_from(["2048", "0", "abc", "4096"]),
    "--global-batch": st.sampled_from(["8", "16", "0", "7", "1e3"]),
    "--workload": st.sampled_from(["train", "decode", "prefill", "serve"]),
    "--batch": st.sampled_from(["8", "0", "100000", "x"]),
}


@SETTINGS
@given(picked=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.just(None), max_size=5), data=st.data())
def test_random_cli_simulate(picked, data):
    argv = ["simulate", "--json"]
    for flag in sorted(picked):
        argv += [flag, data.draw(FLAGS[flag])]
    rc, out, err = _cli(argv)
    assert "Traceback" not in err
    if rc == 0:
        json.loads(out)
    else:
        assert rc == 2 and len(err.strip().splitlines()) == 1, (argv, err)


@SETTINGS
@given(seed=st.integers(0, 10**6), junk=st.one_of(st.integers(-5, 10**9).map(str), st.text(max_size=8)))
def test_mutated_run_records(tmp_path, seed, junk):
    import csv

    rows = list(csv.reader(published_path().read_text(encoding="utf-8").splitlines(keepends=True)))
    rng = random.Random(seed)
    r, c = rng.randrange(1, len(rows)), rng.randrange(len(rows[0]))
    rows[r][c] = junk
    f = tmp_path / "runs.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    try:
        read_runs(f)
    except Exception as e:  # noqa: BLE001
        _one_line(e)
