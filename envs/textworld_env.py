"""``hiergym/TextWorld-v0``: TextWorld games (a ``.z8``/``.ulx`` file, or games generated from a seed with
TextWorld's challenges) behind the hiergym text-env contract.

TextWorld's own ``textworld.gym`` still speaks the old 4-tuple API; this env wraps ``textworld.start`` directly.

**Observation**: the game's text (printable ASCII; TextWorld's banner on reset, then each command's feedback,
without the Inform prompt).

**Action**: a command string. For TextWorld-made games (which come with a ``.json`` of their logic) only the
game's admissible commands reach the game; any other command answers "Nothing happens." with
``action_valid=False`` and leaves the game untouched. Other z-machine games get every command (up to 200
characters); the game's own parser answers.

**Reward**: the points the step earned (TextWorld's score delta; a generated game's quest is worth its
``max_score``). Episode end: terminated when the game is won or lost; the time limit is the registration's
``max_episode_steps=100``.

**Arguments**:

- ``game_file``: path to a game to play (every reset plays it). When ``None``, games are generated.
- ``challenge``: ``"tw-treasure_hunter"`` (default), ``"tw-coin_collector"``, ``"tw-cooking"``,
  ``"tw-simple"`` or ``"custom"`` (``textworld.generator.make_game`` with ``nb_rooms``, ``nb_objects``,
  ``quest_length``).
- ``settings``: the challenge's settings (defaults in :data:`DEFAULT_SETTINGS`).
- ``num_games``: size of each split's pool of games (``{"train": 100, "eval_in": 20, "eval_out": 20}``
  by default, or one int for all); seeds draw a game from the pool, ``task_id`` addresses it.
- ``cache_dir``: where generated games are compiled once and reused (default ``~/.cache/hiergym/textworld``).

**Splits**: ``train`` and ``eval_in`` draw from the same settings with disjoint game seeds; ``eval_out`` holds
out structure never generated for ``train``: ``tw-cooking`` uses its ``test`` recipes/ingredients, ``tw-simple``
its test distribution, the others larger levels/worlds (level + 5; ``custom``: 2 more rooms and a 2-step longer
quest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from typing import Any

import gymnasium as gym

from hiergym.envs.core import (
    NOTHING_HAPPENS,
    TEXT_CHARSET,
    EpisodeEnd,
    make_info,
    normalize_action,
    select_task,
    stable_seed,
    text_action_space,
    text_observation_space,
)

ENV_ID = "hiergym/TextWorld-v0"
CHALLENGES = ("tw-treasure_hunter", "tw-coin_collector", "tw-cooking", "tw-simple", "custom")
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "tw-treasure_hunter": {"level": 1},
    "tw-coin_collector": {"level": 1},
    "tw-cooking": {"recipe": 1, "take": 1, "go": 1, "open": True, "cook": False, "cut": False, "drop": False,
                   "recipe_seed": 0, "split": "train"},
    "tw-simple": {"rewards": "dense", "goal": "detailed", "test": False},
    "custom": {"nb_rooms": 3, "nb_objects": 5, "quest_length": 3},
}
DEFAULT_NUM_GAMES = {"train": 100, "eval_in": 20, "eval_out": 20}
MAX_COMMAND_CHARS = 200
_PARSER_FAILURES = ("That's not a verb I recognise.", "I didn't understand that sentence.",
                    "You can't see any such thing.", "I beg your pardon?", "I only understood you as far as")
_PROMPT = re.compile(r"\n*>[^\n]*\Z")


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "hiergym", "textworld")


def clean_text(text: str) -> str:
    """Printable ASCII without the trailing Inform prompt/status line."""
    text = _PROMPT.sub("", text or "")
    text = "".join(ch if ch in TEXT_CHARSET else "?" for ch in text).strip("\n")
    return text or NOTHING_HAPPENS


def split_settings(challenge: str, settings: dict[str, Any], split: str) -> dict[str, Any]:
    """The settings a split generates with (``eval_out``: held-out structure, see the module docstring)."""
    settings = dict(settings)
    if split != "eval_out":
        return settings
    if challenge == "tw-cooking":
        settings["split"] = "test"
    elif challenge == "tw-simple":
        settings["test"] = True
    elif challenge in ("tw-treasure_hunter", "tw-coin_collector"):
        settings["level"] = int(settings["level"]) + 5
    else:
        settings["nb_rooms"] = int(settings["nb_rooms"]) + 2
        settings["quest_length"] = int(settings["quest_length"]) + 2
    return settings


def generate_game(challenge: str, settings: dict[str, Any], seed: int, cache_dir: str) -> str:
    """Path of the compiled game for (challenge, settings, seed); compiled once, then read from ``cache_dir``."""
    key = hashlib.sha256(json.dumps([challenge, settings, seed], sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{challenge}-{key}.z8")
    if os.path.exists(path) and os.path.exists(path[:-3] + ".json"):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    from textworld import GameOptions
    from textworld.generator import compile_game, make_game

    options = GameOptions()
    options.seeds = seed
    options.force_recompile = True
    # Compile under a private name, then move into place: parallel workers may build the same game.
    tmp_base = os.path.join(cache_dir, f".{challenge}-{key}-{os.getpid()}")
    options.path = tmp_base + ".z8"
    # Generation replays walkthroughs in Jericho, which calls every TextWorld game "not fully supported".
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Game .* is not fully supported")
        if challenge == "custom":
            options.nb_rooms = int(settings["nb_rooms"])
            options.nb_objects = int(settings["nb_objects"])
            options.quest_length = int(settings["quest_length"])
            game = make_game(options)
        else:
            from textworld.challenges import CHALLENGES as TW_CHALLENGES

            game = TW_CHALLENGES[challenge][1](settings, options)
        compiled = compile_game(game, options)
    os.replace(compiled[:-3] + ".json", path[:-3] + ".json")
    os.replace(compiled, path)
    for leftover in (tmp_base + ".ni",):
        if os.path.exists(leftover):
            os.remove(leftover)
    return path


class TextWorldEnv(EpisodeEnd, gym.Env[str, str]):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        game_file: str | None = None,
        challenge: str = "tw-treasure_hunter",
        settings: dict[str, Any] | None = None,
        num_games: int | dict[str, int] | None = None,
        cache_dir: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if game_file is not None and not os.path.isfile(game_file):
            raise FileNotFoundError(f"game_file {game_file!r} does not exist; give the path of a .z8 or .ulx game")
        if challenge not in CHALLENGES:
            raise ValueError(f"unknown challenge {challenge!r} for {ENV_ID}; choose one of {', '.join(CHALLENGES)}")
        unknown = set(settings or {}) - set(DEFAULT_SETTINGS[challenge])
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)} for {challenge}; "
                             f"it takes {sorted(DEFAULT_SETTINGS[challenge])}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; {ENV_ID} renders 'ansi'")
        self.game_file = game_file
        self.challenge = challenge
        self.settings = {**DEFAULT_SETTINGS[challenge], **(settings or {})}
        if num_games is None:
            num_games = dict(DEFAULT_NUM_GAMES)
        elif isinstance(num_games, int):
            num_games = dict.fromkeys(DEFAULT_NUM_GAMES, num_games)
        if any(int(n) < 1 for n in num_games.values()):
            raise ValueError(f"num_games must be positive, got {num_games}")
        self.num_games = {**DEFAULT_NUM_GAMES, **num_games}
        self.cache_dir = cache_dir or default_cache_dir()
        self.render_mode = render_mode
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self._env = None
        self._loaded: str | None = None
        self._state = None
        self._tw_game = False
        self._history: list[str] = []
        self._walkthrough: list[str] | None = None
        self._last_obs = ""
        self._info_extra: dict[str, Any] = {}
        self._done = False

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """Everything but the running game (the z-machine behind ctypes pointers) and its last state.

        A pickled or ``copy.deepcopy``-ed env loads the same game file on unpickling and replays the commands
        of the episode (those that reached the game) from its reset, so it continues exactly as the
        original would; the observation and info it last returned travel as they were.
        """
        state = self.__dict__.copy()
        state["_env"] = None
        state["_state"] = None
        state["_loaded"] = None
        state["_pickled_game"] = self._loaded if self._state is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        game = state.pop("_pickled_game", None)
        self.__dict__.update(state)
        if game is None:
            return
        self._load(game)
        self._state = self._quietly(self._env.reset)
        for command in self._history:
            self._state, _, _ = self._quietly(self._env.step, command)

    # ------------------------------------------------------------------ games
    def _game_for(self, options: dict[str, Any] | None) -> tuple[str, str, int | None]:
        split, task_id, rng = select_task(ENV_ID, self.np_random, options)
        if self.game_file is not None:
            return self.game_file, split, task_id
        size = int(self.num_games[split])
        if task_id is not None and task_id >= size:
            raise ValueError(f"task_id {task_id} is out of range: the {split} pool of {ENV_ID} has {size} games "
                             f"(task_id 0..{size - 1}; see num_games)")
        index = task_id if task_id is not None else int(rng.integers(size))
        seed = stable_seed(ENV_ID, self.challenge, split, index) % (2**31 - 1)
        settings = split_settings(self.challenge, self.settings, split)
        return generate_game(self.challenge, settings, seed, self.cache_dir), split, index

    def _load(self, path: str) -> None:
        import textworld

        if self._loaded == path:
            return
        if self._env is not None:
            self._env.close()
        self._tw_game = os.path.exists(os.path.splitext(path)[0] + ".json")
        infos = textworld.EnvInfos(
            admissible_commands=self._tw_game, won=True, lost=True, score=True, max_score=True,
            policy_commands=self._tw_game, facts=self._tw_game, objective=True, extras=["walkthrough"],
        )
        with warnings.catch_warnings():
            if self._tw_game:  # TextWorld tracks score and state itself; Jericho's "unsupported game" is noise
                warnings.filterwarnings("ignore", message="Game .* is not fully supported")
            self._env = textworld.start(path, request_infos=infos)
        self._loaded = path

    def _quietly(self, call, *args):
        # Jericho looks for valid actions (and a walkthrough) and warns that TextWorld-made games are "unsupported";
        # TextWorld then replaces them with its own admissible commands, so the warning is noise.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unable to (find valid actions|retrieve walkthrough)")
            return call(*args)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        path, split, task_id = self._game_for(options)
        self._load(path)
        self._state = self._quietly(self._env.reset)
        self._history = []
        self._done = False
        walkthrough = self._state.get("extra.walkthrough")
        self._walkthrough = list(walkthrough) if walkthrough else None
        self._info_extra = {"split": split, "task_id": task_id, "game_file": path,
                            "score": int(self._state.get("score") or 0),
                            "max_score": int(self._state.get("max_score") or 0)}
        self._last_obs = clean_text(self._state.feedback)
        return self._last_obs, self._info(True)

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict]:
        command = normalize_action(action)
        admissible = self._admissible()
        valid = command is not None and not self._done and len(command) <= MAX_COMMAND_CHARS
        if valid and admissible is not None:
            lowered = {a.lower(): a for a in admissible}
            valid = command in lowered
            command = lowered.get(command, command)
        if not valid:
            obs, reward = NOTHING_HAPPENS, 0.0
        else:
            before = int(self._state.get("score") or 0)
            self._state, _, _ = self._quietly(self._env.step, command)
            self._history.append(command)
            obs = clean_text(self._state.feedback)
            reward = float(int(self._state.get("score") or 0) - before)
            if admissible is None:
                valid = not any(obs.startswith(f) for f in _PARSER_FAILURES)
        won, lost = bool(self._state.get("won")), bool(self._state.get("lost"))
        self._done = self._done or won or lost
        self._info_extra["score"] = int(self._state.get("score") or 0)
        self._last_obs = obs
        return obs, reward, won or lost, False, self._info(valid)

    def render(self) -> str:
        """The last observation (``ansi``, also when no render mode was given)."""
        return self._last_obs

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._loaded = None
        super().close()

    # ------------------------------------------------------------------ contract helpers
    def _admissible(self) -> list[str] | None:
        if not self._tw_game or self._state is None:
            return None
        return list(self._state.get("admissible_commands") or [])

    def _state_key(self) -> str:
        game = os.path.basename(self._loaded or "")
        if self._tw_game:
            facts = sorted(str(f) for f in self._state.get("facts") or [])
            body = "\n".join(facts)
        else:
            jericho_env = getattr(getattr(self._env, "unwrapped", self._env), "_jericho", None)
            try:
                body = str(jericho_env.get_world_state_hash())
            except Exception:  # not every z-machine game supports world-state hashing
                body = self._last_obs
        return f"{game}|{hashlib.sha256(body.encode()).hexdigest()[:24]}"

    def _info(self, valid: bool) -> dict:
        objective = self._state.get("objective") or ""
        return make_info(task=clean_text(objective) if objective else "", admissible_actions=self._admissible(),
                         won=bool(self._state.get("won")), action_valid=valid, state_key=self._state_key(),
                         **self._info_extra)

    def expert_plan(self) -> list[str] | None:
        """Commands that win from the current state: TextWorld's quest policy for TextWorld-made games, else the
        rest of the game's walkthrough while the episode has followed it (None once it has strayed)."""
        if self._state is None or self._state.get("lost"):
            return None
        if self._state.get("won"):
            return []
        if self._tw_game:
            return list(self._state.get("policy_commands") or []) or None
        walkthrough = self._walkthrough or []
        if self._history == walkthrough[: len(self._history)] and len(walkthrough) > len(self._history):
            return walkthrough[len(self._history):]
        return None
