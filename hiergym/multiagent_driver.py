"""The multi-agent episode driver: many games of a PettingZoo AEC text game, each seat played by its own agent.

    played = play_games("tictactoe_v0", seats=[{"player_0": learner, "player_1": "expert"}, ...],
                        resets=[{"seed": 0}, ...], group_ids=[0, ...])
    played.records        # StepRecord rows, one trajectory per (game, seat)
    played.games          # one GameResult per game: payoffs, won, moves per seat

Every game ``k`` is ``module.raw_env(**game_kwargs)`` reset with ``resets[k]``; its seats are played by the
agents of ``seats[k]``: a built-in player name (``"random"``, ``"expert"``, the game's own names: a fresh
player per game and seat, seeded from the game's seed: part of the task, as an env's opponent is), an object
with ``act(observation, info) -> str`` (driven one call per move), or a batched :mod:`hiergym.agents` agent
(``act(observations, infos)``). The same
batched agent object playing many (game, seat) pairs is reset once with all of them and asked for the moves
of all of them in one ``act`` call per round, so one policy generates for every game (and for both seats in
self-play) in one batch.

**Sampling streams.** A batched agent is reset with ``info["episode_seed"]`` (what keys an LLM agent's
sampling) and an act-object is started with it as its seed: the game's seed and seat, and the game's copy index
among the games of its group with that seed (``group_ids``), so the G same-seed copies of a task sample G
different games, as the single-agent rollout's copies do; the first copy keeps the key of a lone game
(evaluation games, whose seeds all differ, are unaffected). One act-object in several seats keeps one memory:
a stateful player needs an instance per seat (a player name gives each seat its own).

**The trajectory contract per seat.** Each seat's own moves form its trajectory: ``traj_id = k * S + s`` (S
seats, ``s`` the seat's index), ``group_id = group_ids[k] * S + s`` (the same seat of the G same-seed copies
of a task form a group, so the two seats of a zero-sum game are never each other's baseline), ``role = s``,
``step`` the seat's own move index, ``anchor`` the game's ``state_key`` before the move. A seat's reward for
a move is the change of its score from that move until its next one (the opponent's reply included: a move
that lets the opponent win is the move that lost), minus ``invalid_action_penalty`` when the move was
illegal; the last move of each seat is ``done``. Rewards a seat receives before its first move (an opponent
forfeit) count in the game's payoffs but belong to no row.

The driver sits beside :mod:`hiergym.driver` (above envs and agents, below training and evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hiergym.agents.base import EPISODE_INDEX, EPISODE_SEED, Decision, as_decision
from hiergym.driver import PlayedStep, Transition, step_records
from hiergym.envs.core import stable_seed
from hiergym.records import StepRecord


@dataclass
class GameResult:
    """One played game."""

    index: int
    seed: int | None
    #: Each seat's total payoff (the sum of its rewards).
    payoffs: dict[str, float]
    #: The game's own verdict per seat (``info["won"]``).
    won: dict[str, bool]
    #: Moves made per seat.
    moves: dict[str, int]
    #: Illegal or unparseable moves per seat.
    invalid: dict[str, int]
    truncated: bool = False
    #: The game's ``outcome`` attribute where it has one (negotiation: "deal", "walk away", "deadline").
    outcome: str | None = None


@dataclass
class PlayedGames:
    games: list[GameResult]
    records: list[StepRecord] = field(default_factory=list)
    #: For every record, the key of the agent that played it (its position in ``agents``).
    record_agents: list[int] = field(default_factory=list)
    #: The distinct agents, in order of first appearance (names for built-in players).
    agents: list[Any] = field(default_factory=list)
    #: Every move as (agent key, the agent's Decision), in the order played.
    moves: list[tuple[int, Decision]] = field(default_factory=list)

    def decisions(self, key: int) -> list[Decision]:
        """The decisions of agent ``agents[key]``, in the order played (their generations carry the texts)."""
        return [decision for k, decision in self.moves if k == key]


@dataclass
class _Move:
    game: int
    seat: str
    step: int
    observation: str
    anchor: str
    decision: Decision
    info: dict[str, Any]
    reward: float = 0.0
    invalid: bool = False
    done: bool = False
    truncated: bool = False


def _game_module(game: Any) -> Any:
    from hiergym.envs.multiagent.evaluate import game_module

    return game_module(game)


def play_games(
    game: Any,
    seats: Sequence[dict[str, Any]],
    resets: Sequence[dict[str, Any]],
    *,
    group_ids: Sequence[int] | None = None,
    game_kwargs: dict[str, Any] | None = None,
    invalid_action_penalty: float = 0.0,
    max_moves: int | None = None,
) -> PlayedGames:
    """Play every game to its end (see the module docstring); ``max_moves`` truncates a game after that many
    moves in all."""
    from hiergym.envs.multiagent.players import make_player
    from hiergym.envs.multiagent.single_agent import make_opponent

    if len(seats) != len(resets):
        raise ValueError(f"{len(seats)} seat assignments for {len(resets)} resets")
    module = _game_module(game)
    envs = [module.raw_env(**(game_kwargs or {})) for _ in seats]
    name = module.raw_env.metadata["name"]
    group_ids = list(group_ids) if group_ids is not None else list(range(len(seats)))
    for env, reset in zip(envs, resets, strict=True):
        env.reset(**reset)
    seat_names = list(envs[0].possible_agents) if envs else []
    num_seats = len(seat_names)

    # One entry per distinct agent; built-in names are one agent each but get a fresh player per (game, seat).
    agents: list[Any] = []
    keys: dict[tuple[str, Any], int] = {}
    batched_members: dict[int, list[tuple[int, str]]] = {}
    players: dict[tuple[int, str], Any] = {}  # (game, seat) -> adapter of a per-episode player
    seat_agent: dict[tuple[int, str], int] = {}
    copies: dict[tuple[Any, Any], int] = {}
    sample_seeds: dict[tuple[int, str], int] = {}
    for k, assignment in enumerate(seats):
        seed = resets[k].get("seed")
        copy = copies[(group_ids[k], seed)] = copies.get((group_ids[k], seed), -1) + 1
        if set(assignment) != set(seat_names):
            raise ValueError(f"game {k}: seats {sorted(assignment)} do not match the game's {seat_names}")
        for seat in seat_names:
            agent = assignment[seat]
            ident = ("name", agent) if isinstance(agent, str) else ("object", id(agent))
            if ident not in keys:
                keys[ident] = len(agents)
                agents.append(agent)
            key = keys[ident]
            seat_agent[(k, seat)] = key
            episode_seed = stable_seed(name, seed, seat)
            if isinstance(agent, str):
                adapter = make_opponent(name, make_player(name, agent, seed=episode_seed))
            else:
                adapter = make_opponent(name, agent)
                if copy:
                    episode_seed = stable_seed(name, seed, seat, "copy", copy)
            sample_seeds[(k, seat)] = episode_seed
            bind = getattr(adapter.agent, "bind_game", None)
            if callable(bind):  # a privileged scripted player reads the true game
                bind(envs[k].game)
            if adapter.batched:
                batched_members.setdefault(key, []).append((k, seat))
            else:
                adapter.start(envs[k].game.task(seat), envs[k].infos[seat], episode_seed)
                players[(k, seat)] = adapter
    # Batched agents: one reset with every (game, seat) they play; episode_index = position in that list.
    local_index: dict[tuple[int, str], int] = {}
    for key, members in batched_members.items():
        for i, member in enumerate(members):
            local_index[member] = i
        infos = [{**envs[k].infos[s], EPISODE_SEED: sample_seeds[(k, s)]} for k, s in members]
        agents[key].reset([envs[k].game.task(s) for k, s in members], infos)

    moves: list[_Move] = []
    last_move: dict[tuple[int, str], _Move] = {}
    counts = {(k, s): 0 for k in range(len(envs)) for s in seat_names}
    payoffs = [dict.fromkeys(seat_names, 0.0) for _ in envs]
    invalid = [dict.fromkeys(seat_names, 0) for _ in envs]
    truncated = [False] * len(envs)
    running = [k for k, env in enumerate(envs) if not _over(env)]
    total_moves = [0] * len(envs)
    while running:
        # Who moves now in every running game, asked per agent: batched agents in one call.
        asks: dict[int, list[int]] = {}
        for k in running:
            asks.setdefault(seat_agent[(k, envs[k].agent_selection)], []).append(k)
        chosen: dict[int, tuple[str, str, dict[str, Any], Decision]] = {}
        for key, games in asks.items():
            views = []
            for k in games:
                seat = envs[k].agent_selection
                views.append((k, seat, str(envs[k].observe(seat)), dict(envs[k].infos[seat])))
            if key in batched_members:
                outputs = agents[key].act([v[2] for v in views],
                                          [{**v[3], EPISODE_INDEX: local_index[(v[0], v[1])]} for v in views])
                if not isinstance(outputs, list | tuple) or len(outputs) != len(views):
                    raise TypeError(f"agent {agents[key]!r} returned {outputs!r:.80} for {len(views)} moves")
            else:
                outputs = [players[(k, seat)].act(obs, info) for k, seat, obs, info in views]
            for (k, seat, obs, info), output in zip(views, outputs, strict=True):
                decision = output if isinstance(output, Decision) else as_decision(output)
                chosen[k] = (seat, obs, info, decision)
        for k in list(running):
            seat, obs, info, decision = chosen[k]
            env = envs[k]
            before = env.game.scores()
            env.step(decision.action)
            after = env.game.scores()
            move = _Move(k, seat, counts[(k, seat)], obs, str(info.get("state_key", "")), decision, info)
            counts[(k, seat)] += 1
            total_moves[k] += 1
            move.invalid = not bool(env.infos[seat].get("action_valid", True)) or not decision.parse_ok
            invalid[k][seat] += move.invalid
            if move.invalid:
                move.reward -= invalid_action_penalty
            moves.append(move)
            last_move[(k, seat)] = move
            for s in seat_names:
                delta = float(after[s] - before[s])
                payoffs[k][s] += delta
                if (k, s) in last_move:
                    last_move[(k, s)].reward += delta
            capped = max_moves is not None and total_moves[k] >= max_moves
            if _over(env) or capped:
                truncated[k] = bool(capped and not env.game.is_over()) or any(env.truncations.values())
                for s in seat_names:
                    if (k, s) in last_move:
                        last_move[(k, s)].done = True
                        last_move[(k, s)].truncated = truncated[k]
                running.remove(k)

    games = [GameResult(index=k, seed=resets[k].get("seed"), payoffs=payoffs[k],
                        won={s: bool(env.game.won(s)) for s in seat_names},
                        moves={s: counts[(k, s)] for s in seat_names}, invalid=invalid[k], truncated=truncated[k],
                        outcome=getattr(env.game, "outcome", None))
             for k, env in enumerate(envs)]
    records: list[StepRecord] = []
    record_agents: list[int] = []
    for move in moves:
        s = seat_names.index(move.seat)
        transition = Transition(
            prev_observation=move.observation, observation="", reward=move.reward,
            terminated=move.done and not move.truncated, truncated=move.truncated, info=move.info,
            invalid=move.invalid, won=games[move.game].won[move.seat],
            group_id=group_ids[move.game] * num_seats + s, traj_id=move.game * num_seats + s, step=move.step,
            anchor=move.anchor)
        rows = step_records([PlayedStep(move.game, move.decision, transition, move.reward)])
        for row in rows:
            row.role = s
        records += rows
        record_agents += [seat_agent[(move.game, move.seat)]] * len(rows)
    return PlayedGames(games=games, records=records, record_agents=record_agents, agents=agents,
                       moves=[(seat_agent[(m.game, m.seat)], m.decision) for m in moves])


def _over(env: Any) -> bool:
    """The game has ended (every seat terminated or truncated) or has no live seat."""
    if not env.agents:
        return True
    return all(env.terminations[a] or env.truncations[a] for a in env.agents)
