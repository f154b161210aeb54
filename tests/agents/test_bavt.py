"""The BAVT agent: the budget-conditioned selection rule and the residual values on hand-built trees, the
budget accounting (look-ahead counts, each execution paid once, the budget never overrun, the real env only
stepped with the chosen actions), restore by reset and replay, and the ``bavt:SPEC`` registration."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch

import hiergym  # noqa: F401
from hiergym.agents.bavt import BAVTAgent, BAVTConfig, Node, residual_value, selection_probabilities
from hiergym.agents.spec import AgentSpecError, make_agent
from hiergym.driver import play_evaluation
from hiergym.envs.wrappers import ToolBudget

torch.set_num_threads(1)
TOOLQA = "hiergym/ToolQA-v0"


# ------------------------------------------------------------------------------------------ the rule
def test_selection_probabilities_follow_the_remaining_budget_ratio() -> None:
    scores = [0.6, 0.3, 0.1]
    np.testing.assert_allclose(selection_probabilities(scores, 1.0), [0.6, 0.3, 0.1])  # r = 1: proportional
    np.testing.assert_allclose(selection_probabilities(scores, 0.5), np.square(scores) / np.sum(np.square(scores)))
    np.testing.assert_allclose(selection_probabilities(scores, 0.25), np.power(scores, 4) / np.sum(np.power(scores, 4)))
    greedy = selection_probabilities(scores, 0.0, min_ratio=0.01)  # r -> 0: the floor, exponent 100
    assert greedy[0] > 0.999999 and greedy.sum() == pytest.approx(1.0)
    assert selection_probabilities(scores, 0.0, min_ratio=0.5)[0] == pytest.approx(0.36 / 0.46)
    np.testing.assert_allclose(selection_probabilities([0.0, 0.0], 0.3), [0.5, 0.5])
    # As the budget runs out the best option only gains mass.
    mass = [selection_probabilities(scores, r)[0] for r in (1.0, 0.8, 0.5, 0.3, 0.1)]
    assert all(b > a for a, b in zip(mass, mass[1:], strict=False))


def test_residual_values() -> None:
    assert residual_value(0.5, valid=True, novel=True, terminated=False, truncated=False, won=False, delta=0.1) == 0.6
    assert residual_value(0.5, valid=True, novel=False, terminated=False, truncated=False, won=False,
                          delta=0.1) == pytest.approx(0.45)
    assert residual_value(0.5, valid=False, novel=True, terminated=False, truncated=False, won=False, delta=0.1) == 0.4
    assert residual_value(0.05, valid=False, novel=False, terminated=False, truncated=False, won=False,
                          delta=0.1) == 0.0
    assert residual_value(0.95, valid=True, novel=True, terminated=False, truncated=False, won=False, delta=0.1) == 1.0
    assert residual_value(0.2, valid=True, novel=True, terminated=True, truncated=False, won=True, delta=0.1) == 1.0
    assert residual_value(0.9, valid=True, novel=True, terminated=True, truncated=False, won=False, delta=0.1) == 0.0


class _Budget:
    """A stand-in for an episode's budget: a fixed ratio, unlimited calls, unit costs."""

    def __init__(self, ratio: float, seed: int = 0):
        self.ratio = ratio
        self.rng = np.random.default_rng(seed)

    def ratio_and_left(self):
        return self.ratio, float("inf")

    def cost_of(self, action):
        return 1.0


def _tree() -> Node:
    """root (0.5) -a-> A (0.6) -c-> C (0.7); root -b-> B (0.45). Proposals: root {a: 3, b: 1, d: 1},
    A {c: 2, e: 2}, C {f: 4}, B {g: 1}."""
    root = Node(path=(), observation="r", info={}, value=0.5, proposals=Counter(a=3, b=1, d=1))
    a = Node(path=("a",), observation="A", info={}, value=0.6, parent=root, proposals=Counter(c=2, e=2),
             simulated=True, paid=True)
    b = Node(path=("b",), observation="B", info={}, value=0.45, parent=root, proposals=Counter(g=1), simulated=True)
    c = Node(path=("a", "c"), observation="C", info={}, value=0.7, parent=a, proposals=Counter(f=4), simulated=True)
    root.children.update(a=a, b=b)
    a.children["c"] = c
    return root


def test_frontier_scores_and_selection_on_a_hand_built_tree() -> None:
    agent = BAVTAgent(object.__new__(type("Backend", (), {})), BAVTConfig(max_depth=2))
    root = _tree()
    edges = agent._frontier(_Budget(1.0), root)
    # Depth limit 2: C (depth 2) is not expandable; unexpanded edges: root-d, A-e, B-g.
    assert {(n.path, a) for n, a in edges} == {((), "d"), (("a",), "e"), (("b",), "g")}
    scores = {(n.path, a): n.value * n.share(a) for n, a in edges}
    assert scores == pytest.approx({((), "d"): 0.5 * 0.2, (("a",), "e"): 0.6 * 0.5, (("b",), "g"): 0.45 * 1.0})
    # Drawn in proportion at r = 1, almost always the best (B-g, 0.45) near the end of the budget.
    picks = Counter(agent._select(_Budget(0.02, seed=s), root)[1] for s in range(200))
    assert picks["g"] == 200
    picks = Counter(agent._select(_Budget(1.0, seed=s), root)[1] for s in range(2000))
    total = 0.1 + 0.3 + 0.45
    for action, score in (("d", 0.1), ("e", 0.3), ("g", 0.45)):
        assert picks[action] / 2000 == pytest.approx(score / total, abs=0.04)


def test_commit_follows_the_best_goal_then_the_best_subtree() -> None:
    agent = BAVTAgent(object.__new__(type("Backend", (), {})), BAVTConfig())
    root = _tree()
    # No goal: the root child whose subtree holds the best value (A, through C at 0.7).
    assert agent._commit(_Budget(1.0), root) == "a"
    # An answer the backend proposes most often at B is a goal: commit the path to it.
    b = root.children["b"]
    b.proposals = Counter({"answer[x]": 3, "g": 1})
    b.children["answer[x]"] = Node(path=("b", "answer[x]"), observation="", info={}, value=0.75, parent=b, answer=True)
    assert agent._commit(_Budget(1.0), root) == "b"
    # A won terminal beats it.
    c = root.children["a"].children["c"]
    c.children["f"] = Node(path=("a", "c", "f"), observation="won", info={}, value=1.0, parent=c, terminal=True,
                           won=True)
    assert agent._commit(_Budget(1.0), root) == "a"


# ------------------------------------------------------------------------------------------ accounting
class StepCounter(gym.Wrapper):
    """Counts the real env's steps and the actions it received."""

    def __init__(self, env):
        super().__init__(env)
        self.actions: list[str] = []

    def step(self, action):
        self.actions.append(action)
        return self.env.step(action)


def _toolqa_envs(n: int, budget: int | None):
    inner = [StepCounter(gym.make(TOOLQA)) for _ in range(n)]
    return inner, [ToolBudget(e, max_tool_calls=budget) for e in inner]


def test_an_exact_backend_pays_each_tool_execution_once() -> None:
    # The noiseless expert proposes only the needed lookups: BAVT simulates each (charged as look-ahead),
    # then replays it for real as a prepaid call. Total calls = the minimum, all of them look-ahead.
    inner, envs = _toolqa_envs(6, budget=8)
    agent = make_agent("bavt:expert", env_id=TOOLQA)
    results = play_evaluation(envs, agent, range(6), seed=0, split="eval_in", max_steps=20)
    for i, (result, env, counter) in enumerate(zip(results, envs, inner, strict=True)):
        minimal = gym.make(TOOLQA).reset(seed=i, options={"split": "eval_in", "task_id": i})[1]["minimal_tool_calls"]
        assert result.success
        assert result.tool_calls == env.lookahead_tool_calls == result.steps - 1 == minimal  # lookups, then answer
        assert len(counter.actions) == result.steps  # the real env saw the chosen actions only


def test_look_ahead_counts_against_the_budget_and_never_overruns_it() -> None:
    for budget in (1, 2, 3):
        inner, envs = _toolqa_envs(8, budget=budget)
        agent = make_agent("bavt:expert", env_id=TOOLQA, agent_args={"epsilon": 0.5, "expansions": 4})
        results = play_evaluation(envs, agent, range(8), seed=0, split="eval_in", max_steps=20)
        for result, env, counter in zip(results, envs, inner, strict=True):
            assert result.tool_calls <= budget and result.cost <= budget
            real_tool_calls = sum(a.startswith(("lookup[", "search[")) for a in counter.actions)
            # Executions the wrapper charged = look-ahead + real calls that were not prepaid (none refused here).
            assert env.lookahead_tool_calls <= result.tool_calls
            assert len(counter.actions) == result.steps
            assert real_tool_calls >= result.tool_calls - env.lookahead_tool_calls


def test_search_runs_in_its_own_copies_restored_by_reset_and_replay() -> None:
    env = ToolBudget(gym.make(TOOLQA), max_tool_calls=16)
    agent = make_agent("bavt:expert", env_id=TOOLQA, agent_args={"epsilon": 0.3})
    play_evaluation([env], agent, [3], seed=7, split="eval_in", max_steps=20)
    episode = agent.episodes[0]
    assert episode.sim is not None and episode.sim is not env and episode.sim.unwrapped is not env.unwrapped
    assert episode.reset_arguments == {"seed": 7 + 3, "options": {"split": "eval_in", "task_id": 3}}
    # Replaying the real path in a fresh copy reproduces the real observation.
    fresh = gym.make(TOOLQA)
    fresh.reset(**episode.reset_arguments)
    for action in episode.real_path[:-1]:
        observation = fresh.step(action)[0]
    assert episode.root.observation == observation


def test_alfworld_without_a_budget_wrapper_uses_its_own_look_ahead_budget() -> None:
    envs = [gym.make("hiergym/ALFWorld-v0") for _ in range(3)]
    agent = make_agent("bavt:expert", env_id="hiergym/ALFWorld-v0", agent_args={"budget": 30})
    results = play_evaluation(envs, agent, range(3), seed=0, split="eval_in", max_steps=50)
    assert all(r.success for r in results)
    assert all(0 < ep.self_spent <= 30 for ep in agent.episodes)


def test_bavt_over_the_tiny_model_charges_its_proposal_tokens() -> None:
    env = ToolBudget(gym.make(TOOLQA), max_tool_calls=4, max_tokens=100_000)
    agent = make_agent("bavt:tiny", env_id=TOOLQA, agent_args={"candidates": 2, "max_new_tokens": 8})
    results = play_evaluation([env], agent, [0], seed=0, split="eval_in", max_steps=3)
    assert results[0].error is None
    info = env.budget_left()
    assert info["tokens_left"] < 100_000  # the proposals' tokens count as test-time compute


def test_spec_registration() -> None:
    agent = make_agent("bavt:expert", agent_args={"epsilon": 0.2, "candidates": 3, "unsimulated": "answer,buy"})
    assert isinstance(agent, BAVTAgent)
    assert agent.config.candidates == 3 and agent.config.unsimulated == ("answer", "buy")
    assert agent.backend_agent.epsilon == 0.2
    for bad in ("bavt:", "bavt:bavt:expert"):
        with pytest.raises(AgentSpecError, match="bavt:SPEC"):
            make_agent(bad)
    with pytest.raises(AgentSpecError, match="candidates"):
        make_agent("bavt:expert", agent_args={"candidates": 0})


def test_proposals_of_a_constrained_llm_agent_are_admissible() -> None:
    """The backend's action constraint holds in look-ahead too: an untrained tiny model constrained to the
    admissible commands proposes only admissible ones (unconstrained, it writes bytes no parser accepts)."""
    env_id = "hiergym/ALFWorld-v0"
    agent = make_agent("bavt:tiny", env_id=env_id, agent_args={"candidates": 4, "action_constraint": "admissible"})
    env = ToolBudget(gym.make(env_id), max_tool_calls=6, tool_costs=lambda action: 1.0)
    proposed: list[tuple[list[str], list[str]]] = []
    propose = agent.proposer.propose

    def recording(episode, node):
        actions, tokens = propose(episode, node)
        proposed.append((actions, list(node.info["admissible_actions"])))
        return actions, tokens

    agent.proposer.propose = recording
    results = play_evaluation([env], agent, [0], seed=0, split="eval_in", max_steps=3)
    assert proposed and all(a in admissible for actions, admissible in proposed for a in actions)
    assert results[0].tool_calls > 0  # its commands reached the env (and were billed)
