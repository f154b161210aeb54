"""Agent-vs-agent evaluation of the multi-agent games: rates, payoffs, confidence intervals, the CLI."""

from __future__ import annotations

import pytest

from hiergym.cli import main as hiergym_main
from hiergym.envs.multiagent.evaluate import MatchResult, evaluate, play_game


def test_rates_and_interval_are_consistent() -> None:
    result = evaluate("kuhn_poker_v0", "expert", "random", num_games=60, seed=1)
    assert result.wins + result.draws + result.losses == 60 == len(result.payoffs)
    assert result.win_rate + result.draw_rate + result.loss_rate == pytest.approx(1.0)
    low, high = result.ci95
    assert low < result.mean_payoff < high
    assert "95% CI" in result.summary() and "kuhn_poker_v0" in result.summary()


def test_evaluation_is_reproducible_and_seats_swap() -> None:
    first = evaluate("negotiation_v0", "expert", "random", num_games=20, seed=4)
    second = evaluate("negotiation_v0", "expert", "random", num_games=20, seed=4)
    assert first.payoffs == second.payoffs

    class SeatRecorder:
        def __init__(self) -> None:
            self.marks: list[str] = []

        def act(self, observation: str, info: dict) -> str:
            if not self.marks or self.marks[-1] != info["state_key"]:
                self.marks.append(info["mark"])
            return info["admissible_actions"][0]

    recorder = SeatRecorder()
    evaluate("tictactoe_v0", recorder, "random", num_games=4, seed=0)
    assert set(recorder.marks) == {"x", "o"}, "agent A plays both seats"
    recorder = SeatRecorder()
    evaluate("tictactoe_v0", recorder, "random", num_games=4, seed=0, swap_seats=False)
    assert set(recorder.marks) == {"x"}


def test_interval_of_a_constant_payoff_is_a_point() -> None:
    result = MatchResult("g", "a", "b", 3, 0, 3, 0, 0, [1.0, 1.0, 1.0])
    assert result.ci95 == (1.0, 1.0)
    result = MatchResult("g", "a", "b", 4, 2, 0, 2, 2, [1.0, -1.0, 1.0, -1.0])
    low, high = result.ci95
    assert low == pytest.approx(-high) and high == pytest.approx(1.96 * (4 / 3) ** 0.5 / 2)


def test_stronger_players_score_more() -> None:
    strong = evaluate("negotiation_v0", "expert", "random", num_games=40, seed=0)
    weak = evaluate("negotiation_v0", "random", "random", num_games=40, seed=0)
    assert strong.mean_payoff > weak.mean_payoff + 2
    assert strong.success_rate > weak.success_rate


def test_play_game_with_an_agent_object() -> None:
    class Stubborn:
        def act(self, observation: str, info: dict) -> str:
            return "bet" if "bet" in info["admissible_actions"] else "call"

    totals, won = play_game("kuhn_poker_v0", {"player_0": Stubborn(), "player_1": "expert"}, seed=0, num_hands=5)
    assert sum(totals.values()) == 0 and set(won) == {"player_0", "player_1"}


def test_arena_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert hiergym_main(["arena", "tictactoe_v0", "expert", "random", "--games", "10"]) == 0
    assert "win" in capsys.readouterr().out
    assert hiergym_main(["arena", "chess_v6", "expert", "random"]) == 2
    assert "choose one of" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num_games"):
        evaluate("tictactoe_v0", "random", "random", num_games=0)


def test_list_shows_the_multiagent_games(capsys: pytest.CaptureFixture[str]) -> None:
    assert hiergym_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "hiergym/TicTacToe-v0" in out and "hiergym.envs.multiagent.kuhn_poker_v0" in out
