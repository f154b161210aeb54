"""The success-versus-budget benchmark: the budget-aware expert succeeds exactly where the budget allows."""

from __future__ import annotations

import gymnasium as gym

import hiergym  # noqa: F401
from hiergym.benchmarks.budget_curve import main, play


def test_expert_success_matches_the_hops_the_budget_covers() -> None:
    episodes = 12
    env = gym.make("hiergym/ToolQA-v0")
    hops = [env.reset(options={"split": "eval_in", "task_id": t})[1]["hops"] for t in range(episodes)]
    for budget in (1, 2, 4):
        row = play("expert", budget, episodes, [1, 2, 3, 4], tokens_per_action=10, token_price=0.0, seed=0)
        assert row.success == sum(h <= budget for h in hops) / episodes
    assert row.tool_calls == sum(hops) / episodes and row.otc_reward == 1.0
    searcher = play("searcher", 4, episodes, [1, 2, 3, 4], tokens_per_action=10, token_price=0.0, seed=0)
    assert searcher.tool_calls > row.tool_calls and searcher.otc_reward < 1.0


def test_main_prints_the_table(capsys, tmp_path) -> None:
    assert main(["--episodes", "2", "--budgets", "1", "2", "--png", str(tmp_path / "curve.png")]) == 0
    out = capsys.readouterr().out
    assert "productivity" in out and out.count("expert") == 2 and out.count("random") == 2


def test_search_rows_compare_plain_and_bavt_on_the_same_backend(capsys, tmp_path) -> None:
    assert main(["--search", "--episodes", "2", "--search-envs", "toolqa", "--png", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("bavt:expert") == 5 and "look" in out
    from hiergym.benchmarks.budget_curve import search_play

    plain = search_play("toolqa", "expert", 4, 4, {})
    searched = search_play("toolqa", "bavt:expert", 4, 4, {})
    assert plain.success == searched.success == 1.0  # an exact expert: every question fits in 4 calls
    assert plain.lookahead_calls == 0 and searched.lookahead_calls == searched.tool_calls  # all paid in look-ahead
