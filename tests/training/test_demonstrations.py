"""Behaviour-cloning demonstrations are played through the real agent: their prompts are, token for token, the
prompts the agent builds when it plays the same actions itself."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from hiergym.agents.demonstrator import ScriptedBackend
from hiergym.agents.hierarchical import SUBGOAL_STOP
from hiergym.driver import EnvEpisodes, play_episodes
from hiergym.training.config import load_config
from hiergym.training.demonstrations import expert_demonstrations
from hiergym.training.trainer import build_agent, build_policy

torch.set_num_threads(1)
EPISODES = 3


class RecordingBackend(ScriptedBackend):
    """Answers with given responses and records every prompt it is asked, with its level."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[tuple[str, str]] = []

    def generate(self, prompts, **kwargs):
        level = "planner" if kwargs.get("stop") and SUBGOAL_STOP[0] in kwargs["stop"] else "executor"
        self.prompts += [(prompt, level) for prompt in prompts]
        return super().generate(prompts, **kwargs)


@pytest.mark.parametrize("preset", ["sokoban", "alfworld", "webshop"])
@pytest.mark.parametrize("agent", ["flat", "hierarchical"])
def test_demonstration_prompts_are_the_agents_own(tmp_path, preset: str, agent: str) -> None:
    config = load_config(preset, overrides={"agent": agent, "out_dir": str(tmp_path)})
    seed = 7
    demos, success = expert_demonstrations(config.env_id, build_agent(config, None, temperature=0.0),
                                           episodes=EPISODES, seed=seed, split="train", env_kwargs=config.env_kwargs,
                                           max_steps=config.max_episode_steps)
    assert success > 0 and demos  # (the page-reading WebShop shopper does not win every task)
    assert {d.level for d in demos} == ({"executor", "planner"} if agent == "hierarchical" else {"executor"})

    # The plain agent (no demonstrator) plays the same episodes, one at a time, answering with the demonstrated
    # responses: it must ask exactly the demonstrated prompts.
    backend = RecordingBackend()
    player = build_agent(config, backend, temperature=0.0)
    for d in demos:
        (backend.planner_responses if d.level == "planner" else backend.executor_responses).append(d.response)
    env = gym.make(config.env_id, **config.env_kwargs)
    replayed = []
    for episode in range(EPISODES):
        played = play_episodes(EnvEpisodes([env], [{"seed": seed + episode, "options": {"split": "train"}}]),
                               player, max_steps=config.max_episode_steps)
        replayed.append(played.results[0].success)
    env.close()
    assert sum(replayed) / EPISODES == success  # the same episodes, to the same outcomes
    assert not backend.planner_responses and not backend.executor_responses
    assert [level for _, level in backend.prompts] == [d.level for d in demos]

    tokenizer = build_policy(config)
    for (prompt, _), demo in zip(backend.prompts, demos, strict=True):
        assert tokenizer.encode_prompt(prompt) == tokenizer.encode_prompt(demo.prompt)
        assert prompt == demo.prompt


@pytest.mark.parametrize("env_id", ["hiergym/ALFWorld-v0", "hiergym/WebShop-v0"])
def test_expert_subgoals_cover_the_expert_plan(env_id: str) -> None:
    env = gym.make(env_id)
    for seed in range(6):
        env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        subgoals = env.unwrapped.expert_subgoals()
        assert [a for _, steps in subgoals for a in steps] == plan
        assert all(name and steps for name, steps in subgoals)
        if env_id.startswith("hiergym/ALFWorld"):  # each ends at an object interaction, and is named by it
            assert all(name == steps[-1] for name, steps in subgoals)
    env.close()


def test_sokoban_demonstrations_name_each_segment_from_its_state() -> None:
    """Push subgoals longer than ``replan_every`` are cut; the rest is named again from the state where it
    continues (its box number and push count are the state's), and a cut segment is not marked done."""
    from hiergym.agents.parsing import SUBGOAL_DONE

    overrides = {"agent": "hierarchical", "env_kwargs": {"dim_room": [7, 7], "num_boxes": 2}, "replan_every": 4}
    config = load_config("sokoban-hierarchical", overrides=overrides)
    unmarked_cuts = 0
    for seed in range(8):
        demos, success = expert_demonstrations(config.env_id, build_agent(config, None, temperature=0.0),
                                               episodes=1, seed=seed, split="train", env_kwargs=config.env_kwargs,
                                               max_steps=60)
        assert success == 1.0
        env = gym.make(config.env_id, **config.env_kwargs)
        env.reset(seed=seed, options={"split": "train"})
        segment: list[str] = []
        for demo in demos + [None]:
            if demo is None or demo.level == "planner":
                if segment and not segment[-1].startswith(SUBGOAL_DONE):
                    assert len(segment) == 4  # only a cut segment ends unmarked, at replan_every
                    unmarked_cuts += 1
                if demo is None:
                    break
                name = demo.response.removeprefix("<subgoal>").removesuffix("</subgoal>")
                assert name == env.unwrapped.expert_subgoals()[0][0], seed  # what the state calls the next push
                segment = []
                continue
            segment.append(demo.response)
            env.step(demo.response.removeprefix(SUBGOAL_DONE))
        env.close()
    assert unmarked_cuts > 0
