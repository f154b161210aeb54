"""The Sokoban environment: text observations and actions over the bitboard room (see :class:`SokobanEnv`)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from hiergym.envs.core import (
    NOTHING_HAPPENS,
    EpisodeEnd,
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.envs.sokoban.board import DIRECTIONS, Level, Room, bits, count_pushes
from hiergym.envs.sokoban.generator import generate_level
from hiergym.envs.sokoban.render import board_rgb, board_text
from hiergym.envs.sokoban.solver import METRICS, solve
from hiergym.envs.sokoban.xsb import parse_board

ENV_NAME = "hiergym/Sokoban-v0"
TASK = "Push every box (X) onto a target (O)."
LEGEND = "Legend: # wall, _ floor, O target, X box, V box on target, P player, S player on target."

STEP_PENALTY = -0.1
BOX_ON_TARGET_REWARD = 1.0
BOX_OFF_TARGET_REWARD = -1.0
SOLVED_REWARD = 10.0

_ACTION_WORDS: dict[str, tuple[int, bool]] = {}  # normalised text -> (direction, may push)
for _d, _name in enumerate(DIRECTIONS):
    _ACTION_WORDS[_name] = (_d, True)
    _ACTION_WORDS[_name[0]] = (_d, True)
    _ACTION_WORDS[f"push {_name}"] = (_d, True)
    _ACTION_WORDS[f"move {_name}"] = (_d, False)
    _ACTION_WORDS[str(_d + 1)] = (_d, True)
    _ACTION_WORDS[str(_d + 5)] = (_d, False)


class SokobanEnv(EpisodeEnd, gym.Env[str, str]):
    """Sokoban as a multi-turn text environment (``hiergym/Sokoban-v0``).

    ## Description

    Push every box onto a target in a walled room. Rooms are generated procedurally the way gym-sokoban does
    it (carve a room with a random-walk brush, put the boxes on their targets, then play backwards by
    *pulling* boxes), so every room is solvable by construction; the generator then solves the room with an
    A* solver to record its optimal solution length. A 10x10 room with 3 boxes takes a few milliseconds, far
    less than gym-sokoban's depth-first reverse-play search (``benchmarks/env_throughput.py``;
    ``docs/sokoban.md``). The pieces live in :mod:`~hiergym.envs.sokoban.board` (bitboard room),
    :mod:`~hiergym.envs.sokoban.solver`, :mod:`~hiergym.envs.sokoban.generator`,
    :mod:`~hiergym.envs.sokoban.xsb` (hand-built boards) and :mod:`~hiergym.envs.sokoban.render`.

    ## Action Space

    ``text_action_space()``: any value is accepted at ``step``; text is read after
    :func:`~hiergym.envs.core.normalize_action` (case and surrounding whitespace forgiven):

    - ``up``, ``down``, ``left``, ``right`` (also ``u``/``d``/``l``/``r``): move, pushing a box that is in
      the way; ``push up`` ... is the same.
    - ``move up`` ...: move without pushing (a box in the way makes it impossible), as gym-sokoban's "move".
    - gym-sokoban's numeric actions as text: ``1``-``4`` push up/down/left/right, ``5``-``8`` move
      up/down/left/right. gym-sokoban's ``0`` (no-op) is *not* accepted here: it is an invalid action, like
      any other text that does not change the state.

    Moving into a wall, pushing a box into a wall or another box, and unknown text are invalid actions: the
    state is unchanged, the feedback says why, ``info["action_valid"]`` is False, and the step still costs
    the step penalty. ``info["admissible_actions"]`` lists the directions that would move the player.

    ## Observation Space

    ``text_observation_space()``: the goal and boxes-on-targets count, the grid, and a legend. On steps, a
    first line of feedback (what the last action did, or why nothing happened). Symbols: ``#`` wall, ``_``
    floor, ``O`` target, ``X`` box, ``V`` box on target, ``P`` player, ``S`` player on target.

    ## Starting State

    A generated room (or a given board, below). Every room layout (size, walls and targets) has a
    fingerprint. Train uses the layouts whose fingerprint is not 0 mod 8; ``eval_in`` and ``eval_out`` only
    the other eighth, so no evaluation layout is ever seen in training, whatever the boxes' start (even for
    6x6 rooms with one box, where repeats are common). Sokoban has no structural hold-out, so ``eval_out``
    is a harder distribution instead: its rooms need at least ``2 * num_boxes + 1`` pushes (train and
    ``eval_in``: ``num_boxes + 1``), from reverse plays twice as long.

    Hand-built rooms: ``SokobanEnv.from_board(text)`` makes an env whose every reset loads that board, and
    ``reset(options={"board": text})`` loads one for one episode. Boards use the symbols above or the
    standard XSB ones (``#`` wall, space/``-`` floor, ``.`` target, ``$`` box, ``*`` box on target, ``@``
    player, ``+`` player on target). Lines are padded to a rectangle, a missing border of walls is added, and
    floor the player can never reach (outside the room) becomes wall.

    ## Rewards

    As gym-sokoban: -0.1 per step (invalid ones included); +1 for pushing a box onto a target; -1 for pushing
    one off; +10 when every box is on a target. With ``end_on_dead_end``, ``-dead_end_penalty`` on the step
    that ends the episode in a dead end.

    ## Episode End

    Terminated when every box is on a target (``info["won"]``), or with ``end_on_dead_end`` when the room
    provably cannot be solved any more. Truncated after ``max_steps`` steps (the registered
    ``hiergym/Sokoban-v0`` also has ``max_episode_steps=100``: pass ``max_episode_steps`` to
    ``gymnasium.make`` together with a larger ``max_steps``).

    After the episode ends, every step until ``reset`` answers the terminal observation again with reward 0,
    ``action_valid=False`` and the same ``terminated``/``truncated`` flags (the contract's episode-end rule,
    :class:`~hiergym.envs.core.EpisodeEnd`): a won room pays its reward once, and moving a box after the win
    cannot undo ``terminated``.

    ## Information

    Besides the contract's ``task``, ``admissible_actions``, ``won``, ``action_valid``, ``state_key``:
    ``boxes_on_target``, ``num_boxes``; ``dead_end``: the state provably cannot be solved any more (a box off
    target on a *dead square*, from which no sequence of pushes reaches any target, or a 2x2 block of walls
    and boxes holding a box off target). It is sound (never True for a solvable state) but not complete:
    ``expert_plan()`` returning ``None`` is the exact test. At reset only: ``optimal_solution_length`` (the
    fewest pushes, or with ``expert_metric="moves"`` the fewest moves, that solve the room; ``None`` when a
    given board is unsolvable), ``optimal_solution_metric`` (``"pushes"`` or ``"moves"``) and
    ``expert_plan_length`` (moves, i.e. env steps, of the expert's plan).

    ``state_key`` is ``"<room id>|p=r,c|b=r,c;r,c..."``: the room (walls and targets), the exact player
    position and the sorted box positions; no step count.

    Expert: ``expert_plan()`` returns a plan from the current state, or ``None`` from a state that cannot be
    solved. By default it is *push-optimal* (fewest pushes; A* over (boxes, player region) with the cheapest
    box-to-target matching by push distance as heuristic, dead-square and 2x2-freeze pruning; the walks
    between pushes are shortest walks, so plans are short in moves too but not always shortest). With
    ``expert_metric="moves"`` it is *move-optimal* (fewest env steps; A* whose edges cost the walk plus the
    push), which is exact for the step count but an order of magnitude slower on large rooms.
    ``expert_subgoals()`` cuts the plan into pushes for a hierarchical agent ("push box 2 left 2 times").

    ## Arguments

    - ``dim_room``: ``(height, width)`` of the room, border walls included (default ``(6, 6)``; tested up to
      ``(12, 12)``).
    - ``num_boxes``: boxes (= targets) per room (default 1; tested up to 4).
    - ``max_steps``: the env's own step limit (default 100; ``None`` for none).
    - ``render_mode``: ``"ansi"`` (the text board) or ``"rgb_array"`` (16-pixel tiles drawn with numpy).
    - ``expert_metric``: what the expert and ``optimal_solution_length`` minimise: ``"pushes"`` (default) or
      ``"moves"``.
    - ``end_on_dead_end``: terminate (not won) as soon as ``info["dead_end"]`` holds, with
      ``dead_end_penalty`` subtracted from that step's reward (default off, as gym-sokoban). Success is
      unchanged (the test is sound: such a room could never be won); for training, it stops the steps that
      can no longer matter from filling the batch.
    - ``dead_end_penalty``: subtracted when ``end_on_dead_end`` ends an episode (default 2.0, what 20 more
      steps would cost in step penalties, so that running into a dead end never beats trying to the limit).

    ## Version History

    - v0: the first version (``envs/sokoban.py``); split into the ``hiergym.envs.sokoban`` package with the
      same rooms, observations and rewards. Steps after the episode's end follow the contract's episode-end
      rule (before, they kept paying the win reward, and a box pushed off its target undid ``terminated``).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    #: ``expert_subgoals()`` names count boxes and pushes from the current state (for the demonstrator).
    subgoal_names_from_state = True

    def __init__(
        self,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        max_steps: int | None = 100,
        render_mode: str | None = None,
        expert_metric: str = "pushes",
        end_on_dead_end: bool = False,
        dead_end_penalty: float = 2.0,
    ) -> None:
        dim = tuple(int(n) for n in dim_room)
        if len(dim) != 2 or min(dim) < 5:
            raise ValueError(f"dim_room must be (height, width) with both at least 5, got {dim_room!r}")
        if not isinstance(num_boxes, int | np.integer) or num_boxes < 1:
            raise ValueError(f"num_boxes must be a positive integer, got {num_boxes!r}")
        if num_boxes > (dim[0] - 2) * (dim[1] - 2) // 4:
            raise ValueError(f"{num_boxes} boxes do not fit a {dim[0]}x{dim[1]} room; use a larger dim_room")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
        if expert_metric not in METRICS:
            raise ValueError(f"expert_metric must be one of {METRICS}, got {expert_metric!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.dim_room = dim
        self.num_boxes = int(num_boxes)
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.expert_metric = expert_metric
        self.end_on_dead_end = bool(end_on_dead_end)
        self.dead_end_penalty = float(dead_end_penalty)
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self._fixed_board: Level | None = None
        self._level: Level | None = None
        self._room: Room | None = None
        self._player = 0
        self._boxes = 0
        self._steps = 0
        self._feedback = ""
        # Expert plans: state -> (plan, index into it); any suffix of an optimal plan is optimal.
        self._plans: dict[tuple[int, int], tuple[tuple[int, ...], int]] = {}

    @classmethod
    def from_board(
        cls,
        board: str,
        max_steps: int | None = 100,
        render_mode: str | None = None,
        expert_metric: str = "pushes",
        **kwargs: Any,
    ) -> SokobanEnv:
        """An env whose every reset loads ``board`` (hiergym or XSB symbols); ``ValueError`` if malformed.
        Other keyword arguments (``end_on_dead_end``, ...) are the constructor's."""
        level = parse_board(board)
        env = cls(max_steps=max_steps, render_mode=render_mode, expert_metric=expert_metric, **kwargs)
        env.dim_room = (level.room.height, level.room.width)
        env.num_boxes = level.boxes.bit_count()
        env._fixed_board = level
        return env

    # ----------------------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, _task_id, rng = select_task(ENV_NAME, self.np_random, options)
        board = (options or {}).get("board")
        if board is not None:
            level = parse_board(board)
        elif self._fixed_board is not None:
            level = self._fixed_board
        else:
            level = generate_level(
                rng,
                self.dim_room,
                self.num_boxes,
                walk_scale=2.0 if split == "eval_out" else 1.0,
                min_pushes=2 * self.num_boxes + 1 if split == "eval_out" else None,
                eval_rooms=split != "train",
                metric=self.expert_metric,
            )
        self._level = level
        self._room = level.room
        self._player, self._boxes = level.player, level.boxes
        self._steps = 0
        self._plans = {}
        plan = level.plan
        if plan is None:
            plan = self._solve()
            solved = Level(level.room, level.player, level.boxes, None if plan is None else tuple(plan))
            if level is self._fixed_board:  # solve a fixed board once, not at every reset
                self._fixed_board = solved
            self._level = level = solved
        else:
            self._remember_plan(plan)
        self._feedback = ""
        info = self._info(action_valid=True)
        if plan is None:
            info["optimal_solution_length"] = None
        elif self.expert_metric == "moves":
            info["optimal_solution_length"] = len(plan)
        else:
            info["optimal_solution_length"] = count_pushes(level.room, level.player, level.boxes, plan)
        info["optimal_solution_metric"] = self.expert_metric
        info["expert_plan_length"] = None if plan is None else len(plan)
        return self._observation(), info

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._room is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        room = self._room
        self._steps += 1
        reward = STEP_PENALTY
        valid = False
        text = normalize_action(action)
        parsed = _ACTION_WORDS.get(text) if text is not None else None
        if parsed is None:
            self._feedback = f"{NOTHING_HAPPENS} Valid actions: up, down, left, right."
        else:
            d, may_push = parsed
            name = DIRECTIONS[d]
            delta = room.deltas[d]
            ahead = self._player + delta
            if not room.is_floor(ahead):
                self._feedback = f"{NOTHING_HAPPENS} A wall blocks the way {name}."
            elif self._boxes >> ahead & 1:
                beyond = ahead + delta
                if not may_push:
                    self._feedback = f"{NOTHING_HAPPENS} A box is in the way; 'move {name}' does not push."
                elif not room.is_floor(beyond) or self._boxes >> beyond & 1:
                    blocker = "a wall" if not room.is_floor(beyond) else "another box"
                    self._feedback = f"{NOTHING_HAPPENS} The box cannot be pushed {name}: {blocker} is behind it."
                else:
                    self._boxes ^= (1 << ahead) | (1 << beyond)
                    self._player = ahead
                    valid = True
                    on_before, on_after = room.targets >> ahead & 1, room.targets >> beyond & 1
                    reward += BOX_ON_TARGET_REWARD * (on_after and not on_before)
                    reward += BOX_OFF_TARGET_REWARD * (on_before and not on_after)
                    self._feedback = f"You pushed the box {name}."
            else:
                self._player = ahead
                valid = True
                self._feedback = f"You moved {name}."
        won = self._boxes == room.targets
        if won and valid:
            reward += SOLVED_REWARD
            self._feedback += " Every box is on a target: you solved the room!"
        info = self._info(action_valid=valid)
        terminated = won
        if self.end_on_dead_end and info["dead_end"]:
            # Nothing can be won from here: end now, at a cost so that ending early is no shortcut.
            terminated = True
            reward -= self.dead_end_penalty
            self._feedback += " A box is stuck where it can never reach a target: the room is lost."
        truncated = not terminated and self.max_steps is not None and self._steps >= self.max_steps
        return self._observation(), float(round(reward, 6)), terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        if self._room is None:
            return None
        if self.render_mode == "rgb_array":
            return self.render_rgb()
        return self.render_text()

    # ----------------------------------------------------------------------------------------- views
    def render_text(self) -> str:
        """The grid, one row per line, in hiergym's symbols."""
        assert self._room is not None
        return board_text(self._room, self._player, self._boxes)

    def render_rgb(self) -> np.ndarray:
        """The board as an ``(H*16, W*16, 3)`` uint8 image."""
        assert self._room is not None
        return board_rgb(self._room, self._player, self._boxes)

    def _observation(self) -> str:
        on_target = (self._boxes & self._room.targets).bit_count()
        lines = [self._feedback] if self._feedback else []
        lines.append(f"{TASK} Boxes on targets: {on_target}/{self._boxes.bit_count()}.")
        lines.append(self.render_text())
        lines.append(LEGEND)
        return "\n".join(lines)

    def _info(self, *, action_valid: bool) -> dict[str, Any]:
        room = self._room
        won = self._boxes == room.targets
        return make_info(
            task=TASK,
            admissible_actions=self.admissible_actions(),
            won=won,
            action_valid=action_valid,
            state_key=self.state_key(),
            dead_end=not won and room.is_dead_end(self._boxes),
            boxes_on_target=(self._boxes & room.targets).bit_count(),
            num_boxes=self._boxes.bit_count(),
        )

    # ----------------------------------------------------------------------------------------- queries
    def admissible_actions(self) -> list[str]:
        """The directions that would move the player now (walking or pushing)."""
        room = self._room
        actions = []
        for name, delta in zip(DIRECTIONS, room.deltas, strict=True):
            ahead = self._player + delta
            if not room.is_floor(ahead):
                continue
            if self._boxes >> ahead & 1:
                beyond = ahead + delta
                if not room.is_floor(beyond) or self._boxes >> beyond & 1:
                    continue
            actions.append(name)
        return actions

    def state_key(self) -> str:
        w = self._room.width
        boxes = ";".join(f"{b // w},{b % w}" for b in bits(self._boxes))
        return f"{self._room.id}|p={self._player // w},{self._player % w}|b={boxes}"

    @property
    def is_dead_end(self) -> bool:
        return self._boxes != self._room.targets and self._room.is_dead_end(self._boxes)

    def expert_plan(self) -> list[str] | None:
        """An optimal list of actions (in ``expert_metric``) solving the room from here; ``None`` if unsolvable."""
        if self._room is None:
            return None
        state = (self._boxes, self._player)
        if state not in self._plans:
            plan = self._solve()
            if plan is None:
                return None
        plan, index = self._plans[state]
        return [DIRECTIONS[d] for d in plan[index:]]

    def expert_subgoals(self) -> list[tuple[str, list[str]]] | None:
        """The expert's plan cut into pushes, for a hierarchical agent's demonstrations; ``None`` if unsolvable.

        Pushes are Sokoban's planning decisions (the solver searches over them) and the walks between them are
        navigation, so a subgoal is one push, or a run of pushes of the same box in the same direction: "push
        box 2 left", "push box 1 up 3 times". Its steps are the walk to the box and the pushes. Boxes (``X``
        and ``V``) are numbered from 1 in reading order when the subgoal starts: row by row from the top, left
        to right."""
        plan = self.expert_plan()
        if plan is None:
            return None
        room, player, boxes = self._room, self._player, self._boxes
        runs: list[list[Any]] = []  # [box number, direction, pushes, steps]
        walk: list[str] = []
        pushed_to, pushed_dir = -1, -1  # where the last push left its box, and in which direction
        for action in plan:
            d = DIRECTIONS.index(action)
            ahead = player + room.deltas[d]
            if boxes >> ahead & 1:
                if not walk and (ahead, d) == (pushed_to, pushed_dir):
                    runs[-1][2] += 1
                    runs[-1][3].append(action)
                else:
                    number = (boxes & ((1 << ahead) - 1)).bit_count() + 1
                    runs.append([number, d, 1, [*walk, action]])
                pushed_to, pushed_dir = ahead + room.deltas[d], d
                boxes ^= (1 << ahead) | (1 << pushed_to)
                walk = []
            else:
                walk.append(action)
            player = ahead
        subgoals = [(f"push box {number} {DIRECTIONS[d]}" + (f" {pushes} times" if pushes > 1 else ""), steps)
                    for number, d, pushes, steps in runs]
        if walk:  # a plan ends with the push that solves the room; a walk after it is not one (kept to be whole)
            subgoals.append(("walk " + ", ".join(walk), walk))
        return subgoals

    def _solve(self) -> list[int] | None:
        plan = solve(self._room, self._player, self._boxes, self.expert_metric)
        if plan is not None:
            self._remember_plan(plan)
        return plan

    def _remember_plan(self, plan: tuple[int, ...] | list[int]) -> None:
        """Cache the plan for every state along it, so following the expert never searches twice."""
        plan = tuple(plan)
        room = self._room
        player, boxes = self._player, self._boxes
        self._plans[(boxes, player)] = (plan, 0)
        for index, d in enumerate(plan, start=1):
            delta = room.deltas[d]
            player += delta
            if boxes >> player & 1:
                boxes ^= (1 << player) | (1 << (player + delta))
            self._plans[(boxes, player)] = (plan, index)
