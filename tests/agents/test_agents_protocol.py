"""The agent protocol and the built-in agents (random, expert, flat LLM, hierarchical) on scripted backends."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

import hiergym  # noqa: F401 - registers the envs
from hiergym.agents.base import (
    EPISODE_INDEX,
    EPISODE_SEED,
    BatchedAgent,
    Completion,
    Decision,
    FunctionAgent,
    SingleEpisodeAdapter,
    as_agent,
    as_decision,
)
from hiergym.agents.expert import ExpertAgent
from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
from hiergym.agents.llm import LLMAgent, LLMAgentConfig
from hiergym.agents.prompts import (
    Step,
    SubgoalRecord,
    executor_prompt,
    family_for_env,
    format_action_response,
    planner_prompt,
)
from hiergym.agents.random_agent import RandomAgent


class ScriptedBackend:
    """A text backend whose responses come from a function of the prompt; records every call."""

    def __init__(self, respond):
        self.respond = respond
        self.calls: list[list[str]] = []

    def generate(self, prompts, *, max_new_tokens=128, temperature=1.0, top_p=1.0, stop=None, seed=None):
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            text = self.respond(prompt)
            out.append(Completion(prompt_text=prompt, response_text=text, prompt_token_ids=[1] * 5,
                                  response_token_ids=[2] * len(text), response_logprobs=[-0.5] * len(text)))
        return out


def infos_for(n, admissible=("a", "b")):
    return [{"task": f"task {i}", "admissible_actions": list(admissible), EPISODE_INDEX: i, EPISODE_SEED: i}
            for i in range(n)]


# ------------------------------------------------------------------------------------------- adapters
def test_as_agent_wraps_single_episode_objects_and_functions():
    class Counter:
        def __init__(self):
            self.task, self.steps = None, 0

        def reset(self, task):
            self.task, self.steps = task, 0

        def act(self, observation, info):
            self.steps += 1
            return f"{self.task}:{self.steps}"

    agent = as_agent(Counter())
    assert isinstance(agent, SingleEpisodeAdapter)
    agent.reset(["x", "y"], infos_for(2))
    assert agent.act(["o", "o"], infos_for(2)) == ["x:1", "y:1"]
    # Only episode 1 still runs: its own copy continues, episode 0's is untouched.
    assert agent.act(["o"], [infos_for(2)[1]]) == ["y:2"]

    fn = as_agent(lambda obs, info: info["admissible_actions"][-1])
    assert isinstance(fn, FunctionAgent)
    fn.reset(["t"], infos_for(1))
    assert fn.act(["o"], infos_for(1)) == ["b"]
    assert as_agent(lambda obs: obs.upper()).act(["go"], infos_for(1)) == ["GO"]

    class Batched:
        def act(self, observations, infos):
            return ["a"] * len(observations)

    batched = Batched()
    assert as_agent(batched) is batched
    batched.reset([], [])  # a missing reset is filled in

    with pytest.raises(TypeError, match="not an agent"):
        as_agent(42)


def test_as_decision_normalises_garbage():
    assert as_decision("up").action == "up"
    garbage = as_decision(None)
    assert garbage.info["parse_error"] and garbage.action == ""
    assert as_decision(Decision(action=3)).info["parse_error"].startswith("non-text")


# ------------------------------------------------------------------------------------- random / expert
def test_random_agent_is_uniform_over_admissible_and_reproducible():
    agent = RandomAgent(seed=1)
    infos = infos_for(3, admissible=("a", "b", "c"))
    agent.reset(["t"] * 3, infos)
    first = [agent.act(["o"] * 3, infos) for _ in range(30)]
    agent.reset(["t"] * 3, infos)
    again = [agent.act(["o"] * 3, infos) for _ in range(30)]
    assert first == again
    seen = {a for step in first for a in step}
    assert seen == {"a", "b", "c"}
    agent.reset(["t"], [{"admissible_actions": None}])
    assert agent.act(["o"], [{"admissible_actions": None}])[0].info["no_action"]


def test_expert_agent_wins_sokoban():
    envs = [gym.make("hiergym/Sokoban-v0") for _ in range(2)]
    agent = ExpertAgent()
    agent.attach_envs(envs)
    results = [env.reset(seed=0, options={"split": "eval_in", "task_id": i}) for i, env in enumerate(envs)]
    infos = [{**info, EPISODE_INDEX: i} for i, (_, info) in enumerate(results)]
    agent.reset([i["task"] for i in infos], infos)
    observations = [obs for obs, _ in results]
    running = [0, 1]
    won = set()
    for _ in range(60):
        if not running:
            break
        actions = agent.act([observations[i] for i in running], [infos[i] for i in running])
        for i, action in zip(list(running), actions, strict=True):
            observations[i], _, terminated, truncated, info = envs[i].step(action)
            infos[i] = {**info, EPISODE_INDEX: i}
            if terminated or truncated:
                running.remove(i)
                if info["won"]:
                    won.add(i)
    assert won == {0, 1}


def test_expert_agent_needs_envs():
    agent = ExpertAgent()
    agent.reset(["t"], infos_for(1))
    with pytest.raises(RuntimeError, match="attach_envs"):
        agent.act(["o"], infos_for(1))


# ------------------------------------------------------------------------------------------- prompts
def test_prompts_carry_the_state_and_the_format():
    history = [Step("up", "Nothing happens. A wall.\nboard"), Step("left", "You moved left.\nboard")]
    full = executor_prompt(family="sokoban", task="Push the box.", observation="GRID", admissible=["up", "down"],
                           history=history, history_window=1, subgoal="reach the box")
    assert "Sokoban" in full and "Push the box." in full and "GRID" in full
    assert "[up, down]" in full and "<think>" in full and "<action>" in full
    assert "2. left -> You moved left." in full and "1. up" not in full  # window of 1
    assert "reach the box" in full and "<subgoal_done/>" in full
    compact = executor_prompt(family="sokoban", style="compact", task="", observation="GRID\nLegend: x",
                              admissible=["up"], history=history)
    assert "Legend" not in compact and "<think>" not in compact and len(compact) < 120
    plan = planner_prompt(family="alfworld", task="put a mug in the sink", observation="You are in a kitchen.",
                          admissible=None, history=())
    assert "<subgoal>" in plan and "ALFWorld" in plan and "put a mug in the sink" in plan
    assert family_for_env("hiergym/Sokoban-v0") == "sokoban"
    assert family_for_env("hiergym/ALFWorld-v0") == "alfworld"
    assert family_for_env("my/Other-v0") == "generic"
    assert format_action_response("up", think="x") == "<think>x</think><action>up</action>"
    with pytest.raises(ValueError, match="style"):
        executor_prompt(style="long", task="", observation="", admissible=None)


def test_compact_sokoban_prompts_put_the_subgoal_after_the_grid():
    """Prompts of one room share the grid's first rows, so the subgoal lines come after it (the prefix cache and
    the packed update compute the shared start once); ALFWorld's compact prompts keep the subgoal first."""
    grid = "#######\n#__X__#\n#_P___#\n#######"
    subgoals = [SubgoalRecord("push box 1 right", "done", 3)]
    executors = [executor_prompt(family="sokoban", style="compact", task="", observation=grid, admissible=["up"],
                                 subgoal=subgoal) for subgoal in ("push box 1 right", "push box 2 up 2 times")]
    assert all(p.startswith(grid) and p.endswith(f"subgoal: {s}\n")
               for p, s in zip(executors, ("push box 1 right", "push box 2 up 2 times"), strict=True))
    plan = planner_prompt(family="sokoban", style="compact", task="", observation=grid, admissible=None,
                          subgoals=subgoals)
    assert plan == f"{grid}\nsubgoals: push box 1 right (done)\nplan:\n"
    household = executor_prompt(family="alfworld", style="compact", task="t", observation="You see a pan.",
                                admissible=None, subgoal="take pan")
    assert household.startswith("subgoal: take pan\n")
    assert planner_prompt(family="alfworld", style="compact", task="t", observation="You see a pan.",
                          admissible=None, subgoals=subgoals).startswith("task: t\nsubgoals: ")


# -------------------------------------------------------------------------------------------- flat LLM
def test_flat_llm_agent_records_generations_and_history():
    answers = iter(["<think>t</think><action>B</action>", "garbage", "<action>a</action>", "<action>a</action>"])
    backend = ScriptedBackend(lambda prompt: next(answers))
    agent = LLMAgent(backend, LLMAgentConfig(history_window=3), env_id="hiergym/Sokoban-v0")
    infos = infos_for(2)
    agent.reset(["t0", "t1"], infos)
    first = agent.act(["obs0", "obs1"], infos)
    assert [d.action for d in first] == ["b", ""]  # admissible spelling; the unparseable one is empty
    assert first[0].parse_ok and not first[1].parse_ok and "no <action>" in first[1].info["parse_error"]
    gen = first[0].generations[0]
    assert (gen.level, gen.segment, gen.parse_ok) == ("executor", 0, True)
    assert len(gen.response_logprobs) == len(gen.response_token_ids) > 0
    assert first[0].info["think"] == "t"
    second = agent.act(["after0", "after1"], infos)
    assert [d.action for d in second] == ["a", "a"]
    # The second prompt shows the first step's action and what it led to.
    assert "1. b -> after0" in backend.calls[1][0] and "Sokoban" in backend.calls[1][0]


def test_flat_llm_agent_handles_a_shrinking_batch():
    backend = ScriptedBackend(lambda prompt: "<action>a</action>")
    agent = LLMAgent(backend)
    infos = infos_for(3)
    agent.reset(["t"] * 3, infos)
    agent.act(["o"] * 3, infos)
    out = agent.act(["only episode 2"], [infos[2]])
    assert len(out) == 1 and len(backend.calls[-1]) == 1
    assert agent.states[2].history[-1].observation == "only episode 2"
    assert agent.states[0].steps == 1 and agent.states[2].steps == 2


# ---------------------------------------------------------------------------------------- hierarchical
def test_hierarchical_agent_segments_replanning_and_levels():
    plans = iter(f"<think>p</think><subgoal>goal {k}</subgoal>" for k in range(10))
    executor_script = iter([
        "<action>a</action>",                     # step 1, segment 0
        "<subgoal_done/><action>b</action>",      # step 2 finishes segment 0 -> re-plan before step 3
        "<subgoal_failed/>",                      # step 3: gives segment 1 up -> re-plan now, ask again
        "<action>a</action>",                     # step 3, segment 2
        "<action>a</action>",                     # step 4, segment 2 (replan_every=2 -> timeout)
        "<action>b</action>",                     # step 5, segment 3
    ])

    def respond(prompt):
        return next(plans) if "<subgoal>" in prompt and "current subgoal" not in prompt else next(executor_script)

    backend = ScriptedBackend(respond)
    agent = HierarchicalAgent(backend, HierarchicalAgentConfig(replan_every=2))
    infos = infos_for(1)
    agent.reset(["task"], infos)
    steps = [agent.act([f"obs{t}"], infos)[0] for t in range(5)]
    assert [d.action for d in steps] == ["a", "b", "a", "a", "b"]
    levels = [[(g.level, g.segment) for g in d.generations] for d in steps]
    assert levels == [
        [("planner", 0), ("executor", 0)],
        [("executor", 0)],
        [("planner", 1), ("executor", 1), ("planner", 2), ("executor", 2)],
        [("executor", 2)],
        [("planner", 3), ("executor", 3)],
    ]
    assert steps[2].info["subgoal"] == "goal 2" and steps[2].info["segment"] == 2
    outcomes = [(s.subgoal, s.outcome, s.steps) for s in agent.states[0].subgoals]
    assert outcomes == [("goal 0", "done", 2), ("goal 1", "failed", 0), ("goal 2", "timeout", 2)]
    # The planner saw how earlier subgoals ended.
    last_planner_prompt = [p for call in backend.calls for p in call if "Subgoals so far" in p][-1]
    assert "goal 1 (failed after 0 step(s))" in last_planner_prompt


def test_hierarchical_agent_with_two_backends_and_bad_planner_output():
    planner = ScriptedBackend(lambda prompt: "I refuse to use tags")
    executor = ScriptedBackend(lambda prompt: "<action>a</action>")
    agent = HierarchicalAgent(planner, HierarchicalAgentConfig(replan_every=None), executor_backend=executor)
    infos = infos_for(2)
    agent.reset(["find the key", "open the door"], infos)
    decisions = agent.act(["o", "o"], infos)
    assert [d.action for d in decisions] == ["a", "a"]
    assert decisions[0].info["planner_parse_error"]
    assert decisions[0].generations[0].level == "planner" and not decisions[0].generations[0].parse_ok
    # The task stands in for the missing subgoal.
    assert "find the key" in executor.calls[0][0] and len(planner.calls) == 1
    agent.act(["o", "o"], infos)
    assert len(planner.calls) == 1  # no re-planning without a reason


def test_batched_agent_base_class():
    class Echo(BatchedAgent):
        def act(self, observations, infos):
            return list(observations)

    agent = as_agent(Echo())
    agent.reset(["t"], infos_for(1))
    assert agent.act(["x"], infos_for(1)) == ["x"]


def test_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        LLMAgentConfig(temperature=-1)
    with pytest.raises(ValueError, match="replan_every"):
        HierarchicalAgentConfig(replan_every=0)
    assert re.search("style", str(pytest.raises(ValueError, LLMAgentConfig, style="x").value))
