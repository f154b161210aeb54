"""Shared machinery of hiergym's multi-agent text games.

A game is split in two layers:

- :class:`TextGame`: the pure rules. State, whose move it is, the legal actions (as canonical strings),
  the transition, each player's partial text view, payoffs and a canonical state key. No PettingZoo, no
  spaces, no seeding of its own: ``new_task(rng, split)`` draws a task from a generator it is given.
- :class:`TextGameAECEnv` and :class:`TextGameParallelEnv`: the PettingZoo AEC and Parallel faces of any
  ``TextGame``. Both are native (neither is a PettingZoo conversion of the other): PettingZoo's
  ``aec_to_parallel`` would let the second player of a turn-based game choose its move before seeing the
  first player's, and ``parallel_to_aec`` would make a player "act" on every turn of a turn-based game.

Turns. ``TextGame.to_move()`` names the players that act now: one player in a turn-based game, several in a
simultaneous game (the household task). The AEC env selects them one by one and resolves the joint move when
the last of them has acted; the Parallel env applies the actions of exactly those players each step and
ignores the actions of everybody else (their ``info["to_move"]`` is False and ``admissible_actions`` empty).

Malformed and illegal actions never raise. The game's :attr:`TextGame.illegal_move` rule says what they do:
``"forfeit"`` (competitive games: the offender loses the game, or folds the hand in poker) or ``"pass"``
(negotiation, cooperation: the action does nothing and the turn is used up). Either way the acting player's
``info["action_valid"]`` is False. Actions are read by :func:`hiergym.envs.core.normalize_action`.

After the game, PettingZoo's conventions: in the AEC env each player's last step is ``step(None)`` and
removes it from ``agents``, and a step with ``agents`` empty does nothing; in the Parallel env a step with
``agents`` empty changes nothing and returns five empty dicts.

Observations are the player's inbox (what happened since it last acted, e.g. the opponent's move) followed by
its current view. ``info`` per player follows the single-agent contract (``task``, ``admissible_actions``,
``won``, ``action_valid``, ``state_key``) plus ``to_move`` and game-specific structured extras (the player's
own private information only), which scripted players read.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv

from hiergym.envs.core import (
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)

FORFEIT = "forfeit"
PASS = "pass"


@dataclass(frozen=True)
class Event:
    """Something that happened, told to ``recipients`` (every player when None)."""

    text: str
    recipients: tuple[str, ...] | None = None


class TextGame(ABC):
    """The rules of one multi-agent text game (see the module docstring)."""

    #: PettingZoo-style name, e.g. ``"tictactoe_v0"``; also the namespace of ``select_task``.
    name: ClassVar[str]
    #: What an illegal or malformed action does: :data:`FORFEIT` or :data:`PASS`.
    illegal_move: ClassVar[str]
    players: tuple[str, ...] = ("player_0", "player_1")

    # ------------------------------------------------------------------ rules every game implements
    @abstractmethod
    def new_task(self, rng: np.random.Generator, split: str) -> list[Event]:
        """Start a new game drawn from ``rng``; returns the opening events (e.g. the deal)."""

    @abstractmethod
    def to_move(self) -> tuple[str, ...]:
        """The players that act now (empty when the game is over)."""

    @abstractmethod
    def legal_actions(self, player: str) -> list[str]:
        """Canonical legal actions of ``player`` now (empty when it is not to move)."""

    @abstractmethod
    def apply(self, moves: dict[str, str | None]) -> list[Event]:
        """Play one joint move: a canonical legal action per player of ``to_move()``.

        An illegal or malformed action arrives as a marker for which :func:`is_illegal` is True (a ``str``
        holding the normalised raw text, for messages); the game applies its :attr:`illegal_move` rule.
        """

    @abstractmethod
    def is_over(self) -> bool: ...

    @abstractmethod
    def scores(self) -> dict[str, float]:
        """Each player's payoff so far (the env's rewards are the changes of these)."""

    @abstractmethod
    def won(self, player: str) -> bool: ...

    @abstractmethod
    def view(self, player: str) -> str:
        """``player``'s current partial view of the game, as text (printable ASCII, never empty)."""

    @abstractmethod
    def task(self, player: str) -> str: ...

    @abstractmethod
    def state_key(self) -> str:
        """Canonical string of the full true state (hidden information included)."""

    # ------------------------------------------------------------------ optional hooks
    def parse_action(self, player: str, action: Any) -> str | None:
        """The canonical legal action ``action`` stands for, or None. Games add aliases by overriding."""
        text = normalize_action(action)
        if text is None or player not in self.to_move():
            return None
        return text if text in self.legal_actions(player) else None

    def info_extras(self, player: str) -> dict[str, Any]:
        """Structured facts ``player`` may know (its own private information only), for scripted players."""
        return {}

    def truncated(self) -> bool:
        """True when a time limit of the game (not a rule that decides it) has run out."""
        return False

    def render_text(self) -> str:
        """The whole true state for a spectator (``render_mode="ansi"``)."""
        return "\n\n".join(f"[{p}]\n{self.view(p)}" for p in self.players)

    def clone(self) -> TextGame:
        return copy.deepcopy(self)


def copy_sharing(obj: Any, memo: dict[int, Any], shared: tuple[str, ...]) -> Any:
    """A deep copy of ``obj`` whose attributes named in ``shared`` are the same objects as the original's."""
    clone = obj.__class__.__new__(obj.__class__)
    memo[id(obj)] = clone
    for key, value in obj.__dict__.items():
        clone.__dict__[key] = value if key in shared else copy.deepcopy(value, memo)
    return clone


def illegal_event(player: str, action: Any, consequence: str) -> Event:
    """The event telling everybody that ``player`` made an illegal move and what it cost."""
    shown = normalize_action(action)
    shown = repr(shown[:40]) if shown else "an unreadable action"
    return Event(f"{player} made an illegal move ({shown}) and {consequence}.")


class TextObservation(str):
    """A plain ``str`` that also carries ``dtype = str``, as ``spaces.Text`` does.

    PettingZoo's ``api_test`` compares ``observation.dtype`` with ``observation_space.dtype``; a bare ``str``
    has no ``dtype``. Everything else sees an ordinary string.
    """

    __slots__ = ()
    dtype = str


class _GameEnvMixin:
    """Seeding, task selection, inboxes and info building shared by the AEC and Parallel envs."""

    game_class: ClassVar[type[TextGame]]
    metadata: dict[str, Any]

    def _init_game(self, render_mode: str | None, max_cycles: int | None, game_kwargs: dict[str, Any]) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.max_cycles = max_cycles
        self.game = self.game_class(**game_kwargs)
        self.possible_agents = list(self.game.players)
        self.observation_spaces = {a: text_observation_space() for a in self.possible_agents}
        self.action_spaces = {a: text_action_space() for a in self.possible_agents}
        self._np_random: np.random.Generator | None = None
        self._inbox: dict[str, list[str]] = {a: [] for a in self.possible_agents}
        self._valid: dict[str, bool] = dict.fromkeys(self.possible_agents, True)
        self.num_moves = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # experts simulate games on deep copies; the spaces are fixed configuration (and the costliest part
        # to copy), so copies share them
        return copy_sharing(self, memo, ("observation_spaces", "action_spaces"))

    def observation_space(self, agent: str):
        return self.observation_spaces[agent]

    def action_space(self, agent: str):
        return self.action_spaces[agent]

    def _start_game(self, seed: int | None, options: dict[str, Any] | None) -> None:
        if seed is not None or self._np_random is None:
            self._np_random, _ = seeding.np_random(seed)
        split, task_id, task_rng = select_task(self.game.name, self._np_random, options)
        self.split, self.task_id = split, task_id
        self._inbox = {a: [] for a in self.possible_agents}
        self._valid = dict.fromkeys(self.possible_agents, True)
        self.num_moves = 0
        self._deliver(self.game.new_task(task_rng, split))

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            for agent in event.recipients or self.possible_agents:
                self._inbox[agent].append(event.text)

    def _observe_text(self, agent: str) -> str:
        news = "\n".join(self._inbox[agent])
        view = self.game.view(agent)
        return TextObservation(f"{news}\n\n{view}" if news else view)

    def _infos(self, agents: list[str]) -> dict[str, dict[str, Any]]:
        key = self.game.state_key()  # one state, one key: computed once for every agent
        return {a: self._info(a, key) for a in agents}

    def _info(self, agent: str, state_key: str | None = None) -> dict[str, Any]:
        game = self.game
        moving = agent in game.to_move()
        return make_info(
            task=game.task(agent),
            admissible_actions=game.legal_actions(agent) if moving else [],
            won=game.won(agent),
            action_valid=self._valid[agent],
            state_key=state_key or game.state_key(),
            to_move=moving,
            **game.info_extras(agent),
        )

    def _play(self, moves: dict[str, str | None]) -> dict[str, float]:
        """Apply a joint move and return each player's reward (the change of its score)."""
        before = self.game.scores()
        self._deliver(self.game.apply(moves))
        self.num_moves += 1
        after = self.game.scores()
        return {a: float(after[a] - before[a]) for a in self.possible_agents}

    def _time_is_up(self) -> bool:
        return self.game.truncated() or (self.max_cycles is not None and self.num_moves >= self.max_cycles)

    def render(self) -> str | None:
        text = self.game.render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text


class TextGameAECEnv(_GameEnvMixin, AECEnv):
    """PettingZoo AEC env of a :class:`TextGame` (players act one at a time).

    When the game ends every player is terminated (or truncated) and gets one last step, which must be
    ``step(None)`` (PettingZoo's rule; another action raises its ``ValueError``) and removes it from
    ``agents``. Once ``agents`` is empty, ``step`` does nothing until ``reset``.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "human"], "name": "text_game", "is_parallelizable": False}

    def __init__(self, render_mode: str | None = None, max_cycles: int | None = None, **game_kwargs: Any):
        super().__init__()
        self._init_game(render_mode, max_cycles, game_kwargs)
        self.agents: list[str] = []

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        self._start_game(seed, options)
        self.agents = self.possible_agents[:]
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self._pending: dict[str, str | None] = {}
        self.agent_selection = self.game.to_move()[0]
        self.infos = self._infos(self.agents)

    def observe(self, agent: str) -> str:
        return self._observe_text(agent)

    def step(self, action: Any) -> None:
        if not self.agents:  # every agent is done and has had its dead step: nothing happens until reset
            return
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)  # PettingZoo's rule: a done agent is stepped with None, then removed
            return
        self._cumulative_rewards[agent] = 0.0
        self._inbox[agent] = []
        move = self.game.parse_action(agent, action)
        self._valid[agent] = move is not None
        self._pending[agent] = move if move is not None else _raw(action)
        waiting = [a for a in self.game.to_move() if a not in self._pending]
        if waiting:  # a simultaneous move: resolve when every mover has chosen
            self.rewards = dict.fromkeys(self.agents, 0.0)
            self.agent_selection = waiting[0]
            self.infos[agent] = self._info(agent)
            return
        moves = {a: (m if self._valid[a] else _Illegal(m)) for a, m in self._pending.items()}
        self._pending = {}
        self.rewards = self._play(moves)  # type: ignore[arg-type]
        over, time_up = self.game.is_over(), self._time_is_up()
        for a in self.agents:
            self.terminations[a] = over
            self.truncations[a] = time_up and not over
        self.infos = self._infos(self.agents)
        if over or time_up:
            # every player gets one last (dead) step, starting with the next one in seat order
            order = self.agents
            self.agent_selection = order[(order.index(agent) + 1) % len(order)]
        else:
            self.agent_selection = self.game.to_move()[0]
        self._accumulate_rewards()

    def close(self) -> None:
        pass


class TextGameParallelEnv(_GameEnvMixin, ParallelEnv):
    """PettingZoo Parallel env of a :class:`TextGame`.

    Each step applies the actions of the players in ``to_move`` (their ``info["to_move"]`` is True); the
    others' actions are ignored, so in a turn-based game they may send anything (conventionally ``""``).
    Once the game is over (``agents`` is empty), ``step`` changes nothing and returns five empty dicts, as
    PettingZoo's conversions do.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "human"], "name": "text_game"}

    def __init__(self, render_mode: str | None = None, max_cycles: int | None = None, **game_kwargs: Any):
        self._init_game(render_mode, max_cycles, game_kwargs)
        self.agents: list[str] = []

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self._start_game(seed, options)
        self.agents = self.possible_agents[:]
        return {a: self._observe_text(a) for a in self.agents}, self._infos(self.agents)

    def step(self, actions: Mapping[str, Any]):
        if not isinstance(actions, Mapping):
            raise TypeError(f"actions must be a dict from agent name to action, got {type(actions).__name__}")
        if not self.agents:
            # PettingZoo's convention (aec_to_parallel, parallel_api_test): with no live agent, a step changes
            # nothing and returns empty observations, rewards, terminations, truncations and infos.
            return {}, {}, {}, {}, {}
        live = self.agents[:]
        self._inbox = {a: [] for a in self.possible_agents}
        moves: dict[str, Any] = {}
        for agent in self.game.to_move():
            action = actions.get(agent)
            move = self.game.parse_action(agent, action)
            self._valid[agent] = move is not None
            moves[agent] = move if move is not None else _Illegal(_raw(action))
        for agent in live:
            if agent not in moves:
                self._valid[agent] = True
        rewards = self._play(moves)
        over, time_up = self.game.is_over(), self._time_is_up()
        observations = {a: self._observe_text(a) for a in live}
        infos = self._infos(live)
        terminations = dict.fromkeys(live, over)
        truncations = dict.fromkeys(live, time_up and not over)
        if over or time_up:
            self.agents = []
        return observations, {a: rewards[a] for a in live}, terminations, truncations, infos

    def state(self) -> str:
        return self.game.state_key()

    def close(self) -> None:
        pass


class _Illegal(str):
    """An illegal move as handed to :meth:`TextGame.apply` (see :func:`is_illegal`); holds the raw text."""


def is_illegal(move: str | None) -> bool:
    """True for the marker of an illegal or malformed move in :meth:`TextGame.apply`'s ``moves``."""
    return move is None or isinstance(move, _Illegal)


def _raw(action: Any) -> str:
    """A short printable rendering of whatever was sent, for the illegal-move message."""
    text = normalize_action(action)
    return text[:60] if text else ""
