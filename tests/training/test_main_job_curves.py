"""The main job (`bash scripts/main.sh`: the `sokoban` preset) draws its learning curves: matplotlib is installed
with it, and a shortened run of that preset writes OUT/curves.png."""

from __future__ import annotations

import pytest
import torch

from hiergym.training.config import load_config
from hiergym.training.trainer import Trainer

torch.set_num_threads(1)


def test_the_main_preset_writes_its_curves(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="the main job installs hiergym[plot]; this checkout lacks it")
    config = load_config("sokoban", overrides={
        "out_dir": str(tmp_path / "run"), "iterations": 2, "sft_episodes": 4, "sft_steps": 4, "num_tasks": 2,
        "group_size": 2, "eval_episodes": 4, "eval_every": 1, "progress": False})
    Trainer(config).run()
    png = tmp_path / "run" / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
