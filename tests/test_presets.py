"""Preset names resolve to presets (npusim.config.loader.is_path / find_preset): an argument is a file
path only when it holds a path separator or ends in .yaml/.yml/.json, so a file or folder in the
current directory named like a preset (``./atlas-800t-a2``) never replaces the preset."""
from __future__ import annotations

import shutil

import pytest
import yaml

from cli_helpers import cli
from npusim.config.errors import ConfigError
from npusim.config.hardware import PROFILE_DIR_ENV, load_profile, profile_path
from npusim.config.loader import is_path
from npusim.config.model import load_model, preset_dirs


@pytest.fixture(autouse=True)
def _in_a_folder_of_decoys(tmp_path, monkeypatch):
    """Run in a folder holding decoys named like presets: a folder, an empty file and a junk file."""
    monkeypatch.delenv(PROFILE_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "atlas-800t-a2").mkdir()
    (tmp_path / "nvidia-h100-sxm-80g").write_text("not: [a profile\n")
    (tmp_path / "llama2-7b").write_text("")
    (tmp_path / "qwen3-30b-a3b").mkdir()
    return tmp_path


@pytest.mark.parametrize("text,path", [
    ("atlas-800t-a2", False), ("llama2-7b", False), ("my.profile", False),
    ("./atlas-800t-a2", True), ("sub/atlas-800t-a2", True), ("/abs/name", True),
    ("x.yaml", True), ("x.yml", True), ("config.json", True), ("CONFIG.JSON", True),
])
def test_an_argument_is_a_path_only_with_a_separator_or_a_config_suffix(text, path):
    assert is_path(text) is path


@pytest.mark.parametrize("name", ["atlas-800t-a2", "nvidia-h100-sxm-80g"])
def test_a_decoy_in_the_current_folder_does_not_replace_a_hardware_preset(name):
    assert profile_path(name).name == f"{name}.yaml" and profile_path(name).parent.name == "hw_profiles"
    assert load_profile(name).name == name


@pytest.mark.parametrize("name", ["llama2-7b", "qwen3-30b-a3b"])
def test_a_decoy_in_the_current_folder_does_not_replace_a_model_preset(name):
    assert load_model(name).name == name


def test_the_cli_uses_the_presets_next_to_decoys(capsys):
    rc, out, err = cli(["hw", "show", "atlas-800t-a2"], capsys)
    assert rc == 0 and yaml.safe_load(out)["name"] == "atlas-800t-a2", err
    rc, out, err = cli(["model", "show", "llama2-7b"], capsys)
    assert rc == 0 and '"name": "llama2-7b"' in out, err


def test_a_path_with_a_separator_names_the_file(tmp_path, capsys):
    with pytest.raises(ConfigError, match="is a folder"):
        load_profile("./atlas-800t-a2")
    rc, _, err = cli(["hw", "show", "./nvidia-h100-sxm-80g"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot parse" in err
    mine = tmp_path / "profiles"
    mine.mkdir()
    shutil.copy(profile_path("atlas-800t-a2"), mine / "custom")
    assert load_profile("profiles/custom").name == "atlas-800t-a2"  # a path without a suffix is fine with a '/'


def test_a_config_suffix_names_a_file_in_the_current_folder(tmp_path):
    shutil.copy(preset_dirs()[0] / "llama2-7b.yaml", tmp_path / "mine.yaml")
    assert load_model("mine.yaml").name == "llama2-7b"
    with pytest.raises(ConfigError, match="file not found"):
        load_model("missing.yaml")


def test_an_unknown_name_is_an_unknown_preset_even_when_a_file_has_that_name(tmp_path, capsys):
    (tmp_path / "my-cluster").write_text(profile_path("atlas-800t-a2").read_text())
    with pytest.raises(ConfigError, match="unknown hardware preset"):
        load_profile("my-cluster")
    rc, _, err = cli(["hw", "show", "atlas-800t"], capsys)
    assert rc == 2 and "unknown hardware preset" in err and "did you mean" in err


def test_sweep_specs_resolve_preset_names_to_presets(tmp_path):
    from npusim.sweep.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"hardware": ["atlas-800t-a2"], "devices": [16],
                                    "workload": {"seq_len": 2048, "global_batch": 32},
                                    "model": {"base": "llama2-7b"}, "plan": "auto"}))
    _, resolved = load_spec(spec)
    assert resolved["hardware"] == ["atlas-800t-a2"] and resolved["model"]["base"] == "llama2-7b"
