"""Gymnasium views of the multi-agent games (hiergym/TicTacToe-v0, ...): opponents, seats, invalid actions."""

from __future__ import annotations

import gymnasium as gym
import pytest

import hiergym  # noqa: F401  (registers the ids)
from hiergym.envs.core import NOTHING_HAPPENS

VIEW_IDS = ["hiergym/TicTacToe-v0", "hiergym/KuhnPoker-v0", "hiergym/Negotiation-v0", "hiergym/HouseholdCoop-v0"]


class FirstLegalAction:
    """A third-party agent: act(observation, info) -> str, with reset(task)."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.calls = 0

    def reset(self, task: str) -> None:
        self.tasks.append(task)

    def act(self, observation: str, info: dict) -> str:
        self.calls += 1
        assert isinstance(observation, str) and info["to_move"]
        return info["admissible_actions"][0]


class BatchedFirstAction:
    """A batched hiergym.agents-style agent."""

    def reset(self, tasks: list[str], infos: list[dict]) -> None:
        self.reset_called = True

    def act(self, observations: list[str], infos: list[dict]) -> list[str]:
        return [info["admissible_actions"][-1] for info in infos]


def play_out(env: gym.Env, seed: int) -> dict:
    obs, info = env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(info["admissible_actions"][0])
        assert info["action_valid"]
    return info


@pytest.mark.parametrize("env_id", VIEW_IDS)
@pytest.mark.parametrize("make_opponent", [FirstLegalAction, BatchedFirstAction,
                                           lambda: (lambda obs, info: info["admissible_actions"][0])])
def test_any_agent_object_can_be_the_opponent(env_id: str, make_opponent) -> None:
    opponent = make_opponent()
    env = gym.make(env_id, opponent=opponent)
    play_out(env, seed=0)
    play_out(env, seed=1)
    if isinstance(opponent, FirstLegalAction):
        assert opponent.calls > 0 and len(opponent.tasks) == 2
    if isinstance(opponent, BatchedFirstAction):
        assert opponent.reset_called


def test_bad_opponent_and_seat_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        gym.make("hiergym/TicTacToe-v0", opponent="grandmaster")
    with pytest.raises(TypeError, match="act"):
        gym.make("hiergym/TicTacToe-v0", opponent=42)
    with pytest.raises(ValueError, match="seat"):
        gym.make("hiergym/TicTacToe-v0", seat="player_7")


@pytest.mark.parametrize("env_id", VIEW_IDS)
def test_invalid_actions_change_nothing_and_the_opponent_waits(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    obs, info = env.reset(seed=3)
    key, observed_moves = info["state_key"], env.game_env.num_moves
    for junk in ["", "propose[", "take moon from sky", "z9", "\x00", None, 12.5, "x" * 10_000]:
        obs, reward, terminated, truncated, info = env.step(junk)
        assert obs.startswith(NOTHING_HAPPENS) and reward == 0.0 and not (terminated or truncated)
        assert info["action_valid"] is False and info["state_key"] == key
    assert env.game_env.num_moves == observed_moves, "the opponent must not move after an invalid action"


def test_seat_is_drawn_per_task_or_fixed() -> None:
    env = gym.make("hiergym/TicTacToe-v0")
    seats = {env.reset(seed=s)[1]["seat"] for s in range(12)}
    assert seats == {"player_0", "player_1"}
    env = gym.make("hiergym/TicTacToe-v0", seat="player_1")
    obs, info = env.reset(seed=0)
    assert info["seat"] == "player_1" and info["mark"] == "o"
    assert info["board"].count("x") == 1, "X (the opponent) has moved first"


def test_tictactoe_expert_plan_none_against_perfect_play() -> None:
    env = gym.make("hiergym/TicTacToe-v0", opponent="expert")
    for seed in range(3):
        env.reset(seed=seed)
        assert env.unwrapped.expert_plan() is None, "perfect play cannot be beaten"
    # against random the plan wins, and replaying it is exact: the opponent's generator is part of the task
    env = gym.make("hiergym/TicTacToe-v0")
    for seed in range(10):
        env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        assert plan
        for action in plan:
            *_, info = env.step(action)
        assert info["won"]


def test_kuhn_expert_plan_wins_matches_against_random() -> None:
    env = gym.make("hiergym/KuhnPoker-v0")
    wins = 0
    for seed in range(15):
        env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        if plan is None:
            continue
        for action in plan:
            *_, info = env.step(action)
        assert info["won"]
        wins += 1
    assert wins >= 14


def test_same_seed_same_game_including_the_opponent() -> None:
    for env_id in VIEW_IDS:
        a, b = gym.make(env_id), gym.make(env_id)
        a.reset(seed=9)
        b.reset(seed=9)
        for _ in range(4):
            step_a = a.step(a.unwrapped._info()["admissible_actions"][0])
            step_b = b.step(b.unwrapped._info()["admissible_actions"][0])
            assert step_a[0] == step_b[0] and step_a[4]["state_key"] == step_b[4]["state_key"]
            if step_a[2] or step_a[3]:
                break


def test_negotiation_reward_is_the_agents_value() -> None:
    env = gym.make("hiergym/Negotiation-v0", seat="player_1", opponent="conceder")
    obs, info = env.reset(seed=0)
    total, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        action = "accept" if "accept" in info["admissible_actions"] else info["admissible_actions"][-2]
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
    game = env.unwrapped.game
    assert total == game.scores()["player_1"]
    if game.outcome == "deal":
        from hiergym.envs.multiagent.negotiation_v0 import value_of

        assert total == value_of(game.deal["player_1"], game.values["player_1"])


def test_household_view_with_random_teammate_still_solvable() -> None:
    env = gym.make("hiergym/HouseholdCoop-v0", opponent="random")
    solved = 0
    for seed in range(5):
        env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        if plan:
            for action in plan:
                *_, info = env.step(action)
            solved += info["won"]
    assert solved >= 4


def test_set_opponent_takes_effect_at_the_next_reset() -> None:
    env = gym.make("hiergym/TicTacToe-v0", seat="player_0").unwrapped
    env.reset(seed=0)
    snapshot = FirstLegalAction()
    env.set_opponent(snapshot)
    assert env.opponent.name == "random", "the running game keeps its opponent"
    env.reset(seed=0)
    env.step(env._info()["admissible_actions"][-1])
    assert snapshot.calls == 1 and snapshot.tasks
