"""The multi-agent driver's per-seat trajectories (hiergym/multiagent_driver.py) against hand-played games."""

from __future__ import annotations

from typing import Any

from hiergym.agents.base import EPISODE_INDEX, EPISODE_SEED, BatchedAgent
from hiergym.multiagent_driver import play_games


class Script:
    """Plays a fixed list of moves, one per call."""

    def __init__(self, moves: list[str]):
        self.moves = list(moves)

    def act(self, observation: str, info: dict[str, Any]) -> str:
        return self.moves.pop(0)


def played_state_after(move: str) -> str:
    from hiergym.envs.multiagent import tictactoe_v0

    env = tictactoe_v0.raw_env()
    env.reset(seed=0)
    env.step(move)
    return env.infos["player_1"]["state_key"]


def rows_of(played, traj: int) -> list[tuple[int, str, float, bool, bool]]:
    return [(r.step, r.action, r.reward, r.done, r.invalid) for r in played.records if r.traj_id == traj]


def test_tictactoe_seats_records_match_a_hand_played_game() -> None:
    # X: a1 b1 c1 wins on X's third move; O: a2 b2 (its second move lets X win: it carries the -1).
    x, o = Script(["a1", "b1", "c1"]), Script(["a2", "b2"])
    played = play_games("tictactoe_v0", [{"player_0": x, "player_1": o}], [{"seed": 0}], group_ids=[3])
    (game,) = played.games
    assert game.payoffs == {"player_0": 1.0, "player_1": -1.0}
    assert game.won == {"player_0": True, "player_1": False} and game.moves == {"player_0": 3, "player_1": 2}
    assert rows_of(played, 0) == [(0, "a1", 0.0, False, False), (1, "b1", 0.0, False, False),
                                  (2, "c1", 1.0, True, False)]
    assert rows_of(played, 1) == [(0, "a2", 0.0, False, False), (1, "b2", -1.0, True, False)]
    # Groups per task and seat (G copies of one seat compare with each other), role = the seat.
    assert {(r.traj_id, r.group_id, r.role) for r in played.records} == {(0, 6, 0), (1, 7, 1)}
    first = next(r for r in played.records if r.traj_id == 1 and r.step == 0)
    assert first.anchor == played_state_after("a1")  # the state before O's first move
    assert "a1" in first.observation  # O saw X's opening move


def test_kuhn_reward_of_a_move_includes_the_opponents_reply() -> None:
    # player_0 checks, player_1 bets, player_0 folds: player_0 loses its ante (on its fold), player_1 wins it
    # (on its bet, the move the fold answered).
    played = play_games("kuhn_poker_v0", [{"player_0": Script(["check", "fold"]), "player_1": Script(["bet"])}],
                        [{"seed": 1}])
    assert rows_of(played, 0) == [(0, "check", 0.0, False, False), (1, "fold", -1.0, True, False)]
    assert rows_of(played, 1) == [(0, "bet", 1.0, True, False)]
    assert played.games[0].payoffs == {"player_0": -1.0, "player_1": 1.0}


def test_illegal_move_is_flagged_penalised_and_forfeits() -> None:
    played = play_games("tictactoe_v0", [{"player_0": Script(["a1"]), "player_1": Script(["a1"])}], [{"seed": 0}],
                        invalid_action_penalty=0.5)
    assert rows_of(played, 1) == [(0, "a1", -1.5, True, True)]  # occupied cell: forfeit (-1) and the penalty
    assert rows_of(played, 0) == [(0, "a1", 1.0, True, False)]
    assert played.games[0].invalid == {"player_0": 0, "player_1": 1}


class FirstLegal(BatchedAgent):
    """A batched agent: the first admissible action, for every (game, seat) it plays; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str]:
        self.calls.append(len(observations))
        assert len({i[EPISODE_INDEX] for i in infos}) == len(infos)
        return [i["admissible_actions"][0] for i in infos]


def test_self_play_rows_of_both_seats_are_present_and_signed() -> None:
    agent = FirstLegal()
    seats = [{"player_0": agent, "player_1": agent} for _ in range(4)]
    played = play_games("tictactoe_v0", seats, [{"seed": k} for k in range(4)], group_ids=[0, 0, 1, 1])
    assert len(agent.tasks) == 8  # reset once with its 4 games x 2 seats
    assert max(agent.calls) == 4  # one batched call per round: every game's mover at once
    assert {r.role for r in played.records} == {0, 1}
    assert all(a == 0 for a in played.record_agents)
    # First-legal play: X takes a1 b1 c1 and wins; O's last row carries the loss, X's the win: zero-sum.
    for k in range(4):
        last = {r.role: r.reward for r in played.records if r.traj_id // 2 == k and r.done}
        assert last == {0: 1.0, 1: -1.0}
        assert sum(r.reward for r in played.records if r.traj_id // 2 == k) == 0
    assert {r.group_id for r in played.records} == {0, 1, 2, 3}  # (task, seat) groups


class SeedRecorder(BatchedAgent):
    """Records the sampling key (``episode_seed``) of every (game, seat) it is reset with; plays first-legal."""

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        super().reset(tasks, infos)
        self.seeds = [i[EPISODE_SEED] for i in infos]

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str]:
        return [i["admissible_actions"][0] for i in infos]


def test_same_seed_copies_of_a_group_sample_their_own_streams() -> None:
    # G same-seed copies of a task must not play one game G times: every copy's seats get their own key
    agent = SeedRecorder()
    seats = [{"player_0": agent, "player_1": agent} for _ in range(3)] + [{"player_0": agent, "player_1": "random"}]
    resets = [{"seed": 5}] * 3 + [{"seed": 6}]
    play_games("tictactoe_v0", seats, resets, group_ids=[0, 0, 0, 1])
    assert len(set(agent.seeds)) == len(agent.seeds) == 7
    first = agent.seeds
    play_games("tictactoe_v0", seats, resets, group_ids=[0, 0, 0, 1])
    assert agent.seeds == first, "the same call samples the same streams"
    # the first copy keeps a lone game's key (evaluation games, one per seed)
    play_games("tictactoe_v0", seats[:1], resets[:1])
    assert agent.seeds == first[:2]


def test_scripted_names_and_household_privileged_players() -> None:
    played = play_games("household_coop_v0", [{"player_0": "expert", "player_1": "expert"}], [{"seed": 0}],
                        game_kwargs={"max_rounds": 30})
    assert all(played.games[0].won.values())
    assert sum(r.done for r in played.records) == 2
