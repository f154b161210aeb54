"""The public surface: registration, packaging and the CLI's list/play commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import hiergym
from hiergym.cli import build_parser, main, parse_args
from hiergym.registration import UnknownEnvironmentError, parse_env_args, resolve_env_id

ROOT = Path(__file__).resolve().parents[2]


def test_make_after_import() -> None:
    env = gym.make("hiergym/Sokoban-v0")
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and "state_key" in info
    assert env.spec.max_episode_steps is not None


def test_make_in_fresh_interpreter_without_import() -> None:
    code = (
        "import gymnasium as gym, sys\n"
        "assert 'hiergym' not in sys.modules\n"
        "env = gym.make('hiergym:hiergym/Sokoban-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert 'torch' not in sys.modules, 'importing hiergym must not load torch'\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "SokobanEnv"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, mapping = set(config["packages"]), config["package-dir"]
    for name, folder in mapping.items():
        assert name in listed and (ROOT / folder / "__init__.py").exists(), name
    roots = {folder: name for name, folder in mapping.items() if name.count(".") == 1}
    for folder, package in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            dotted = ".".join([package, *relative.parts]) if relative.parts else package
            assert dotted in listed, f"{init.parent} is not in pyproject's packages list"
            assert dotted in mapping, f"{dotted} has no package-dir entry"


def test_no_generic_top_level_modules_installed() -> None:
    import importlib.util

    for generic in ("envs", "agents", "training", "benchmarks"):
        spec = importlib.util.find_spec(generic)
        # pytest's rootdir may be on sys.path in a source checkout; never from site-packages.
        assert spec is None or "site-packages" not in (spec.origin or ""), generic


def test_resolve_env_id_forgives_case_and_prefix() -> None:
    assert resolve_env_id("sokoban-v0") == "hiergym/Sokoban-v0"
    assert resolve_env_id("HIERGYM/SOKOBAN-V0") == "hiergym/Sokoban-v0"
    with pytest.raises(UnknownEnvironmentError, match="Sokoban-v0"):
        resolve_env_id("hiergym/Sokobn-v0")


def test_parse_env_args() -> None:
    assert parse_env_args(["num_boxes=2", "dim_room=[7, 7]", "name=abc"]) == {
        "num_boxes": 2, "dim_room": [7, 7], "name": "abc"}
    with pytest.raises(ValueError, match="key=value"):
        parse_env_args(["num_boxes"])


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in hiergym.env_ids():
        assert env_id in out
    assert "max_episode_steps" in out


def test_cli_unknown_id_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["play", "hiergym/Sokobam-v0"]) == 2
    err = capsys.readouterr().err
    assert "unknown environment" in err and "hiergym/Sokoban-v0" in err


def test_cli_bad_env_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["play", "hiergym/Sokoban-v0", "--env-arg", "no_such_arg=3", "--expert"]) == 2
    assert "no_such_arg" in capsys.readouterr().err
    assert main(["play", "hiergym/Sokoban-v0", "--env-arg", "oops"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_cli_bad_split(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["play", "hiergym/Sokoban-v0", "--split", "nope", "--expert"]) == 2
    assert "eval_out" in capsys.readouterr().err


def test_cli_play_expert(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["play", "hiergym/Sokoban-v0", "--seed", "3", "--expert"]) == 0
    out = capsys.readouterr().out
    assert "episode over" in out and ": won" in out


def test_cli_play_scripted_session() -> None:
    """A person's session: a bad command, a hint, then quit — through the real console script."""
    script = "fly away\nhint\nquit\n"
    out = subprocess.run([sys.executable, "-m", "hiergym", "play", "Sokoban-v0", "--seed", "1"],
                         input=script, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[invalid action]" in out.stdout
    assert "expert: " in out.stdout
    assert "episode over after 1 steps" in out.stdout


def test_cli_overrides_may_follow_options() -> None:
    parser = build_parser()
    args = parse_args(parser, ["train", "iterations=3", "--out", "runs/x", "seed=1", "--model", "tiny", "lr_x=2"])
    assert args.overrides == ["iterations=3", "seed=1", "lr_x=2"] and args.out == "runs/x"
    with pytest.raises(SystemExit):  # commands without overrides take none
        parse_args(parser, ["list", "iterations=3"])
