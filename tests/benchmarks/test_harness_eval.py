"""The evaluation harness: hand-checked summary numbers, robustness (raise, hang, garbage), resume, CLI."""

from __future__ import annotations

import json
import threading
import time

import gymnasium as gym
import pytest

from hiergym.benchmarks.harness import (
    EpisodeResult,
    HarnessError,
    evaluate,
    load_summary,
    paired_success_difference,
    summarize,
    summary_markdown,
    wilson_interval,
)
from hiergym.cli import main
from hiergym.envs.core import make_info, select_task, text_action_space, text_observation_space

GUESS_ID = "hiergymtest/Guess-v0"
LETTERS = ("a", "b", "c")


class GuessEnv(gym.Env):
    """Say the hidden letter. Task t hides LETTERS[t % 3]; a right guess: +1 and the episode ends (won); a wrong
    letter: 0 reward; anything else: invalid. Three steps at most (TimeLimit)."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self.target = "a"

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        _, task_id, rng = select_task("guess", self.np_random, options)
        self.target = LETTERS[task_id % 3] if task_id is not None else LETTERS[int(rng.integers(3))]
        return "Guess a letter.", self._info(True, False)

    def _info(self, valid, won):
        kind = "vowel" if self.target == "a" else "consonant"
        return make_info(task="guess the letter", admissible_actions=list(LETTERS), won=won, action_valid=valid,
                         state_key=self.target, task_type=kind, tool_calls=1)

    def step(self, action):
        action = str(action).strip().lower()
        won = action == self.target
        valid = action in LETTERS
        return ("Right!" if won else "Wrong."), float(won), won, False, self._info(valid, won)

    def expert_plan(self):
        return [self.target]


if GUESS_ID not in gym.registry:
    gym.register(GUESS_ID, entry_point=GuessEnv, max_episode_steps=3)


def always(letter):
    return lambda observation, info: letter


# ----------------------------------------------------------------------------------- summary numbers
def test_wilson_interval_reference_values():
    low, high = wilson_interval(2, 6)
    assert low == pytest.approx(0.0968, abs=1e-4) and high == pytest.approx(0.7000, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_paired_success_difference_hand_checked():
    def run(wins: list[int], extra: int = 0) -> list[EpisodeResult]:
        return [EpisodeResult(episode=i, seed=0, task_id=i, success=bool(w)) for i, w in enumerate(wins + [1] * extra)]

    first = run([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    second = run([1, 0, 1, 1, 1, 0, 0, 0, 0, 0], extra=1)  # episode 10 has no pair: ignored
    d = paired_success_difference(first, second)
    assert (d["pairs"], d["gained"], d["lost"]) == (10, 3, 1)
    assert d["difference"] == pytest.approx(0.2)
    # variance of the per-episode differences: 4/10 - 0.2^2 = 0.36; half width 1.96 * sqrt(0.36 / 10)
    assert d["ci95"] == pytest.approx([0.2 - 0.371877, 0.2 + 0.371877], abs=1e-5)
    assert d["p_value"] == pytest.approx(2 * (1 + 4) / 16)  # McNemar exact: 1 of 4 discordant pairs
    same = paired_success_difference(first, first)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0 and same["ci95"] == [0.0, 0.0]
    assert paired_success_difference([], first)["pairs"] == 0


def test_hand_checked_run(tmp_path):
    # "a" wins tasks 0 and 3 in one step; the other four run out of their 3 steps.
    summary = evaluate(GUESS_ID, always("a"), episodes=6, split="eval_in", out=str(tmp_path / "run"),
                       progress=False)
    assert summary["episodes"] == 6 and summary["successes"] == 2
    assert summary["success_rate"] == pytest.approx(1 / 3)
    assert summary["success_ci95"] == pytest.approx([0.0968, 0.7000], abs=1e-4)
    assert summary["mean_return"] == pytest.approx(2 / 6)
    assert summary["mean_steps"] == pytest.approx((1 + 3 + 3 + 1 + 3 + 3) / 6)
    assert summary["invalid_action_rate"] == 0.0 and summary["errors"] == 0
    assert summary["truncated"] == 4
    assert summary["tool_calls_per_episode"] == 1.0  # read from info["tool_calls"]
    assert summary["tokens_per_episode"] == 0
    types = summary["by_task_type"]
    assert types["vowel"]["episodes"] == 2 and types["vowel"]["success_rate"] == 1.0
    assert types["consonant"]["episodes"] == 4 and types["consonant"]["success_rate"] == 0.0
    # Files: transcripts, results, summary and its table.
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "episodes").iterdir()) == [f"episode_{i:06d}.jsonl" for i in range(6)]
    records = [json.loads(line) for line in (out / "episodes" / "episode_000001.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["reset", "step", "step", "step", "end"]
    assert records[0]["task_id"] == 1 and records[1]["action"] == "a" and records[1]["observation"] == "Wrong."
    assert records[-1]["success"] is False and records[-1]["steps"] == 3
    assert json.loads((out / "summary.json").read_text())["successes"] == 2
    assert "33.3% (9.7%-70.0%)" in (out / "summary.md").read_text()


def test_invalid_actions_are_counted():
    # "zz" is not a letter: every step invalid; three steps per episode.
    summary = evaluate(GUESS_ID, always("zz"), episodes=2, progress=False)
    assert summary["invalid_action_rate"] == 1.0 and summary["mean_steps"] == 3 and summary["successes"] == 0


def test_same_tasks_for_every_agent():
    expert = evaluate(GUESS_ID, "expert", episodes=5, progress=False)
    assert expert["success_rate"] == 1.0 and expert["mean_steps"] == 1.0
    random_a = evaluate(GUESS_ID, "random", episodes=9, seed=4, progress=False)
    random_b = evaluate(GUESS_ID, "random", episodes=9, seed=4, progress=False, batch_size=4)
    for key in ("success_rate", "mean_steps", "mean_return"):
        assert random_a[key] == random_b[key]  # batching does not change what a seeded agent does


# ------------------------------------------------------------------------------------------ robustness
class Troublemaker:
    """Per episode (by task_id): 1 raises, 2 hangs, 3 returns None, 4 returns a number; others play 'a'."""

    def __init__(self, hang_seconds=3.0):
        self.hang_seconds = hang_seconds

    def reset(self, task, info):
        self.task_id = info["episode_seed"]  # the harness's seed + episode; seed=0 below

    def act(self, observation, info):
        if self.task_id == 1:
            raise RuntimeError("boom")
        if self.task_id == 2:
            threading.Event().wait(self.hang_seconds)
            return "a"
        if self.task_id == 3:
            return None
        if self.task_id == 4:
            return 42
        return "a"


def test_raise_hang_and_garbage_fail_only_their_episodes(tmp_path):
    started = time.perf_counter()
    summary = evaluate(GUESS_ID, Troublemaker(), episodes=7, step_timeout=0.5, out=str(tmp_path / "run"),
                       progress=False)
    assert time.perf_counter() - started < 3.0  # the hang was abandoned at the timeout
    assert summary["episodes"] == 7 and summary["errors"] == 4
    results = {json.loads(line)["episode"]: json.loads(line)
               for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()}
    assert "RuntimeError: boom" in results[1]["error"]
    assert "step timeout" in results[2]["error"]
    assert "NoneType instead of an action" in results[3]["error"]
    assert "int instead of an action" in results[4]["error"]
    assert [results[i]["error"] for i in (0, 5, 6)] == [None, None, None]
    assert results[0]["success"] and results[6]["success"] and not results[5]["success"]
    transcript = (tmp_path / "run" / "episodes" / "episode_000001.jsonl").read_text()
    assert '"type": "error"' in transcript and "boom" in transcript
    assert any("boom" in line for line in summary["error_examples"])


def test_batched_agent_returning_the_wrong_number_of_actions():
    class Short:
        def act(self, observations, infos):
            return ["a"]

    summary = evaluate(GUESS_ID, Short(), episodes=4, batch_size=2, progress=False)
    # Batch [0, 1]: the first act has 2 episodes and gets 1 action -> both fail; the same for [2, 3].
    assert summary["errors"] == 4 and "1 outputs for 2 episode(s)" in summary["error_examples"][0]


def test_resume_skips_finished_episodes(tmp_path):
    out = str(tmp_path / "run")

    class InterruptAt:
        def __init__(self, stop_at):
            self.stop_at = stop_at

        def reset(self, task, info):
            if info["episode_seed"] == self.stop_at:
                raise KeyboardInterrupt  # what Ctrl-C (or a kill between episodes) does to a run

        def act(self, observation, info):
            return "a"

    with pytest.raises(KeyboardInterrupt):
        evaluate(GUESS_ID, InterruptAt(3), episodes=6, out=out, progress=False, step_timeout=None)
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 3
    # A kill mid-write leaves a torn last line: that episode is simply run again.
    with (tmp_path / "run" / "results.jsonl").open("a") as handle:
        handle.write('{"episode": 3, "se')

    played = []

    class Recorder:
        def reset(self, task, info):
            played.append(info["episode_seed"])

        def act(self, observation, info):
            return "a"

    # A different agent object has a different label: resuming needs the same configuration.
    with pytest.raises(HarnessError, match="different run"):
        evaluate(GUESS_ID, Recorder(), episodes=6, out=out, progress=False)
    summary = evaluate(GUESS_ID, InterruptAt(-1), episodes=6, out=out, progress=False)
    assert summary["episodes"] == 6 and summary["successes"] == 2

    # Growing --episodes plays only the new ones; --retry-errors re-plays errored ones.
    summary = evaluate(GUESS_ID, "expert", episodes=3, out=str(tmp_path / "grow"), progress=False)
    assert summary["episodes"] == 3
    summary = evaluate(GUESS_ID, "expert", episodes=5, out=str(tmp_path / "grow"), progress=False)
    assert summary["episodes"] == 5
    lines = (tmp_path / "grow" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["episode"] for line in lines) == [0, 1, 2, 3, 4]


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(HarnessError, match="--episodes"):
        evaluate(GUESS_ID, "random", episodes=0)
    with pytest.raises(HarnessError, match="split"):
        evaluate(GUESS_ID, "random", split="test")
    with pytest.raises(ValueError, match="unknown environment"):
        evaluate("hiergym/Sokobn-v0", "random")
    with pytest.raises(HarnessError, match="unknown agent"):
        evaluate(GUESS_ID, "rand0m")
    with pytest.raises(HarnessError, match="bad environment arguments"):
        evaluate("hiergym/Sokoban-v0", "random", env_args={"no_such_arg": 1})


def test_summary_of_results_and_markdown():
    results = [EpisodeResult(episode=0, seed=0, task_id=0, success=True, total_reward=1.0, steps=2,
                             invalid_actions=1, prompt_tokens=10, response_tokens=5),
               EpisodeResult(episode=1, seed=1, task_id=1, success=False, total_reward=-1.0, steps=2,
                             error="agent raised X")]
    summary = summarize(results, config={"agent": "a", "env": "e"}, wall_time_s=2.0)
    # The errored episode is counted apart (issue 21): the rates are over the one episode that ran.
    assert summary["success_rate"] == 1.0 and summary["invalid_action_rate"] == 0.5
    assert summary["tokens_per_episode"] == 15 and summary["errors"] == 1 and summary["episodes_per_s"] == 1.0
    assert summary["episodes"] == 2 and summary["episodes_ran"] == 1 and summary["std_return"] == 0.0
    table = summary_markdown([summary])
    assert "| a @ e | 2 | 100.0%" in table and "50.0%" in table


# --------------------------------------------------------------------------------------------- the CLI
def test_cli_eval_and_compare(tmp_path, capsys):
    first, second = str(tmp_path / "random"), str(tmp_path / "expert")
    assert main(["eval", "--env", GUESS_ID, "--agent", "random", "--episodes", "4", "--out", first, "--quiet"]) == 0
    assert main(["eval", "--env", GUESS_ID, "--agent", "expert", "--episodes", "4", "--out", second,
                 "--quiet", "--label", "the expert"]) == 0
    printed = capsys.readouterr().out
    assert "| the expert | 4 | 100.0%" in printed and f"transcripts and summary in {second}" in printed
    png = tmp_path / "cmp.png"
    assert main(["compare", first, second, "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "random @ hiergymtest/Guess-v0" in printed and "the expert" in printed
    assert "| vowel |" in printed  # per task type, side by side
    assert "paired against random @ hiergymtest/Guess-v0 on the same episodes" in printed
    assert "0 lost of 4" in printed  # the expert wins every episode
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "install matplotlib" in printed
    else:
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert load_summary(second)["success_rate"] == 1.0

    assert main(["eval", "--env", GUESS_ID, "--agent", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown agent 'nope'" in capsys.readouterr().err
    assert main(["eval", "--env", GUESS_ID, "--agent", "random", "--episodes", "4", "--out", first, "--seed",
                 "9"]) == 2
    assert "different run" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    assert "not an evaluation run directory" in capsys.readouterr().err


def test_parallel_workers_match_a_single_worker(tmp_path):
    kwargs = {"episodes": 4, "max_steps": 8, "progress": False, "seed": 1}
    single = evaluate("hiergym/Sokoban-v0", "random", **kwargs)
    parallel = evaluate("hiergym/Sokoban-v0", "random", workers=2, out=str(tmp_path / "par"), **kwargs)
    for key in ("success_rate", "mean_return", "mean_steps", "invalid_action_rate"):
        assert single[key] == parallel[key]
    assert len(list((tmp_path / "par" / "episodes").glob("episode_*.jsonl"))) == 4


def test_env_factory_and_agent_object_labels(tmp_path):
    summary = evaluate(GuessEnv, "expert", episodes=3, out=str(tmp_path / "factory"), progress=False)
    assert summary["success_rate"] == 1.0 and summary["env"].endswith("GuessEnv")
    summary = evaluate(GUESS_ID, always("b"), episodes=3, progress=False)
    assert "always.<locals>" in summary["agent"] and summary["successes"] == 1


def test_agent_objects_are_used_as_they_are():
    class Locked:
        """A batched agent holding something that cannot be copied (a lock, a model on a device...)."""

        def __init__(self):
            self.lock = threading.Lock()
            self.calls = 0

        def reset(self, tasks, infos):
            pass

        def act(self, observations, infos):
            self.calls += 1
            return ["a"] * len(observations)

    agent = Locked()
    summary = evaluate(GUESS_ID, agent, episodes=3, progress=False)
    assert summary["errors"] == 0 and agent.calls > 0  # this very object played
