"""hiergym/Sokoban-v0: generator, rules, rewards, dead ends, solver optimality, rendering, splits."""

from __future__ import annotations

import copy
import warnings
from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hiergym  # noqa: F401  (registers the environments)
from hiergym.envs.sokoban import (
    DIRECTIONS,
    SokobanEnv,
    count_pushes,
    is_eval_layout,
    parse_board,
)

SIZES = [((6, 6), 1, 150), ((7, 7), 2, 100), ((10, 10), 3, 60), ((12, 12), 4, 40)]
VALID_WORDS = {
    *DIRECTIONS,
    *(d[0] for d in DIRECTIONS),
    *(f"push {d}" for d in DIRECTIONS),
    *(f"move {d}" for d in DIRECTIONS),
    *"12345678",
}


def grid_of(obs: str) -> str:
    """The board lines of an observation (between the goal line and the legend)."""
    lines = obs.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Push every box"))
    return "\n".join(lines[start + 1 : -1])


def bfs_optimal_pushes(env: SokobanEnv) -> int | None:
    """Fewest pushes to solve from the env's current state, by breadth-first search over pushes."""
    room = env._room

    def region(player: int, boxes: int) -> frozenset[int]:
        seen, queue = {player}, deque([player])
        while queue:
            cell = queue.popleft()
            for delta in room.deltas:
                nxt = cell + delta
                if nxt not in seen and room.is_floor(nxt) and not boxes >> nxt & 1:
                    seen.add(nxt)
                    queue.append(nxt)
        return frozenset(seen)

    start_region = region(env._player, env._boxes)
    seen = {(env._boxes, start_region)}
    queue = deque([(env._boxes, start_region, 0)])
    while queue:
        boxes, reach, dist = queue.popleft()
        if boxes == room.targets:
            return dist
        for cell in reach:
            for delta in room.deltas:
                box, beyond = cell + delta, cell + 2 * delta
                if boxes >> box & 1 and room.is_floor(beyond) and not boxes >> beyond & 1:
                    new_boxes = boxes ^ (1 << box) ^ (1 << beyond)
                    key = (new_boxes, region(box, new_boxes))
                    if key not in seen:
                        seen.add(key)
                        queue.append((*key, dist + 1))
    return None


def bfs_optimal_moves(env: SokobanEnv) -> int | None:
    """Fewest moves to solve from the env's current state, by plain breadth-first search over single moves."""
    room = env._room
    start = (env._player, env._boxes)
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        (player, boxes), dist = queue.popleft()
        if boxes == room.targets:
            return dist
        for delta in room.deltas:
            ahead = player + delta
            if not room.is_floor(ahead):
                continue
            new_boxes = boxes
            if boxes >> ahead & 1:
                beyond = ahead + delta
                if not room.is_floor(beyond) or boxes >> beyond & 1:
                    continue
                new_boxes = boxes ^ (1 << ahead) ^ (1 << beyond)
            state = (ahead, new_boxes)
            if state not in seen:
                seen.add(state)
                queue.append((state, dist + 1))
    return None


# --------------------------------------------------------------------------------------------- generation
def test_same_seed_same_room_across_sizes() -> None:
    for dim, boxes, _ in SIZES:
        a, b = SokobanEnv(dim_room=dim, num_boxes=boxes), SokobanEnv(dim_room=dim, num_boxes=boxes)
        obs_a, info_a = a.reset(seed=5)
        obs_b, info_b = b.reset(seed=5)
        assert obs_a == obs_b and info_a == info_b
        rows = grid_of(obs_a).split("\n")
        assert (len(rows), len(rows[0])) == dim
        grid = grid_of(obs_a)
        assert grid.count("X") == boxes and grid.count("O") + grid.count("S") == boxes  # no box starts on target
        assert info_a["num_boxes"] == boxes and info_a["boxes_on_target"] == 0
    env = SokobanEnv()
    assert len({env.reset(seed=s)[0] for s in range(8)}) == 8


def test_gym_make_passes_arguments_and_rejects_bad_ones() -> None:
    env = gym.make("hiergym/Sokoban-v0", dim_room=(8, 9), num_boxes=2)
    obs, _ = env.reset(seed=0)
    assert [len(r) for r in grid_of(obs).split("\n")] == [9] * 8
    with pytest.raises(ValueError, match="dim_room"):
        SokobanEnv(dim_room=(3, 3))
    with pytest.raises(ValueError, match="boxes"):
        SokobanEnv(dim_room=(6, 6), num_boxes=5)
    with pytest.raises(ValueError, match="render_mode"):
        SokobanEnv(render_mode="human")


def test_splits_never_share_a_room_and_eval_out_is_harder() -> None:
    env = SokobanEnv()
    lengths: dict[str, list[int]] = {}
    for split in ("train", "eval_in", "eval_out"):
        for task_id in range(30):
            _, info = env.reset(options={"split": split, "task_id": task_id})
            level = env._level
            assert is_eval_layout(level.room.fingerprint) == (split != "train")
            lengths.setdefault(split, []).append(info["optimal_solution_length"])
    # eval_out holds harder rooms: at least 2 * num_boxes + 1 pushes (train and eval_in: num_boxes + 1).
    assert min(lengths["eval_out"]) >= 3 and min(lengths["train"]) >= 2 and min(lengths["eval_in"]) >= 2
    assert np.mean(lengths["eval_out"]) > np.mean(lengths["eval_in"])


# --------------------------------------------------------------------------------------------- actions
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.one_of(st.text(max_size=40), st.binary(max_size=40), st.sampled_from(sorted(VALID_WORDS))))
def test_random_text_never_raises_and_unknown_text_changes_nothing(action: str | bytes) -> None:
    env = SokobanEnv(dim_room=(7, 7), num_boxes=2)
    _, info = env.reset(seed=3)
    obs, reward, terminated, truncated, step_info = env.step(action)
    assert isinstance(obs, str) and env.observation_space.contains(obs)
    assert reward == pytest.approx(-0.1) or step_info["action_valid"]
    text = action.decode("utf-8", "replace") if isinstance(action, bytes) else action
    if " ".join(text.split()).lower() not in VALID_WORDS:
        assert step_info["action_valid"] is False
        assert step_info["state_key"] == info["state_key"]
        assert obs.startswith("Nothing happens.")


def test_action_forms_and_admissible_actions() -> None:
    env = SokobanEnv.from_board("#######\n#P_XO_#\n#_____#\n#######")
    _, info = env.reset()
    assert info["admissible_actions"] == ["down", "right"]
    for action in ["left", "up", "move left", "5", "7", "0", "noop"]:
        _, reward, _, _, step_info = env.step(action)
        assert step_info["action_valid"] is False and reward == pytest.approx(-0.1)
        assert step_info["state_key"] == info["state_key"]
    for form in ["right", "R", "push right", "  MOVE Right ", "4", "8"]:
        env.reset()
        _, _, _, _, step_info = env.step(form)
        assert step_info["action_valid"], form
        assert grid_of(env._observation()).split("\n")[1] == "#_PXO_#"
    env.reset()
    env.step("right")
    _, _, _, _, step_info = env.step("move right")  # 'move' never pushes
    assert step_info["action_valid"] is False
    obs, _, _, _, step_info = env.step("8")  # gym-sokoban's 8 = move right: no push either
    assert step_info["action_valid"] is False and "does not push" in obs


def test_admissible_actions_are_exactly_the_moving_directions() -> None:
    env = SokobanEnv(dim_room=(10, 10), num_boxes=3)
    rng = np.random.default_rng(0)
    for seed in range(5):
        env.reset(seed=seed)
        for _ in range(15):
            admissible = env.admissible_actions()
            key = env.state_key()
            for action in DIRECTIONS:
                probe = copy.deepcopy(env)
                _, _, _, _, info = probe.step(action)
                assert info["action_valid"] == (action in admissible)
            assert env.state_key() == key
            env.step(DIRECTIONS[rng.integers(4)])


def test_state_key_is_the_state_not_the_history() -> None:
    env = SokobanEnv.from_board("#######\n#P____#\n#__X_O#\n#######")
    _, info = env.reset()
    env.step("right")
    _, _, _, _, back = env.step("left")
    assert back["state_key"] == info["state_key"]
    _, _, _, _, moved = env.step("down")
    assert moved["state_key"] != info["state_key"]
    other = SokobanEnv.from_board("#######\n#P____#\n#__X__#\n#____O#\n#######")
    assert other.reset()[1]["state_key"] != info["state_key"]  # the room is part of the key


# --------------------------------------------------------------------------------------------- rewards
def test_rewards_on_a_hand_built_board() -> None:
    env = SokobanEnv.from_board(
        """
########
#P_XO__#
#___XO_#
########
"""
    )
    _, info = env.reset()
    assert info["optimal_solution_length"] == 2 and info["optimal_solution_metric"] == "pushes"
    assert info["expert_plan_length"] == 4
    _, reward, terminated, _, info = env.step("right")
    assert reward == pytest.approx(-0.1) and not terminated and info["action_valid"]
    _, reward, terminated, _, info = env.step("right")  # box onto a target
    assert reward == pytest.approx(0.9) and not terminated and info["boxes_on_target"] == 1
    _, reward, terminated, _, info = env.step("right")  # and off it again
    assert reward == pytest.approx(-1.1) and info["boxes_on_target"] == 0
    assert not info["dead_end"]  # the box can still go back along the wall
    _, reward, _, _, info = env.step("right")  # into the corner: a dead end
    assert reward == pytest.approx(-0.1) and info["action_valid"] and info["dead_end"]
    assert env.expert_plan() is None
    _, reward, _, _, info = env.step("right")  # box against the wall: cannot be pushed
    assert reward == pytest.approx(-0.1) and not info["action_valid"]

    env.reset()
    total, terminated = 0.0, False
    for action in env.expert_plan():
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
    assert terminated and info["won"] and info["boxes_on_target"] == 2
    assert reward == pytest.approx(10.9)  # last push: step penalty + box on target + solved
    assert total == pytest.approx(4 * -0.1 + 2 * 1 + 10)


def test_invalid_moves_report_why_and_cost_a_step() -> None:
    env = SokobanEnv.from_board("#######\n#PXX_O#\n#____O#\n#######", max_steps=3)
    env.reset()
    obs, reward, terminated, truncated, info = env.step("up")
    assert "wall" in obs and not info["action_valid"] and reward == pytest.approx(-0.1)
    obs, _, _, truncated, info = env.step("right")
    assert "another box" in obs and not info["action_valid"] and not truncated
    _, _, terminated, truncated, _ = env.step("hello")
    assert truncated and not terminated  # invalid actions count towards max_steps


# --------------------------------------------------------------------------------------------- dead ends
@pytest.mark.parametrize(
    ("board", "dead"),
    [
        ("######\n#X___#\n#_P__#\n#___O#\n######", True),  # box in a corner
        ("######\n#V___#\n#_P__#\n#____#\n######", False),  # box in a corner, on its target
        ("#######\n#_X__O#\n#_P___#\n#_____#\n#######", False),  # along a wall that has the target
        ("#######\n#_____#\n#X_P__#\n#____O#\n#######", True),  # against a wall with no target on it
        ("#######\n#_XX_O#\n#___PO#\n#######", True),  # 2x2 freeze: two boxes against a wall (live squares)
        ("#######\n#_____#\n#_XX__#\n#_XXP_#\n#OOOO_#\n#######", True),  # 2x2 block of boxes in the open
        ("#######\n#_____#\n#_X___#\n#___PO#\n#######", False),  # free box
    ],
)
def test_dead_end_detection_on_hand_built_boards(board: str, dead: bool) -> None:
    env = SokobanEnv.from_board(board)
    _, info = env.reset()
    assert info["dead_end"] is dead
    if dead:
        assert env.expert_plan() is None and info["optimal_solution_length"] is None


def test_dead_end_is_sound_in_random_play() -> None:
    """dead_end may miss deadlocks but must never flag a solvable state."""
    rng = np.random.default_rng(1)
    flagged = 0
    for seed in range(12):
        env = SokobanEnv(dim_room=(7, 7), num_boxes=2)
        env.reset(seed=seed)
        for _ in range(25):
            _, _, terminated, _, info = env.step(DIRECTIONS[rng.integers(4)])
            if info["dead_end"]:
                flagged += 1
                assert env.expert_plan() is None
            if terminated:
                break
    assert flagged > 0


def test_end_on_dead_end_terminates_with_its_penalty() -> None:
    board = "#####\n#O__#\n#PX_#\n#___#\n#####"  # pushing right puts the box against a targetless wall
    plain = SokobanEnv.from_board(board)
    plain.reset()
    _, reward, terminated, _, info = plain.step("right")
    assert info["dead_end"] and not terminated and reward == pytest.approx(-0.1)  # gym-sokoban: play on

    ending = SokobanEnv.from_board(board, end_on_dead_end=True, dead_end_penalty=2.0)
    ending.reset()
    obs, reward, terminated, truncated, info = ending.step("right")
    assert terminated and not truncated and not info["won"] and info["dead_end"]
    assert reward == pytest.approx(-2.1) and "the room is lost" in obs
    ending.reset()
    _, reward, terminated, _, info = ending.step("up")  # a move that keeps the room solvable
    assert not terminated and not info["dead_end"] and reward == pytest.approx(-0.1)
    made = gym.make("hiergym/Sokoban-v0", end_on_dead_end=True)
    assert made.unwrapped.end_on_dead_end


# --------------------------------------------------------------------------------------------- solver
@pytest.mark.parametrize(("dim", "boxes", "count"), SIZES, ids=[f"{d[0]}x{d[1]}-{b}" for d, b, _ in SIZES])
def test_expert_solves_every_generated_room_in_its_recorded_length(dim, boxes, count) -> None:
    env = SokobanEnv(dim_room=dim, num_boxes=boxes, max_steps=None)
    for seed in range(count):
        _, info = env.reset(seed=seed)
        plan = env.expert_plan()
        assert plan is not None and len(plan) == info["expert_plan_length"]
        pushes = count_pushes(env._room, env._player, env._boxes, [DIRECTIONS.index(a) for a in plan])
        assert pushes == info["optimal_solution_length"] >= boxes + 1  # trivial rooms are rejected
        for action in plan:
            _, _, terminated, _, info = env.step(action)
            assert info["action_valid"]
        assert terminated and info["won"], f"seed {seed}"


@pytest.mark.parametrize("metric", ["pushes", "moves"])
def test_expert_is_optimal_from_any_state(metric: str) -> None:
    """The A* plan is as short as a plain breadth-first search, from reset and after random play."""
    rng = np.random.default_rng(2)
    checked = 0
    for dim, boxes, rooms in [((6, 6), 1, 20), ((7, 7), 2, 8)]:
        env = SokobanEnv(dim_room=dim, num_boxes=boxes, expert_metric=metric)
        for seed in range(rooms):
            _, info = env.reset(seed=seed)
            assert info["optimal_solution_metric"] == metric
            for _ in range(3):
                plan = env.expert_plan()
                if metric == "moves":
                    optimal, length = bfs_optimal_moves(env), None if plan is None else len(plan)
                else:
                    optimal = bfs_optimal_pushes(env)
                    steps = None if plan is None else [DIRECTIONS.index(a) for a in plan]
                    length = None if plan is None else count_pushes(env._room, env._player, env._boxes, steps)
                assert length == optimal
                checked += 1
                for _ in range(int(rng.integers(1, 6))):
                    env.step(DIRECTIONS[rng.integers(4)])
    assert checked == 3 * 28


def test_move_optimal_generation_records_moves() -> None:
    env = SokobanEnv(dim_room=(7, 7), num_boxes=2, expert_metric="moves")
    for seed in range(10):
        _, info = env.reset(seed=seed)
        assert len(env.expert_plan()) == info["optimal_solution_length"] == info["expert_plan_length"]


def _boxes(state_key: str) -> list[tuple[int, int]]:
    """The boxes of a state key, in reading order (the key lists them sorted by cell)."""
    return [tuple(map(int, cell.split(","))) for cell in state_key.split("|b=")[1].split(";")]


def test_expert_subgoals_are_the_plans_pushes_naming_the_box_they_move() -> None:
    """Each subgoal is a walk then one or more pushes of one box in one direction, named by the box's number
    in reading order and the direction; played in order, the subgoals solve the room."""
    step = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
    env = SokobanEnv(dim_room=(7, 7), num_boxes=2)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        plan, subgoals = env.expert_plan(), env.expert_subgoals()
        assert [a for _, steps in subgoals for a in steps] == plan
        last_push = None  # (the box's cell after the last subgoal, its direction)
        for name, steps in subgoals:
            words = name.split()
            assert words[:2] == ["push", "box"] and words[3] in DIRECTIONS
            pushes = int(words[4]) if len(words) > 4 else 1
            assert len(words) in (4, 6) and (len(words) == 4 or (pushes > 1 and words[5] == "times"))
            before = _boxes(info["state_key"])
            moved = before[int(words[2]) - 1]
            for action in steps:
                _, _, _, _, info = env.step(action)
            dr, dc = step[words[3]]
            after = sorted(before[:int(words[2]) - 1] + before[int(words[2]):]
                           + [(moved[0] + pushes * dr, moved[1] + pushes * dc)])
            assert _boxes(info["state_key"]) == after, (seed, name)
            assert steps[-1] == words[3] and steps[-pushes:] == [words[3]] * pushes
            # A run of pushes of one box in one direction is one subgoal: no walk-less continuation of the last.
            assert not (len(steps) == pushes and last_push == (moved, words[3])), (seed, name)
            last_push = ((moved[0] + pushes * dr, moved[1] + pushes * dc), words[3])
        assert info["won"]
    assert env.expert_subgoals() == []  # solved: nothing left to plan
    env.reset(options={"board": "#####\n#X__#\n#_P_#\n#__O#\n#####"})  # a box in a corner
    assert env.expert_subgoals() is None


def test_fixed_board_is_solved_once() -> None:
    env = SokobanEnv.from_board("#######\n#P_XO_#\n#_____#\n#######")
    first = env.reset()[1]
    assert env._fixed_board.plan == (3, 3)  # cached on the board: later resets do not search again
    assert env.reset()[1] == first


def test_reset_with_board_option() -> None:
    env = SokobanEnv()
    obs, info = env.reset(options={"board": "  #####\n###   #\n#.  $@#\n#######"})  # XSB symbols
    assert grid_of(obs) == "#######\n###___#\n#O__XP#\n#######"  # floor outside the room became wall
    assert info["optimal_solution_length"] == 3 and env.expert_plan() == ["left"] * 3
    assert env.reset()[0] != obs  # the board was for one episode only
    with pytest.raises(ValueError, match="player"):
        parse_board("#####\n#X_O#\n#####")
    with pytest.raises(ValueError, match="symbol"):
        parse_board("#####\n#PXQ#\n#####")
    with pytest.raises(ValueError, match="as many boxes as targets"):
        parse_board("#####\n#PXX#\n#O__#\n#####")


# --------------------------------------------------------------------------------------------- rendering
def test_render_modes() -> None:
    env = SokobanEnv(dim_room=(7, 8), num_boxes=2, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    image = env.render()
    assert image.shape == (7 * 16, 8 * 16, 3) and image.dtype == np.uint8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 4
    text_env = SokobanEnv(render_mode="ansi")
    obs, _ = text_env.reset(seed=0)
    assert text_env.render() == grid_of(obs)
    made = gym.make("hiergym/Sokoban-v0", dim_room=(7, 7), num_boxes=2, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        check_env(made.unwrapped, skip_render_check=False)
