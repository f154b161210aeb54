"""Gymnasium views of the two-player games: play one seat against a fixed opponent.

Registered as ``hiergym/TicTacToe-v0``, ``hiergym/KuhnPoker-v0``, ``hiergym/Negotiation-v0`` and
``hiergym/HouseholdCoop-v0``; each follows the single-agent text contract (docs/environments.md), so
single-agent trainers, evaluators and ``hiergym play`` use them directly::

    env = gymnasium.make("hiergym/TicTacToe-v0", opponent="expert")

**Opponent** (``opponent=``): a built-in player name (``"random"``, ``"expert"`` and the game's own names, see
:data:`hiergym.envs.multiagent.players.PLAYERS`), or any agent: an object with ``act(observation, info) -> str``
(and optionally ``reset(task)``), a batched :mod:`hiergym.agents` agent with ``act(observations, infos)``, or a
function ``f(observation, info) -> str``. It sees only its own observation and info. Built-in players are
re-seeded from the task at every reset, so a seed fixes the whole game, the opponent's choices included.

**Seat** (``seat=``): ``"player_0"`` or ``"player_1"`` to always play that seat, or None (default) to draw
the seat from the task, so the agent learns both.

**Invalid actions**: the contract wins over the game's forfeit rule here. A malformed or illegal action of the
*agent* is answered "Nothing happens.", flagged ``action_valid=False`` and changes nothing (the opponent does
not move); it still counts as a step for the time limit. An illegal move of the *opponent* follows the game's
rule (a forfeit in tic-tac-toe and poker, a lost turn in negotiation), which the agent is told about.

**Reward**: the agent's payoff changes in the underlying game (opponent moves included). ``info["won"]`` is the
game's own verdict for the agent's seat.

**Episode end**: terminated when the game is over, truncated when its own time limit runs out (the household's
``max_rounds``). Every step after that, until ``reset``, repeats the terminal observation with reward 0 and
``action_valid=False`` (the contract's rule, :class:`~hiergym.envs.core.EpisodeEnd`).

**Expert**: ``expert_plan()`` simulates the game from a deep copy of this env, opponent and its generator
included, so it knows exactly how a scripted opponent will answer each move. Tic-tac-toe and Kuhn poker search
that simulated game tree for the best line (the earliest win; per hand in poker); negotiation proposes the
division best for the agent that the simulated opponent accepts; the household task follows the privileged
expert for the agent's part of the goal. It returns None when no winning line exists (e.g. against perfect
tic-tac-toe, which cannot be beaten) or when the opponent cannot be deep-copied.
"""

from __future__ import annotations

import copy
import inspect
from types import ModuleType
from typing import Any, ClassVar

import gymnasium as gym

from hiergym.envs.core import (
    NOTHING_HAPPENS,
    EpisodeEnd,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.envs.multiagent import household_coop_v0, kuhn_poker_v0, negotiation_v0, players, tictactoe_v0
from hiergym.envs.multiagent.base import copy_sharing


# ---------------------------------------------------------------------------------------- opponents
class _OpponentAdapter:
    """Gives any agent-like object the ``act(observation, info) -> str`` / ``start(task, info)`` calls."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.batched = _is_batched(agent)
        self.name = getattr(agent, "name", type(agent).__name__)

    def start(self, task: str, info: dict[str, Any], seed: int) -> None:
        if isinstance(self.agent, players.ScriptedPlayer):
            self.agent.seed(seed)
        reset = getattr(self.agent, "reset", None)
        if not callable(reset) or isinstance(self.agent, players.ScriptedPlayer):
            return
        if self.batched:
            reset([task], [info])
        elif _positional_count(reset) >= 2:
            reset(task, info)
        else:
            reset(task)

    def act(self, observation: str, info: dict[str, Any]) -> Any:
        if self.batched:
            out = self.agent.act([observation], [{**info, "episode_index": 0}])[0]
        elif callable(getattr(self.agent, "act", None)):
            out = self.agent.act(observation, info)
        else:
            out = self.agent(observation, info) if _positional_count(self.agent) >= 2 else self.agent(observation)
        return getattr(out, "action", out)  # a hiergym.agents Decision carries .action


def _positional_count(function: Any) -> int:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _is_batched(agent: Any) -> bool:
    act = getattr(agent, "act", None)
    if not callable(act):
        return False
    if getattr(agent, "batched", None) is not None:
        return bool(agent.batched)
    try:
        names = list(inspect.signature(act).parameters)
    except (TypeError, ValueError):
        return False
    return bool(names) and names[0] in {"observations", "obs_batch", "batch"}


def make_opponent(game: str, opponent: Any) -> _OpponentAdapter:
    """An opponent from a built-in player name or any agent-like object (see the module docstring)."""
    if isinstance(opponent, str):
        return _OpponentAdapter(players.make_player(game, opponent))
    if callable(getattr(opponent, "act", None)) or callable(opponent):
        return _OpponentAdapter(opponent)
    raise TypeError(
        f"opponent must be a player name ({', '.join(sorted(players.PLAYERS.get(game, {})))}) or an agent with "
        f"act(observation, info) -> str, got {opponent!r}"
    )


# ---------------------------------------------------------------------------------------- the view
class TwoPlayerGameEnv(EpisodeEnd, gym.Env):
    """One seat of a two-player :class:`~hiergym.envs.multiagent.base.TextGame` against an opponent."""

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}
    #: The game module (``tictactoe_v0``, ...) and the id used to address tasks.
    game_module: ClassVar[ModuleType]
    env_id: ClassVar[str]
    default_opponent: ClassVar[str] = "random"

    def __init__(
        self,
        opponent: Any = None,
        seat: str | None = None,
        render_mode: str | None = None,
        **game_kwargs: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.game_env = self.game_module.raw_env(**game_kwargs)
        if seat is not None and seat not in self.game_env.possible_agents:
            raise ValueError(f"seat must be one of {self.game_env.possible_agents} or None, got {seat!r}")
        self.fixed_seat = seat
        self.game_name = self.game_env.game.name
        self.opponent = make_opponent(self.game_name, self.default_opponent if opponent is None else opponent)
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self.agent = seat or self.game_env.possible_agents[0]
        self._valid = True
        self._next_opponent: _OpponentAdapter | None = None

    @property
    def game(self):
        return self.game_env.game

    def set_opponent(self, opponent: Any) -> None:
        """Play against ``opponent`` (a player name or an agent) from the next ``reset`` on, e.g. a newer
        snapshot of the learner in self-play."""
        self._next_opponent = make_opponent(self.game_name, opponent)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy_sharing(self, memo, ("observation_space", "action_space"))

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._next_opponent is not None:
            self.opponent, self._next_opponent = self._next_opponent, None
        split, task_id, task_rng = select_task(self.env_id, self.np_random, options)
        game_seed, opponent_seed = (int(x) for x in task_rng.integers(0, 2**31 - 1, size=2))
        seats = self.game_env.possible_agents
        self.agent = self.fixed_seat or seats[int(task_rng.integers(len(seats)))]
        game_options: dict[str, Any] = {"split": split}
        if task_id is not None:
            game_options["task_id"] = task_id
        self.game_env.reset(seed=game_seed, options=game_options)
        self._prepare_opponent(opponent_seed)
        self._valid = True
        self._advance()
        return self._observation(), self._info()

    def _prepare_opponent(self, seed: int) -> None:
        other = self.other_seat
        bind = getattr(self.opponent.agent, "bind_game", None)
        if callable(bind):  # a privileged scripted player reads the true game
            bind(self.game)
        self.opponent.start(self.game.task(other), self.game_env.infos[other], seed)

    def step(self, action: Any):
        if self.game.is_over() or self.game.truncated():
            self._valid = False
            return self._observation(), 0.0, self.game.is_over(), self.game.truncated(), self._info()
        move = self.game.parse_action(self.agent, action)
        if move is None:
            self._valid = False
            text = f"{NOTHING_HAPPENS}\n\n{self.game.view(self.agent)}"
            return text, 0.0, False, False, self._info()
        self._valid = True
        before = self.game.scores()[self.agent]
        self.game_env.step(move)
        self._advance()
        reward = float(self.game.scores()[self.agent] - before)
        return self._observation(), reward, self.game.is_over(), self._truncated(), self._info()

    def render(self) -> str | None:
        text = self.game.render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # ------------------------------------------------------------------ internals
    @property
    def other_seat(self) -> str:
        return next(p for p in self.game_env.possible_agents if p != self.agent)

    def _truncated(self) -> bool:
        return self.game.truncated() and not self.game.is_over()

    def _advance(self) -> None:
        """Let the opponent act until it is the agent's turn or the game is over."""
        env = self.game_env
        while not self.game.is_over() and not self.game.truncated() and env.agent_selection != self.agent:
            other = env.agent_selection
            env.step(self.opponent.act(env.observe(other), env.infos[other]))

    def _observation(self) -> str:
        return str(self.game_env.observe(self.agent))

    def _info(self) -> dict[str, Any]:
        info = self.game_env._info(self.agent)
        info["action_valid"] = self._valid
        info["seat"] = self.agent
        info["opponent"] = self.opponent.name
        return info

    # ------------------------------------------------------------------ expert
    def expert_plan(self) -> list[str] | None:
        """Actions that win from the current state against this opponent (see the module docstring)."""
        if self.game.is_over():
            return None
        try:
            sim = copy.deepcopy(self)
        except Exception:  # noqa: BLE001 - an opponent that cannot be copied cannot be simulated
            return None
        plan: list[str] = []
        while not sim.game.is_over() and not sim.game.truncated():
            line = sim._expert_line()
            if not line:
                return None
            for action in line:
                sim.step(action)
                plan.append(action)
        return plan if sim.game.won(sim.agent) else None

    def _expert_line(self) -> list[str]:
        """The next actions of the expert (a whole segment of the game), from this (simulated) state."""
        raise NotImplementedError

    def _segment(self) -> Any:
        """What identifies the current segment for :meth:`_search` (a hand in poker, the game otherwise)."""
        return 0

    def _search(self, best_possible: float) -> tuple[float, int, list[str]]:
        """Best (payoff at the end of the segment, -length, actions) by exhaustive search of the simulated game.

        The opponent's replies come from deep copies of this env, so they are exactly what it will play.
        """
        segment, best = self._segment(), (-float("inf"), 0, [])
        for action in self.game.legal_actions(self.agent):
            child = copy.deepcopy(self)
            child.step(action)
            if child.game.is_over() or child._segment() != segment:
                result = (child.game.scores()[self.agent], -1, [action])
            else:
                value, neg_len, line = child._search(best_possible)
                result = (value, neg_len - 1, [action, *line])
            if result[:2] > best[:2]:
                best = result
            if best[0] >= best_possible:  # nothing beats it: stop searching
                break
        return best


class TicTacToeEnv(TwoPlayerGameEnv):
    """Tic-tac-toe against an opponent (``hiergym/TicTacToe-v0``).

    Observation, action and illegal moves as in :mod:`hiergym.envs.multiagent.tictactoe_v0` (the agent's
    illegal moves are rejected, not forfeits). Reward +1 win, -1 loss, 0 draw, at the end. Episode ends with
    the game. The seat (X moves first, or O) is drawn per task unless ``seat`` is given. Default opponent:
    ``"random"`` (``"expert"`` is perfect play, which the agent can at best draw). Arguments: ``opponent``,
    ``seat``, ``render_mode``.
    """

    game_module = tictactoe_v0
    env_id = "hiergym/TicTacToe-v0"

    def _expert_line(self) -> list[str]:
        value, _, line = self._search(best_possible=1.0)
        return line if value > 0 else []


class KuhnPokerEnv(TwoPlayerGameEnv):
    """Kuhn poker against an opponent (``hiergym/KuhnPoker-v0``): a match of ``num_hands`` hands.

    Observation, action and rules as in :mod:`hiergym.envs.multiagent.kuhn_poker_v0` (the agent's illegal
    actions are rejected, not folds). Reward: the chips won or lost in each hand. ``won``: the match ends with
    the agent ahead. The seats alternate who acts first each hand. Default opponent ``"random"``; ``"expert"``
    is the equilibrium strategy (``alpha=1/6``), against which no strategy wins in expectation over both seats.
    Arguments: ``opponent``, ``seat``, ``num_hands`` (default 10), ``render_mode``.
    """

    game_module = kuhn_poker_v0
    env_id = "hiergym/KuhnPoker-v0"

    def __init__(self, opponent: Any = None, seat: str | None = None, render_mode: str | None = None,
                 num_hands: int = 10):
        super().__init__(opponent=opponent, seat=seat, render_mode=render_mode, num_hands=num_hands)

    def _segment(self) -> Any:
        return self.game.hand

    def _expert_line(self) -> list[str]:
        return self._search(best_possible=2.0 + self.game.scores()[self.agent])[2]


class NegotiationEnv(TwoPlayerGameEnv):
    """Negotiation against an opponent (``hiergym/Negotiation-v0``).

    Observation, action and rules as in :mod:`hiergym.envs.multiagent.negotiation_v0` (the agent's illegal
    actions are rejected, not lost turns). Reward: the agent's value of its share when a deal is made (0-10),
    else 0. ``won``: a deal worth at least 5 to the agent. Default opponent ``"expert"`` (the time-dependent
    tactic with ``e=0.5``, floor 5). Arguments: ``opponent``, ``seat``, ``max_turns`` (default 10),
    ``render_mode``.
    """

    game_module = negotiation_v0
    env_id = "hiergym/Negotiation-v0"
    default_opponent = "expert"

    def __init__(self, opponent: Any = None, seat: str | None = None, render_mode: str | None = None,
                 max_turns: int = 10):
        super().__init__(opponent=opponent, seat=seat, render_mode=render_mode, max_turns=max_turns)

    def _expert_line(self) -> list[str]:
        game, me = self.game, self.agent
        values = game.values[me]
        proposals = [a for a in game.legal_actions(me) if a.startswith("propose[")]
        by_value = sorted(proposals, key=lambda a: -negotiation_v0.value_of(game.parse_share(a), values))
        for proposal in by_value:
            if negotiation_v0.value_of(game.parse_share(proposal), values) < negotiation_v0.WIN_VALUE:
                break
            child = copy.deepcopy(self)
            child.step(proposal)
            if child.game.won(me):
                return [proposal]
        offer = game.offer_for(me)
        if offer is not None and negotiation_v0.ACCEPT in game.legal_actions(me):
            if negotiation_v0.value_of(offer, values) >= negotiation_v0.WIN_VALUE:
                return [negotiation_v0.ACCEPT]
        # nothing acceptable yet: hold out with the agent's best division and let time pass
        return by_value[:1]


class HouseholdCoopEnv(TwoPlayerGameEnv):
    """The cooperative household task with a scripted teammate (``hiergym/HouseholdCoop-v0``).

    Observation, action and world as in :mod:`hiergym.envs.multiagent.household_coop_v0`; each step is one
    round (the agent's action and the teammate's). The agent's impossible commands are rejected ("Nothing
    happens.", no round passes). Reward +1 when the joint goal holds. ``won``: the joint goal holds. Truncated
    after ``max_rounds`` rounds. Default teammate ``"expert"`` (privileged: it does its own part of the goal,
    then helps); with ``"random"`` the agent must do everything. Arguments: ``opponent`` (the teammate),
    ``seat``, ``max_rounds`` (default 30), ``goal_visibility`` (``"shared"``/``"split"``), ``world``
    (``"builtin"``/``"alfworld"``), ``render_mode``.
    """

    game_module = household_coop_v0
    env_id = "hiergym/HouseholdCoop-v0"
    default_opponent = "expert"

    def __init__(self, opponent: Any = None, seat: str | None = None, render_mode: str | None = None,
                 max_rounds: int = 30, goal_visibility: str = "shared", world: str = "builtin"):
        super().__init__(opponent=opponent, seat=seat, render_mode=render_mode, max_rounds=max_rounds,
                         goal_visibility=goal_visibility, world=world)

    def _expert_line(self) -> list[str]:
        expert = household_coop_v0.HouseholdExpert()
        expert.bind_game(self.game)
        action = expert.act(self._observation(), self._info())
        return [action]
