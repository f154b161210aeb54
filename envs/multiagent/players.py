"""Scripted players for the multi-agent games: opponents, partners and baselines.

Every player has ``act(observation, info) -> str`` (the single-episode agent protocol of
:mod:`hiergym.agents`), reads only what its own ``info`` tells it (the game's structured extras: the board,
its card, its values, ...), and draws any randomness from its own generator, which ``seed(seed)`` resets, so
a seeded game against a scripted player is reproducible.

- :class:`RandomPlayer`: uniform over ``info["admissible_actions"]`` (any game).
- :class:`TicTacToeExpert`: perfect play by minimax; picks at random among the optimal moves, winning as fast
  and losing as slowly as possible. It never loses. ``"ordered"`` (:class:`TicTacToeOrderedExpert`) plays
  just as well but deterministically: the first optimal move in a fixed order (centre, corners, edges), a
  teacher whose moves are a function of the board (behaviour cloning, ``tictactoe-selfplay``).
- :class:`KuhnEquilibriumPlayer`: Kuhn's Nash-equilibrium family with parameter ``alpha`` in [0, 1/3]; its
  exploitability is zero (``kuhn_poker_v0.exploitability``).
- :class:`TimeDependentNegotiator`: Faratin et al.'s time-dependent tactic: its aspiration falls from the
  best deal to ``floor`` over the turns (``e < 1``: Boulware, concedes late; ``e > 1``: Conceder). It accepts
  an offer worth its aspiration and otherwise proposes the least greedy division that meets it.
- The household partner lives with its game (:class:`hiergym.envs.multiagent.household_coop_v0.HouseholdExpert`).

:func:`make_player` builds one by name (``"random"``, ``"expert"`` and the game's own names).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hiergym.envs.multiagent import negotiation_v0, tictactoe_v0


class ScriptedPlayer:
    """Base of the built-in players: a seeded generator and the ``act`` protocol."""

    #: Short name shown by evaluations.
    name = "scripted"

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: str, info: dict[str, Any]) -> str:
        raise NotImplementedError

    def _choose(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))] if options else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomPlayer(ScriptedPlayer):
    """Uniformly random over ``info["admissible_actions"]``; ``""`` when it has none (not its turn)."""

    name = "random"

    def act(self, observation: str, info: dict[str, Any]) -> str:
        return self._choose(list(info.get("admissible_actions") or []))


class TicTacToeExpert(ScriptedPlayer):
    """Perfect tic-tac-toe (minimax over the board in ``info["board"]``)."""

    name = "expert"

    def act(self, observation: str, info: dict[str, Any]) -> str:
        board = info["board"]
        if tictactoe_v0.winner_mark(board) or "." not in board:
            return ""
        return self._choose(tictactoe_v0.optimal_moves(board))


class TicTacToeOrderedExpert(TicTacToeExpert):
    """Perfect tic-tac-toe without randomness: the first optimal move in :attr:`ORDER` (centre, corners,
    edges). A clone of the random tie-break can at best match the expert's own randomness (and a tiny model
    cloned on it did not learn the board at all); this one's moves are a function of the board."""

    name = "ordered"
    ORDER = ("b2", "a1", "c1", "a3", "c3", "b1", "a2", "c2", "b3")

    def _choose(self, options: list[str]) -> str:
        return min(options, key=self.ORDER.index, default="")


class KuhnEquilibriumPlayer(ScriptedPlayer):
    """Kuhn poker's Nash equilibrium family (Kuhn, 1950).

    First to act, with ``alpha`` in [0, 1/3]: Jack bets with probability ``alpha`` (else checks, and folds to a
    bet); Queen checks and calls a bet with probability ``alpha + 1/3``; King bets with probability
    ``3 * alpha`` (else checks and calls). Second to act: facing a bet, King calls, Queen calls with probability
    1/3, Jack folds; after a check, King bets, Queen checks, Jack bets (bluffs) with probability 1/3. The first
    player's expected payoff is -1/18 per hand for every ``alpha``.
    """

    name = "equilibrium"

    def __init__(self, alpha: float = 1 / 6, seed: int | None = None) -> None:
        if not 0 <= alpha <= 1 / 3:
            raise ValueError(f"alpha must lie in [0, 1/3] for an equilibrium, got {alpha}")
        super().__init__(seed)
        self.alpha = alpha

    def strategy(self, card: str, history: str, first_to_act: bool) -> dict[str, float]:
        """Action probabilities in the information set (own card, history of the hand, seat)."""
        a = self.alpha
        if first_to_act:
            if history == "":
                bet = {"J": a, "Q": 0.0, "K": 3 * a}[card]
                return {"bet": bet, "check": 1 - bet}
            if history == "cb":
                call = {"J": 0.0, "Q": a + 1 / 3, "K": 1.0}[card]
                return {"call": call, "fold": 1 - call}
        else:
            if history == "b":
                call = {"J": 0.0, "Q": 1 / 3, "K": 1.0}[card]
                return {"call": call, "fold": 1 - call}
            if history == "c":
                bet = {"J": 1 / 3, "Q": 0.0, "K": 1.0}[card]
                return {"bet": bet, "check": 1 - bet}
        raise ValueError(f"no decision for history {history!r} (first_to_act={first_to_act})")

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not info.get("to_move", True) or "card" not in info:
            return ""
        probs = self.strategy(info["card"], info["history"], info["first_to_act"])
        actions = sorted(probs)
        return actions[int(self.rng.choice(len(actions), p=[probs[x] for x in actions]))]


class TimeDependentNegotiator(ScriptedPlayer):
    """Time-dependent negotiation tactic (Faratin, Sierra & Jennings, 1998).

    Aspiration at turn ``t`` of ``T``: ``best - (best - floor) * (t / (T - 1)) ** (1 / e)``. It accepts the offer
    on the table when it is worth at least the aspiration (or, on its last turn, at least ``floor``), and
    otherwise proposes the division worth the least to itself among those meeting the aspiration, leaving the
    most items to the other player (it does not know the other's values).
    """

    name = "time-dependent"

    def __init__(self, e: float = 0.5, floor: int = negotiation_v0.WIN_VALUE, seed: int | None = None) -> None:
        if e <= 0:
            raise ValueError(f"e must be positive, got {e}")
        super().__init__(seed)
        self.e, self.floor = e, floor

    def aspiration(self, turn: int, max_turns: int, best: int) -> float:
        progress = min(1.0, turn / max(1, max_turns - 1))
        return best - (best - self.floor) * progress ** (1 / self.e)

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not info.get("to_move", True):
            return ""
        pool, values = info["pool"], info["values"]
        turn, max_turns = info["turn"], info["max_turns"]
        shares = negotiation_v0.all_shares(pool)
        best = max(negotiation_v0.value_of(s, values) for s in shares)
        target = self.aspiration(turn, max_turns, best)
        offer = info.get("offer")
        if offer is not None and negotiation_v0.ACCEPT in info.get("admissible_actions", []):
            worth = negotiation_v0.value_of(offer, values)
            last_turn = turn >= max_turns - 2
            if worth >= target or (last_turn and worth >= self.floor):
                return negotiation_v0.ACCEPT
        meeting = [s for s in shares if negotiation_v0.value_of(s, values) >= target]
        meeting.sort(key=lambda s: (negotiation_v0.value_of(s, values), sum(s.values())))
        return negotiation_v0.format_proposal(meeting[0], tuple(pool))


#: Builders by game and name; ``"expert"`` is each game's strongest scripted player.
PLAYERS: dict[str, dict[str, Any]] = {
    "tictactoe_v0": {"random": RandomPlayer, "expert": TicTacToeExpert, "minimax": TicTacToeExpert,
                     "ordered": TicTacToeOrderedExpert},
    "kuhn_poker_v0": {"random": RandomPlayer, "expert": KuhnEquilibriumPlayer,
                      "equilibrium": KuhnEquilibriumPlayer},
    "negotiation_v0": {
        "random": RandomPlayer,
        "expert": TimeDependentNegotiator,
        "boulware": lambda seed=None: TimeDependentNegotiator(e=0.2, seed=seed),
        "linear": lambda seed=None: TimeDependentNegotiator(e=1.0, seed=seed),
        "conceder": lambda seed=None: TimeDependentNegotiator(e=3.0, seed=seed),
    },
}


def register_players(game: str, builders: dict[str, Any]) -> None:
    """Add a game's named players (used by games whose players live with the game)."""
    PLAYERS.setdefault(game, {}).update(builders)


def make_player(game: str, name: str, seed: int | None = None) -> ScriptedPlayer:
    """A scripted player of ``game`` (a module name such as ``"tictactoe_v0"``) by name.

    Raises ``ValueError`` naming the choices for an unknown game or player.
    """
    if game == "household_coop_v0":  # registers its players on import
        from hiergym.envs.multiagent import household_coop_v0  # noqa: F401
    if game not in PLAYERS:
        raise ValueError(f"unknown game {game!r}; choose one of {', '.join(sorted(PLAYERS))}")
    builders = PLAYERS[game]
    key = name.strip().lower()
    if key not in builders:
        raise ValueError(f"unknown player {name!r} for {game}; choose one of {', '.join(sorted(builders))}")
    return builders[key](seed=seed)
