"""The real ALFWorld engine: TextWorld's PDDL engine (Fast Downward) with ALFWorld's own wrappers.

:class:`RealEngine` plays one ``.tw-pddl`` game file — an exported generated task or a game from a real
ALFWorld data folder — exactly as ALFWorld's ``AlfredTWEnv`` does (``AlfredDemangler`` for the names,
``AlfredInfos``), and exposes the same small interface as the native engine. It needs the optional extra
``hiergym[alfworld]`` (``alfworld==0.4.2``, which builds Fast Downward).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys

MISSING_EXTRA = (
    "engine='alfworld' needs the ALFWorld engine, which is an optional extra: pip install 'hiergym[alfworld]' "
    "(installs alfworld==0.4.2 and builds the fast-downward planner; with a virtual environment, run it with the "
    "environment's python first on PATH, e.g. after `source .venv/bin/activate`). engine='native' needs nothing."
)

#: ALFWorld's data folders for each hiergym split (``$ALFWORLD_DATA/json_2.1.1/<folder>``).
ALFWORLD_SPLIT_FOLDERS = {"train": "train", "eval_in": "valid_seen", "eval_out": "valid_unseen"}


def require_alfworld() -> None:
    """Raise an ImportError that says how to install the extra when ALFWorld or Fast Downward is missing."""
    try:
        import alfworld.info  # noqa: F401
        import fast_downward  # noqa: F401
        import textworld.envs.pddl  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{MISSING_EXTRA} (import failed: {exc})") from None


def alfworld_games(data_dir: str, split: str, task_types: tuple[str, ...]) -> list[str]:
    """Sorted ``game.tw-pddl`` files of a real ALFWorld data folder for a split, as ``AlfredTWEnv`` selects
    them (solvable games of the requested task types; movable-receptacle and sliced tasks left out)."""
    root = os.path.join(data_dir, "json_2.1.1", ALFWORLD_SPLIT_FOLDERS[split])
    games = []
    for path in sorted(glob.glob(os.path.join(root, "*", "*", "game.tw-pddl"))):
        task_folder = os.path.basename(os.path.dirname(os.path.dirname(path)))
        if "movable" in task_folder or "Sliced" in task_folder:
            continue
        if not any(task_folder.startswith(t) for t in task_types):
            continue
        games.append(path)
    return games


class RealEngine:
    """TextWorld's PDDL engine behind the native engine's interface (reset, step, admissible_commands, won)."""

    def __init__(self, *, facts: bool = False, planner: bool = False) -> None:
        require_alfworld()
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=facts, policy_commands=planner,
                                   extras=["gamefile"])
        self._env = None  # created by the first load()
        self._textworld = textworld
        self._infos = infos
        self._wrappers = (AlfredDemangler, AlfredInfos)
        self._game_file: str | None = None
        self._state = None

    def load(self, game_file: str) -> None:
        """Load a ``.tw-pddl`` game (Fast Downward translates the problem here: tenths of a second)."""
        if game_file == self._game_file and self._env is not None:
            return  # the same game again: reset() starts it over
        # Fast Downward's translator rewrites sys.argv while parsing; keep the caller's intact.
        argv = list(sys.argv)
        try:
            if self._env is None:
                demangler, infos = self._wrappers
                self._env = self._textworld.start(game_file, request_infos=self._infos,
                                                  wrappers=[demangler(), infos])
            else:
                self._env.load(game_file)
        finally:
            sys.argv[:] = argv
        self._game_file = game_file

    def reset(self) -> str:
        argv = list(sys.argv)
        try:
            self._state = self._env.reset()
        finally:
            sys.argv[:] = argv
        return self._state.feedback

    def step(self, command: str) -> tuple[str, bool]:
        valid = command in self._state["admissible_commands"]
        self._state, _, _ = self._env.step(command)
        return self._state.feedback, valid

    def admissible_commands(self) -> list[str]:
        return list(self._state["admissible_commands"])

    def won(self) -> bool:
        return bool(self._state["won"])

    def planner_plan(self) -> list[str]:
        """Fast Downward's plan from the current state (requires ``planner=True``)."""
        return list(self._state.get("policy_commands") or [])

    def state_key(self) -> str:
        """Canonical key of the current PDDL state (requires ``facts=True``)."""
        facts = sorted(str(f) for f in self._state.get("facts") or [])
        digest = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:24]
        return f"{os.path.basename(os.path.dirname(self._game_file or ''))}|{digest}"

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
