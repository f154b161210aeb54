"""``hiergym/ALFWorld-v0``: ALFWorld's household tasks, generated from a seed, on a fast native engine or on
the real ALFWorld engine (TextWorld's PDDL engine with ALFWorld's wrappers).

**Observation**: ALFWorld's text, to the letter. On reset the welcome text::

    -= Welcome to TextWorld, ALFRED! =-

    You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a cabinet 1, ...

    Your task is to: put a clean apple in fridge.

then the feedback of each command ("You arrive at countertop 1. On the countertop 1, you see a apple 1.",
"The fridge 1 is closed.", "Nothing happens.", ...).

**Action**: a command string from ALFWorld's grammar: ``go to {recep}``, ``open/close {recep}``,
``take {obj} from {recep}``, ``move {obj} to {recep}``, ``examine {obj|recep}``, ``use {lamp}``,
``heat/cool/clean {obj} with {recep}``, ``inventory``, ``look``, ``help``. Case and surrounding whitespace are
forgiven; anything not in ``info["admissible_actions"]`` answers "Nothing happens." with
``action_valid=False`` and changes nothing (as in ALFWorld).

**Reward**: sparse, ``success_reward`` (default 1.0) on the step that accomplishes the task, else 0.

**Episode end**: terminated when the task is accomplished; truncated after ``max_episode_steps=50``
(registration), ALFWorld's usual budget. After termination every step until ``reset`` repeats the terminal
observation with reward 0 and ``action_valid=False`` (the contract's rule, :class:`~hiergym.envs.core.EpisodeEnd`).

**Arguments**:

- ``engine``: ``"native"`` (default; pure Python, tens of thousands of steps per second) or ``"alfworld"``
  (TextWorld's PDDL engine via ALFWorld's ``AlfredDemangler``/``AlfredInfos``; needs ``hiergym[alfworld]``).
- ``task_types``: task types to draw from (default: all six of :data:`TASK_TYPES`); also filters the fixed
  evaluation sets.
- ``success_reward``: reward for accomplishing the task.
- ``game_source``: ``"generated"`` or ``"alfworld_data"`` (real ALFWorld games from ``$ALFWORLD_DATA``;
  engine ``"alfworld"`` only). Default: ``"alfworld_data"`` when ``engine="alfworld"`` and ``ALFWORLD_DATA``
  points at a folder with ALFWorld's ``json_2.1.1`` games, else ``"generated"``.
- ``expert_knowledge``: what :meth:`~AlfWorldEnv.expert_plan` may know: ``"full"`` (default; where every
  object is: the shortest plans) or ``"observed"`` (only what the agent has seen: it searches the receptacles
  that can hold what it needs, by type and number; native engine; 95-99% of tasks within 30 steps, median 9
  against the full expert's 6). Demonstrations for a policy that cannot see inside receptacles come from the
  latter: each of its commands follows from what the agent has observed.
- ``cache_dir``: where engine ``"alfworld"`` writes exported games (default ``~/.cache/hiergym/alfworld``).
- ``render_mode``: ``"ansi"`` (the last observation).

**Reset options**: ``split`` (``train``, ``eval_in``, ``eval_out``), ``task_id`` (``eval_in`` has 140 tasks,
``eval_out`` 134, as ALFWorld's valid_seen / valid_unseen; ``train`` any non-negative id), ``task_type`` (one
type for this reset; an evaluation task id already fixes its type).

**Info** (besides the contract keys): ``task_type``, ``split``, ``task_id``, ``scene`` (FloorPlan number, or
the game file for real ALFWorld games), ``engine``.
"""

from __future__ import annotations

import os
import re
from typing import Any

import gymnasium as gym
import numpy as np

from hiergym.envs.alfworld.engine import EXPERT_KNOWLEDGE, NativeEngine
from hiergym.envs.alfworld.world import TASK_TYPES, Task, eval_set, generate_task
from hiergym.envs.core import (
    NOTHING_HAPPENS,
    EpisodeEnd,
    make_info,
    normalize_action,
    select_task,
    stable_seed,
    text_action_space,
    text_observation_space,
)

ENV_ID = "hiergym/ALFWorld-v0"
ENGINES = ("native", "alfworld")
GAME_SOURCES = ("generated", "alfworld_data")


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "hiergym", "alfworld")


#: Commands that complete a subgoal of :meth:`AlfWorldEnv.expert_subgoals` (an interaction with an object).
SUBGOAL_VERBS = ("take", "move", "put", "cool", "heat", "clean", "use")


# Object names are one word and a number ("pan 1"); receptacles' may be followed by the rest of the command.
_FOUND_AT = re.compile(r"^(take \S+) \d+ from .+$")
_OBJECT_INSTANCE = re.compile(r"^(\w+ \S+) \d+((?: (?:with|to) .+)?)$")


def observed_subgoal(command: str) -> str:
    """A subgoal named without what is found only by looking: the object's instance number and, for ``take``,
    where it was ("take pan 1 from cabinet 2" -> "take pan", "cool pan 1 with fridge 1" -> "cool pan with
    fridge 1")."""
    if command.split(" ", 1)[0] not in SUBGOAL_VERBS:
        return command
    found = _FOUND_AT.match(command)
    if found:
        return found.group(1)
    instance = _OBJECT_INSTANCE.match(command)
    return instance.group(1) + instance.group(2) if instance else command


class AlfWorldEnv(EpisodeEnd, gym.Env[str, str]):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        engine: str = "native",
        task_types: list[str] | tuple[str, ...] | None = None,
        success_reward: float = 1.0,
        game_source: str | None = None,
        cache_dir: str | None = None,
        render_mode: str | None = None,
        expert_knowledge: str = "full",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} for {ENV_ID}; choose one of {', '.join(ENGINES)}")
        if isinstance(task_types, str):
            task_types = [task_types]
        task_types = tuple(task_types) if task_types else TASK_TYPES
        unknown = [t for t in task_types if t not in TASK_TYPES]
        if unknown:
            raise ValueError(f"unknown task type(s) {unknown} for {ENV_ID}; choose among {', '.join(TASK_TYPES)}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; {ENV_ID} renders 'ansi'")
        if expert_knowledge not in EXPERT_KNOWLEDGE:
            raise ValueError(f"unknown expert_knowledge {expert_knowledge!r} for {ENV_ID}; choose one of "
                             f"{', '.join(EXPERT_KNOWLEDGE)}")
        if expert_knowledge == "observed" and engine != "native":
            raise ValueError("expert_knowledge='observed' needs engine='native' (the searching expert runs on it)")
        if game_source is None:
            game_source = "alfworld_data" if engine == "alfworld" and _alfworld_data_dir() else "generated"
        if game_source not in GAME_SOURCES:
            raise ValueError(f"unknown game_source {game_source!r}; choose one of {', '.join(GAME_SOURCES)}")
        if game_source == "alfworld_data":
            if engine != "alfworld":
                raise ValueError("game_source='alfworld_data' plays real ALFWorld games: it needs engine='alfworld'")
            if not _alfworld_data_dir():
                raise ValueError(
                    "game_source='alfworld_data' needs ALFWORLD_DATA pointing at an ALFWorld data folder that holds "
                    "json_2.1.1/{train,valid_seen,valid_unseen} (made by `alfworld-download`)"
                )
        self.engine_name = engine
        self.expert_knowledge = expert_knowledge
        self.task_types = task_types
        self.success_reward = float(success_reward)
        self.game_source = game_source
        self.cache_dir = cache_dir or default_cache_dir()
        self.render_mode = render_mode
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()

        self._real = None
        if engine == "alfworld":
            from hiergym.envs.alfworld.real_engine import RealEngine

            self._real = RealEngine(facts=game_source == "alfworld_data", planner=game_source == "alfworld_data")
        self._native: NativeEngine | None = None
        self.task: Task | None = None
        self._game_file: str | None = None
        self._info_extra: dict[str, Any] = {}
        self._task_text = ""
        self._last_obs = ""
        self._done = False

    # ------------------------------------------------------------------ tasks
    def eval_set_size(self, split: str) -> int:
        """Number of tasks in the fixed evaluation set of ``split`` (after the ``task_types`` filter)."""
        return len(self._eval_positions(split))

    def _eval_positions(self, split: str) -> list[int]:
        return [i for i, t in enumerate(eval_set(split)) if t in self.task_types]

    def _pick_task(self, options: dict[str, Any] | None) -> tuple[str, int | None, Task]:
        split, task_id, rng = select_task(ENV_ID, self.np_random, options)
        task_type = (options or {}).get("task_type")
        if task_type is not None and task_type not in self.task_types:
            raise ValueError(f"task_type {task_type!r} is not among this env's task types {list(self.task_types)}")
        if task_id is not None and split != "train":
            positions = self._eval_positions(split)
            if task_id >= len(positions):
                raise ValueError(
                    f"task_id {task_id} is out of range: the {split} evaluation set of {ENV_ID} has "
                    f"{len(positions)} tasks for task types {list(self.task_types)} (task_id 0..{len(positions) - 1})"
                )
            position = positions[task_id]
            # Seeded by the position in the full set, so a task is the same whatever the task_types filter.
            rng = np.random.default_rng(stable_seed(ENV_ID, split, "eval", position))
            if task_type is not None and task_type != eval_set(split)[position]:
                raise ValueError(f"{split} task {task_id} is a {eval_set(split)[position]} task, not {task_type}; "
                                 "filter the evaluation set with task_types=[...] instead")
            task_type = eval_set(split)[position]
        elif task_type is None:
            task_type = self.task_types[int(rng.integers(len(self.task_types)))]
        return split, task_id, generate_task(rng, split, task_type)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self._done = False
        if self.game_source == "alfworld_data":
            return self._reset_alfworld_game(options)
        split, task_id, task = self._pick_task(options)
        self.task = task
        self._native = NativeEngine(task)
        self._task_text = task.description
        self._info_extra = {"task_type": task.task_type, "split": split, "task_id": task_id, "scene": task.scene,
                            "engine": self.engine_name}
        obs = self._native.reset()
        if self._real is not None:
            from hiergym.envs.alfworld.export import export_task

            path = os.path.join(self.cache_dir, f"{task.task_type}-{task.key}", "game.tw-pddl")
            if not os.path.exists(path):
                path = export_task(task, self.cache_dir, self._native.expert_plan())
            self._real.load(path)
            obs = self._real.reset()
        self._last_obs = obs
        return obs, self._info(True)

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict]:
        command = normalize_action(action)
        engine = self._real if self._real is not None else self._native
        if command is None:
            obs, valid = NOTHING_HAPPENS, False
        else:
            obs, valid = engine.step(command)
            if self._real is not None and self._native is not None and valid:
                self._native.step(command)  # the native twin keeps state_key and the expert in step
        won = self._won()
        self._done = self._done or won
        self._last_obs = obs
        return obs, self.success_reward if (won and valid) else 0.0, won, False, self._info(valid)

    def render(self) -> str:
        """The last observation (``ansi``, also when no render mode was given)."""
        return self._last_obs

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
        super().close()

    # ------------------------------------------------------------------ helpers
    def _won(self) -> bool:
        if self._real is not None:
            return self._real.won()
        return self._native.won() if self._native is not None else False

    def _info(self, valid: bool) -> dict:
        if self._real is not None:
            admissible = self._real.admissible_commands()
            key = self._native.state_key() if self._native is not None else self._real.state_key()
        else:
            admissible = self._native.admissible_commands()
            key = self._native.state_key()
        return make_info(task=self._task_text, admissible_actions=admissible, won=self._won(), action_valid=valid,
                         state_key=key, **self._info_extra)

    def expert_plan(self) -> list[str] | None:
        """Commands that finish the task from the current state (scripted expert with ``expert_knowledge``; the
        Fast Downward planner for real ALFWorld games)."""
        if self._real is not None and self._native is None:
            return self._real.planner_plan() or None
        if self._native is None:
            return None
        return self._native.expert_plan(self.expert_knowledge)

    def expert_subgoals(self) -> list[tuple[str, list[str]]] | None:
        """The expert's plan cut into subgoals, for a hierarchical agent's demonstrations: each subgoal ends at
        an interaction with an object (``take``, ``move``, ``cool``, ``heat``, ``clean``, ``use``) and is named
        by that command ("take pan 1 from cabinet 2"); the navigation and opening before it are its steps.

        With ``expert_knowledge="observed"`` a subgoal names only what a planner can know before it is done:
        objects by their type, as the task does, and no place an object was found ("take pan", "cool pan with
        fridge 1", "move pan to stoveburner 1", "use desklamp"); receptacles are all in the room's listing."""
        plan = self.expert_plan()
        if not plan:
            return None
        subgoals: list[tuple[str, list[str]]] = []
        steps: list[str] = []
        for command in plan:
            steps.append(command)
            if command.split(" ", 1)[0] in SUBGOAL_VERBS:
                subgoals.append((observed_subgoal(command) if self.expert_knowledge == "observed" else command, steps))
                steps = []
        if steps:
            subgoals.append((steps[-1], steps))
        return subgoals

    def export_alfworld(self, directory: str | os.PathLike) -> str:
        """Write the current task as an ALFWorld game (``<dir>/<type>-<key>/game.tw-pddl``); returns the path.
        Needs the ``alfworld`` package (``hiergym[alfworld]``) for the domain and grammar files."""
        if self.task is None:
            raise RuntimeError("call reset() before export_alfworld(): there is no task yet")
        from hiergym.envs.alfworld.export import export_task

        return export_task(self.task, directory, NativeEngine(self.task).expert_plan())

    def _reset_alfworld_game(self, options: dict[str, Any] | None) -> tuple[str, dict]:
        from hiergym.envs.alfworld.real_engine import alfworld_games

        split, task_id, rng = select_task(ENV_ID, self.np_random, options)
        games = alfworld_games(_alfworld_data_dir(), split, self.task_types)
        if not games:
            raise ValueError(f"no ALFWorld games of types {list(self.task_types)} for split {split!r} under "
                             f"{_alfworld_data_dir()}/json_2.1.1")
        if task_id is not None and task_id >= len(games):
            raise ValueError(f"task_id {task_id} is out of range: {split} has {len(games)} ALFWorld games here")
        index = task_id if task_id is not None else int(rng.integers(len(games)))
        self.task, self._native = None, None
        self._game_file = games[index]
        self._real.load(self._game_file)
        obs = self._real.reset()
        self._task_text = obs.split("Your task is to: ", 1)[-1].rstrip(".").strip()
        task_folder = os.path.basename(os.path.dirname(os.path.dirname(self._game_file)))
        self._info_extra = {"task_type": next((t for t in TASK_TYPES if task_folder.startswith(t)), ""),
                            "split": split, "task_id": task_id, "scene": self._game_file, "engine": self.engine_name}
        self._last_obs = obs
        return obs, self._info(True)


def _alfworld_data_dir() -> str | None:
    path = os.environ.get("ALFWORLD_DATA")
    if path and os.path.isdir(os.path.join(path, "json_2.1.1")):
        return path
    return None
