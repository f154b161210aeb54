"""``hiergym arena``: two players of a multi-agent game against each other, trained checkpoints included.

A player is a scripted player of the game (``random``, ``expert`` and the game's own names, see
:data:`hiergym.envs.multiagent.players.PLAYERS`) or any agent SPEC of ``hiergym eval`` (``tiny:DIR``, e.g. a
run's ``OUT/checkpoint/model`` or one of its ``OUT/snapshots/iter_NNNNNN``, ``hf:PATH``, ``openai:...``,
``package.module:Name``); a checkpoint plays with the agent settings saved beside it. The games are played by the
multi-agent driver (:func:`hiergym.multiagent_driver.play_games`): game ``i`` has seed ``seed + i``, the players
swap seats every game, and an LLM player generates for all of its games at once. The report is
:class:`hiergym.envs.multiagent.evaluate.MatchResult`'s, from player A's side.
"""

from __future__ import annotations

import argparse
from typing import Any

from hiergym.envs.multiagent import GAME_ENVS, GAMES

_DESCRIPTION = (
    f"Play agent A against agent B over many seeded games of a multi-agent game ({', '.join(GAMES)}) and print "
    "win/draw/loss rates, the success rate and A's mean payoff with a 95%% confidence interval. A player is a "
    "scripted player (random, expert, the game's names) or an agent SPEC: tiny:DIR (a trained checkpoint or "
    "snapshot), hf:PATH, package.module:Name."
)


def add_arena_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("arena", help="play two players of a multi-agent game against each other",
                              description=_DESCRIPTION)
    p.add_argument("game", help=f"one of {', '.join(GAMES)}")
    p.add_argument("agent_a", help="a scripted player (random, expert, ...) or an agent SPEC (tiny:DIR, hf:PATH)")
    p.add_argument("agent_b", help="a scripted player or an agent SPEC")
    p.add_argument("--games", type=int, default=200, help="number of games (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first game (default 0)")
    p.add_argument("--split", default="train", help="task split: train, eval_in or eval_out")
    p.add_argument("--no-swap", action="store_true", help="keep agent A in the first seat")
    p.add_argument("--agent-arg", action="append", default=[], metavar="K=V",
                   help="argument of the LLM players (e.g. temperature=1.0), repeatable")
    p.set_defaults(func=run_arena)


def resolve_player(game: str, spec: str, agent_args: dict[str, Any], seed: int) -> Any:
    """A scripted player's name as it is, else the agent an agent SPEC names."""
    from hiergym.envs.multiagent.players import PLAYERS, make_player

    make_player(game, "random")  # checks the game; registers the household's players
    if spec.strip().lower() in PLAYERS[game]:
        return spec.strip().lower()
    from hiergym.agents.spec import make_agent

    agent = make_agent(spec, env_id=GAME_ENVS[game], agent_args=agent_args, seed=seed)
    agent.name = spec
    return agent


def arena(game: str, agent_a: Any, agent_b: Any, *, games: int, seed: int = 0, split: str = "train",
          swap_seats: bool = True):
    """Agent A against agent B (names or agents) over ``games`` games; a :class:`MatchResult`."""
    from hiergym.envs.multiagent.evaluate import MatchResult, game_module
    from hiergym.multiagent_driver import play_games

    if games < 1:
        raise ValueError(f"--games must be positive, got {games}")
    module = game_module(game)
    seats = list(module.raw_env().possible_agents)
    assignments, resets, a_seats = [], [], []
    for i in range(games):
        a_seat = seats[i % 2] if swap_seats else seats[0]
        b_seat = next(s for s in seats if s != a_seat)
        assignments.append({a_seat: agent_a, b_seat: agent_b})
        resets.append({"seed": seed + i, "options": {"split": split}})
        a_seats.append((a_seat, b_seat))
    played = play_games(game, assignments, resets)
    wins = draws = losses = successes = 0
    payoffs = []
    for result, (a_seat, b_seat) in zip(played.games, a_seats, strict=True):
        a, b = result.payoffs[a_seat], result.payoffs[b_seat]
        wins, draws, losses = wins + (a > b), draws + (a == b), losses + (a < b)
        successes += result.won[a_seat]
        payoffs.append(a)
    return MatchResult(game=game, agent_a=_name(agent_a), agent_b=_name(agent_b), num_games=games, wins=wins,
                       draws=draws, losses=losses, successes=successes, payoffs=payoffs)


def _name(agent: Any) -> str:
    return agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)


def run_arena(args: argparse.Namespace) -> int:
    from hiergym.registration import parse_env_args

    agent_args = parse_env_args(args.agent_arg)
    a = resolve_player(args.game, args.agent_a, agent_args, args.seed)
    b = resolve_player(args.game, args.agent_b, agent_args, args.seed)
    result = arena(args.game, a, b, games=args.games, seed=args.seed, split=args.split,
                   swap_seats=not args.no_swap)
    print(result.summary())
    return 0
