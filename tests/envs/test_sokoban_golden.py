"""Sokoban's rooms, observations, rewards and plans are pinned: a digest of many seeded episodes.

The main training job's figures depend on Sokoban behaving bit for bit the same (the same rooms for the same
seeds, the same observations and rewards). The digest below was recorded from the single-module
``envs/sokoban.py`` before it became the ``hiergym.envs.sokoban`` package; a change that moves it is a change of
the environment (bump the version) or a bug.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from hiergym.envs.sokoban import SokobanEnv, count_pushes, generate_level, parse_board, solve

GOLDEN = "15a78d622bbc2960a5ffc9c28ed2fb0d1dcafe04ffa3411772106591a0643480"
WORDS = ["up", "down", "left", "right", "u", "d", "l", "r", "push up", "move left", "1", "5", "8", "0", "junk", " UP "]
BOARD = """
#######
#.@ # #
#$* $ #
#   $ #
# ..  #
#  *  #
#######
"""


def _plain(value):
    if isinstance(value, np.integer | np.bool_ | np.floating):
        return value.item()
    raise TypeError(type(value))


def sokoban_digest(episodes_per_config: int = 6) -> str:
    digest = hashlib.sha256()

    def feed(value) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=_plain).encode())

    configs = [((6, 6), 1, "pushes", False), ((7, 7), 2, "pushes", True), ((10, 10), 3, "pushes", False),
               ((7, 7), 2, "moves", False)]
    for dim, boxes, metric, dead in configs:
        env = SokobanEnv(dim_room=dim, num_boxes=boxes, expert_metric=metric, end_on_dead_end=dead,
                         render_mode="rgb_array")
        for seed in range(episodes_per_config):
            for split in ("train", "eval_in", "eval_out"):
                obs, info = env.reset(seed=seed, options={"split": split})
                feed([obs, info, hashlib.sha256(env.render().tobytes()).hexdigest(), env.expert_plan()])
                rng = np.random.default_rng(seed)
                for _ in range(30):
                    obs, reward, terminated, truncated, info = env.step(WORDS[int(rng.integers(len(WORDS)))])
                    feed([obs, reward, terminated, truncated, info])
                    if terminated or truncated:
                        break
                feed([env.expert_plan(), env.is_dead_end])
        feed(env.reset(options={"split": "eval_in", "task_id": 5}))
    for seed in range(10):
        level = generate_level(np.random.default_rng(seed), (8, 8), 2, metric="moves")
        feed([level.player, level.boxes, level.plan, level.room.id,
              solve(level.room, level.player, level.boxes, "pushes")])
    level = parse_board(BOARD)
    for metric in ("pushes", "moves"):
        plan = solve(level.room, level.player, level.boxes, metric)
        feed([metric, plan, count_pushes(level.room, level.player, level.boxes, plan)])
    env = SokobanEnv.from_board(BOARD, render_mode="ansi")
    obs, info = env.reset(seed=0)
    feed([obs, info, env.render()])
    for action in env.expert_plan():
        feed(env.step(action))
    return digest.hexdigest()


def test_sokoban_behaviour_is_pinned() -> None:
    assert sokoban_digest() == GOLDEN
