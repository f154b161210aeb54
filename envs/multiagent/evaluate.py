"""Play one agent against another over many seeded games and summarise the outcomes.

    from hiergym.envs.multiagent.evaluate import evaluate
    result = evaluate("kuhn_poker_v0", "expert", "random", num_games=1000, seed=0)
    print(result.summary())

or from the shell: ``hiergym arena kuhn_poker_v0 expert random --games 1000``.

Game ``i`` is played with ``reset(seed=seed + i)`` on the game's AEC env, and the two agents swap seats every
game (``swap_seats=True``), so first-mover advantages cancel. Agents are built-in player names (see
:data:`hiergym.envs.multiagent.players.PLAYERS`) or any object with ``act(observation, info) -> str``
(batched :mod:`hiergym.agents` agents and plain functions work too). Built-in players are seeded per game, so
an evaluation is reproducible.

Outcomes are from agent A's side: a win when A's payoff beats B's, a draw when they are equal, a loss
otherwise (for the cooperative game both always score the same, so read ``success_rate``). ``success_rate`` is
the game's own ``won`` verdict for A (tic-tac-toe: won; poker: ahead at the end; negotiation: a deal worth at
least 5 to A; household: the joint goal holds). The mean payoff of A comes with a 95% confidence interval
(normal approximation, ``mean +- 1.96 * sd / sqrt(n)``), meaningful for poker chips and negotiation points.
"""

from __future__ import annotations

import argparse
import importlib
import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from hiergym.envs.core import stable_seed
from hiergym.envs.multiagent import GAMES


@dataclass
class MatchResult:
    game: str
    agent_a: str
    agent_b: str
    num_games: int
    wins: int
    draws: int
    losses: int
    successes: int
    #: Agent A's payoff in every game, in order.
    payoffs: list[float] = field(repr=False)

    @property
    def win_rate(self) -> float:
        return self.wins / self.num_games

    @property
    def draw_rate(self) -> float:
        return self.draws / self.num_games

    @property
    def loss_rate(self) -> float:
        return self.losses / self.num_games

    @property
    def success_rate(self) -> float:
        return self.successes / self.num_games

    @property
    def mean_payoff(self) -> float:
        return sum(self.payoffs) / len(self.payoffs)

    @property
    def ci95(self) -> tuple[float, float]:
        """95% confidence interval of A's mean payoff (normal approximation)."""
        n, mean = len(self.payoffs), self.mean_payoff
        if n < 2:
            return (mean, mean)
        sd = math.sqrt(sum((x - mean) ** 2 for x in self.payoffs) / (n - 1))
        half = 1.96 * sd / math.sqrt(n)
        return (mean - half, mean + half)

    def summary(self) -> str:
        low, high = self.ci95
        return (f"{self.game}: {self.agent_a} vs {self.agent_b} over {self.num_games} games: "
                f"win {self.win_rate:.1%}, draw {self.draw_rate:.1%}, loss {self.loss_rate:.1%}; "
                f"success {self.success_rate:.1%}; mean payoff {self.mean_payoff:+.3f} "
                f"(95% CI {low:+.3f} .. {high:+.3f})")


def game_module(game: str | ModuleType) -> ModuleType:
    """The game module for a name such as ``"tictactoe_v0"`` (or the module itself)."""
    if isinstance(game, ModuleType):
        return game
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; choose one of {', '.join(GAMES)}")
    return importlib.import_module(f"hiergym.envs.multiagent.{game}")


def play_game(
    game: str | ModuleType,
    seats: dict[str, Any],
    seed: int,
    options: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> tuple[dict[str, float], dict[str, bool]]:
    """Play one game on the AEC env with ``seats`` ({player_id: agent}); returns (payoffs, won) per seat.

    ``seats`` values are built-in player names or agents (see the module docstring).
    """
    from hiergym.envs.multiagent.single_agent import make_opponent

    module = game_module(game)
    env = module.raw_env(**env_kwargs)
    env.reset(seed=seed, options=options)
    name = env.game.name
    adapters = {seat: make_opponent(name, agent) for seat, agent in seats.items()}
    for seat, adapter in adapters.items():
        bind = getattr(adapter.agent, "bind_game", None)
        if callable(bind):
            bind(env.game)
        adapter.start(env.game.task(seat), env.infos[seat], stable_seed(name, seed, seat))
    totals = dict.fromkeys(env.possible_agents, 0.0)
    for agent in env.agent_iter():
        _, reward, terminated, truncated, info = env.last(observe=False)
        totals[agent] += float(reward)
        if terminated or truncated:
            env.step(None)
            continue
        env.step(adapters[agent].act(env.observe(agent), info))
    won = {seat: env.game.won(seat) for seat in env.possible_agents}
    return totals, won


def evaluate(
    game: str | ModuleType,
    agent_a: Any,
    agent_b: Any,
    num_games: int = 100,
    seed: int = 0,
    swap_seats: bool = True,
    split: str = "train",
    **env_kwargs: Any,
) -> MatchResult:
    """Agent A against agent B over ``num_games`` seeded games of ``split`` (see the module docstring)."""
    if num_games < 1:
        raise ValueError(f"num_games must be positive, got {num_games}")
    module = game_module(game)
    seats = list(module.raw_env(**env_kwargs).possible_agents)
    wins = draws = losses = successes = 0
    payoffs: list[float] = []
    for i in range(num_games):
        a_seat = seats[i % 2] if swap_seats else seats[0]
        b_seat = next(s for s in seats if s != a_seat)
        totals, won = play_game(module, {a_seat: agent_a, b_seat: agent_b}, seed + i,
                                options={"split": split}, **env_kwargs)
        a, b = totals[a_seat], totals[b_seat]
        wins += a > b
        draws += a == b
        losses += a < b
        successes += won[a_seat]
        payoffs.append(a)
    return MatchResult(
        game=module.raw_env.metadata["name"], agent_a=_name(agent_a), agent_b=_name(agent_b),
        num_games=num_games, wins=wins, draws=draws, losses=losses, successes=successes, payoffs=payoffs,
    )


def _name(agent: Any) -> str:
    return agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)


# ---------------------------------------------------------------------------------------- CLI
def add_arena_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``hiergym arena`` subcommand."""
    p = subparsers.add_parser(
        "arena",
        help="play two players of a multi-agent game against each other",
        description=_ARENA_DESCRIPTION,
    )
    _add_arena_arguments(p)
    p.set_defaults(func=run_arena)


_ARENA_DESCRIPTION = (
    f"Play agent A against agent B over many seeded games of a multi-agent game ({', '.join(GAMES)}) and "
    "print win/draw/loss rates, the success rate and A's mean payoff with a 95%% confidence interval."
)


def _add_arena_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("game", help=f"one of {', '.join(GAMES)}")
    p.add_argument("agent_a", help="a built-in player: random, expert, or the game's own names")
    p.add_argument("agent_b", help="a built-in player")
    p.add_argument("--games", type=int, default=200, help="number of games (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first game (default 0)")
    p.add_argument("--split", default="train", help="task split: train, eval_in or eval_out")
    p.add_argument("--no-swap", action="store_true", help="keep agent A in the first seat")


def run_arena(args: argparse.Namespace) -> int:
    result = evaluate(args.game, args.agent_a, args.agent_b, num_games=args.games, seed=args.seed,
                      swap_seats=not args.no_swap, split=args.split)
    print(result.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hiergym.envs.multiagent.evaluate",
                                     description=_ARENA_DESCRIPTION)
    _add_arena_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_arena(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2 and the message
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
