"""BAVT: budget-aware value tree search at test time (``--agent bavt:SPEC``).

Li et al., 2026, "Spend Less, Reason Better: Budget-Aware Value Tree Search for LLM Agents" (arXiv
2603.12634): a training-free search tree over the agent's steps, a step-level value per node that scores
*relative progress* (a residual over the parent) rather than absolute quality, and a node selection that
uses the remaining-budget ratio as an exponent on node values, moving from exploration to exploitation as the
budget runs out. ``docs/budgets.md`` ("BAVT") has the formulas; here is what this implementation does.

**Tree.** A node is a state of the episode, named by the action prefix that reaches it from the episode's
reset. The backend (any agent SPEC: an LLM, ``tiny:DIR``, ``expert``, ``expert`` with ``epsilon``, ...)
proposes ``candidates`` actions at a node (sampled; duplicates counted): their shares ``q(a) = count / K``
are the backend's own preference. Expanding an edge ``(n, a)`` executes ``a`` in a simulation copy.

**Simulation.** The agent never steps the real env except with the chosen action. For each real env it makes
a copy ``gym.make(env.spec.id, **env.spec.kwargs)``; a node is restored by ``reset(**last_reset)`` (the real
episode's reset arguments, recorded by every hiergym env: ``EpisodeEnd.last_reset``) and a replay of its
prefix: hiergym envs are deterministic given seed, options and actions. Actions named in ``unsimulated``
(default ``answer``) are never executed in a copy: their outcome is the grader's verdict, which a deployed
agent cannot consult.

**Value (residual predictor).** ``V(root) = root_value``; a simulated child gets
``V(child) = clip(V(parent) + Delta, 0, 1)`` with ``Delta = +delta`` for a valid step whose observation is new
in this episode (information gained), ``-delta / 2`` for a valid step that shows nothing new (a redundant
call), ``-delta`` for an invalid step. A simulated terminal step that wins gets ``V = 1`` (a plan that reaches
the goal), one that ends otherwise ``V = 0``. An answer proposal becomes an unsimulated leaf with
``V = q(answer)``: the backend's self-consistency about it. Nothing reads the env's hidden state, reward
model or gold answers.

**Selection (BAVT's rule).** With ``r = remaining budget / episode budget`` (the smaller of the tool and token
ratios), the next edge to simulate is drawn among the frontier edges ``(n, a)`` (nodes in the real state's
subtree, less than ``max_depth`` below it, not terminal; ``a`` proposed, unexpanded, simulable) with
probability ``P(n, a) ∝ (V(n) q(a)) ** (1 / max(r, min_ratio))``: at ``r = 1`` in proportion to value
(broad exploration), sharpening towards the arg max as the budget depletes (greedy exploitation).

**Decision.** Search stops after ``expansions`` simulated edges, when a *goal* is in the subtree (a won
terminal, or an answer leaf the backend proposed most often at its node or with ``q >= answer_confidence``), when nothing affordable is left, or when the
budget is spent. The real action is the first edge of the path to the best goal; else of the root child with
the highest value in its subtree; else (nothing simulated: budget spent) the backend's most proposed action
at the root, an answer if it proposed one (the budget backstop).

**Cost.** Every simulated tool call counts as test-time compute, against the same budget as real calls: the
agent charges it to the real env's :class:`~hiergym.envs.wrappers.ToolBudget` (``charge_lookahead``; tokens
of LLM proposals too), so the harness's ``tool_calls_used`` / ``tool_cost`` include it (and
``lookahead_tool_calls`` says how much was look-ahead). Each distinct execution is paid once: replaying a
prefix to restore a node is free (the results are cached), and a real step that repeats a simulated edge from
the same state is marked prepaid (``prepay_next_call``). Actions that are not tool calls for the wrapper
(ToolQA's ``answer``, WebShop's ``click``) are free in simulation as in reality. Without a ToolBudget the
agent gives itself ``budget`` simulated steps per episode and real steps are not counted.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from hiergym.agents.base import EPISODE_SEED, BatchedAgent, Decision, as_decision, episode_indices
from hiergym.envs.core import normalize_action, stable_seed
from hiergym.envs.wrappers import ToolBudget

_TRACKER = "\n[budget] "


@dataclass
class BAVTConfig:
    """Settings of the BAVT agent (agent arguments of ``bavt:SPEC``; the other arguments go to SPEC).

    Args:
        candidates: actions the backend proposes per node (K samples; their shares are its preference).
        expansions: most edges simulated per real decision.
        max_depth: deepest look-ahead below the real state.
        delta: the residual value step (see the module docstring).
        root_value: the value of the real state when a search starts from scratch.
        min_ratio: floor of the remaining-budget ratio in the exponent ``1 / r``.
        answer_confidence: an answer proposed with at least this share (or as the plurality) ends the search.
        unsimulated: tool names never executed in a simulation copy (their outcome is the grader's).
        budget: simulated steps per episode when the env has no ToolBudget.
        proposal_temperature: sampling temperature of LLM backends' proposals.
        seed: seeds the proposals and the selection (with each episode's seed).
    """

    candidates: int = 5
    expansions: int = 2
    max_depth: int = 6
    delta: float = 0.1
    root_value: float = 0.5
    min_ratio: float = 0.05
    answer_confidence: float = 0.5
    unsimulated: tuple[str, ...] = ("answer",)
    budget: int = 16
    proposal_temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.unsimulated, str):
            self.unsimulated = tuple(s for s in self.unsimulated.split(",") if s)
        self.unsimulated = tuple(self.unsimulated)
        for name in ("candidates", "expansions", "max_depth", "budget"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.min_ratio <= 1 or not 0 <= self.answer_confidence <= 1 or self.delta < 0:
            raise ValueError("min_ratio must be in (0, 1], answer_confidence in [0, 1], delta >= 0")


BAVT_ARGUMENTS = frozenset(f.name for f in dataclasses.fields(BAVTConfig))


# ------------------------------------------------------------------------------------------ the tree
@dataclass
class Node:
    """A state of the episode: the action prefix from the reset, what the agent saw there, its value."""

    path: tuple[str, ...]
    observation: str
    info: dict[str, Any]
    value: float
    parent: Node | None = None
    children: dict[str, Node] = field(default_factory=dict)
    #: Proposed action -> how many of the K samples proposed it (None until proposed).
    proposals: Counter | None = None
    terminal: bool = False
    won: bool = False
    #: An unsimulated answer leaf (its value is the backend's agreement on it).
    answer: bool = False
    #: The edge from the parent was executed in a simulation copy, and charged as a tool call.
    simulated: bool = False
    paid: bool = False

    @property
    def depth(self) -> int:
        return len(self.path)

    def share(self, action: str) -> float:
        total = sum((self.proposals or {}).values())
        return (self.proposals or {}).get(action, 0) / total if total else 0.0

    def subtree(self) -> list[Node]:
        nodes, stack = [], [self]
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(node.children[a] for a in sorted(node.children))
        return nodes

    def best_value(self) -> float:
        return max(n.value for n in self.subtree())

    def is_goal(self, answer_confidence: float) -> bool:
        """A won terminal, or an answer the backend proposed with share >= ``answer_confidence`` or more often
        than any other action at its node (its plurality choice)."""
        if self.terminal and self.won:
            return True
        if not self.answer or self.parent is None:
            return False
        top = max((self.parent.proposals or {}).values(), default=0)
        return self.value >= answer_confidence or self.parent.share(self.path[-1]) * sum(
            (self.parent.proposals or {}).values()) >= top > 0


def selection_probabilities(scores: Sequence[float], ratio: float, min_ratio: float = 0.05) -> np.ndarray:
    """BAVT's budget-conditioned selection: ``P_i ∝ score_i ** (1 / max(ratio, min_ratio))``.

    ``ratio`` is the remaining-budget ratio in [0, 1]: at 1 the probabilities are proportional to the scores
    (exploration); as it falls the exponent grows and the mass concentrates on the best score (exploitation).
    Scores are node values times proposal shares, in [0, 1]. All-zero scores give the uniform distribution.
    """
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    if scores.size == 0:
        return scores
    exponent = 1.0 / max(min(float(ratio), 1.0), float(min_ratio))
    top = scores.max()
    if top <= 0:
        return np.full(scores.size, 1.0 / scores.size)
    weights = (scores / top) ** exponent  # scaled by the max first: no underflow at large exponents
    return weights / weights.sum()


def residual_value(parent_value: float, *, valid: bool, novel: bool, terminated: bool, truncated: bool, won: bool,
                   delta: float) -> float:
    """The value of a simulated child from its parent's (the residual value predictor, module docstring)."""
    if terminated and won:
        return 1.0
    if terminated or truncated:
        return 0.0
    step = -delta if not valid else (delta if novel else -delta / 2)
    return float(min(1.0, max(0.0, parent_value + step)))


def tool_name(action: str) -> str | None:
    text = normalize_action(action)
    if text is None or "[" not in text:
        return None
    return text.split("[", 1)[0].strip().lower()


def _strip_tracker(observation: str) -> str:
    return str(observation).split(_TRACKER, 1)[0]


# ------------------------------------------------------------------------------------------ proposals
class _LLMProposer:
    """K samples of an LLM agent's next action at a node: its prompt (history = the path), one batched call."""

    def __init__(self, agent: Any, config: BAVTConfig):
        self.agent, self.config = agent, config
        self._calls = 0

    def propose(self, episode: _Episode, node: Node) -> tuple[list[str], int]:
        from hiergym.agents.llm import ACTION_STOP, EpisodeMemory
        from hiergym.agents.parsing import parse_action
        from hiergym.agents.prompts import Step

        steps, n = [], node
        while n.parent is not None:
            steps.append(Step(n.path[-1], n.observation, bool(n.info.get("action_valid", True))))
            n = n.parent
        memory = EpisodeMemory(task=episode.task, history=episode.history + steps[::-1])
        prompt = self.agent.build_prompt(memory, node.observation, node.info)
        cfg = self.agent.config
        self._calls += 1
        seed = stable_seed("bavt-propose", self.config.seed, episode.seed, node.path, self._calls) % (2**31)
        # The agent's own decoding rules (its action constraint) apply to proposals as to its real decisions.
        completions = self.agent.backend.generate(
            [prompt] * self.config.candidates, max_new_tokens=cfg.max_new_tokens,
            temperature=self.config.proposal_temperature, top_p=cfg.top_p, stop=list(ACTION_STOP), seed=seed,
            **self.agent.choice_arguments([node.info] * self.config.candidates, [memory] * self.config.candidates))
        actions, tokens = [], 0
        for completion in completions:
            tokens += completion.num_response_tokens
            if completion.error:
                continue
            parsed = parse_action(completion.response_text, self.agent.readable_actions(node.info))
            actions.append(parsed.action or "" if parsed.ok else "")
        return actions, tokens


class _AgentProposer:
    """K independent actions of any other agent (scripted agents such as ``expert`` read the env: they get the
    simulation copy restored at the node), each from a fresh episode of the agent with its own seed."""

    def __init__(self, agent: Any, config: BAVTConfig):
        self.agent, self.config = agent, config

    def propose(self, episode: _Episode, node: Node) -> tuple[list[str], int]:
        sim = episode.goto(node.path)
        attach = getattr(self.agent, "attach_envs", None)
        if callable(attach):
            attach([sim])
        actions = []
        for k in range(self.config.candidates):
            info = {**node.info, EPISODE_SEED: stable_seed("bavt-sample", episode.seed, node.path, k),
                    "episode_index": 0}
            self.agent.reset([episode.task], [info])
            output = self.agent.act([node.observation], [info])[0]
            actions.append(as_decision(output).action)
        if callable(attach):
            attach([episode.real_env])
        return actions, 0


# ------------------------------------------------------------------------------------------ one episode
class _Episode:
    """One real episode's search state: its simulation copy, its budget, its tree."""

    def __init__(self, env: Any, task: str, info: dict[str, Any], config: BAVTConfig, seed: Any):
        self.real_env, self.task, self.config, self.seed = env, task, config, seed
        self.budget_env = _find_budget(env)
        self.reset_arguments = getattr(env.unwrapped, "last_reset", None)
        self.restorable = bool(self.reset_arguments and self.reset_arguments.get("seed") is not None
                               and getattr(env, "spec", None) is not None)
        self.sim: gym.Env | None = None
        self.sim_path: tuple[str, ...] | None = None
        self.sim_observation = ""
        self.history: list[Any] = []  # real Steps, for LLM prompts
        self.real_path: tuple[str, ...] = ()
        self.root: Node | None = None
        self.seen: set[str] = set()
        self.self_spent = 0.0  # without a ToolBudget
        self.simulated_calls = 0
        self.rng = np.random.default_rng(stable_seed("bavt-select", config.seed, seed))
        self.replays = 0

    # ---------------------------------------------------------------------------------- simulation
    def make_sim(self) -> gym.Env:
        if self.sim is None:
            spec = self.real_env.spec
            kwargs = dict(spec.kwargs)
            if spec.max_episode_steps is not None:
                kwargs.setdefault("max_episode_steps", spec.max_episode_steps)
            self.sim = gym.make(spec.id, **kwargs)
        return self.sim

    def goto(self, path: tuple[str, ...]) -> gym.Env:
        """The simulation copy in the state after ``path``: reset and replay (only the missing suffix when the
        copy is already on the way). Replays re-execute cached results: they cost nothing."""
        sim = self.make_sim()
        here = self.sim_path
        if here is None or here != path[: len(here)]:
            self.sim_observation = str(sim.reset(**self.reset_arguments)[0])
            here = ()
        for action in path[len(here):]:
            self.sim_observation = str(sim.step(action)[0])
            self.replays += 1
        self.sim_path = tuple(path)
        return sim

    def simulate(self, node: Node, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        sim = self.goto(node.path)
        result = sim.step(action)
        self.sim_path = (*node.path, action)
        self.sim_observation = str(result[0])
        return result

    # ---------------------------------------------------------------------------------- budget
    def cost_of(self, action: str) -> float:
        if self.budget_env is None:
            return 1.0
        cost = self.budget_env.tool_cost(action)
        return 0.0 if cost is None else float(cost)

    def ratio_and_left(self) -> tuple[float, float]:
        """(remaining-budget ratio, tool budget left) now, look-ahead charges included."""
        if self.budget_env is None:
            left = self.config.budget - self.self_spent
            return max(left, 0.0) / self.config.budget, left
        status = self.budget_env.budget_left()
        ratios, left = [], float("inf")
        if status["tool_budget"]:
            left = float(status["tool_budget_left"])
            ratios.append(left / float(status["tool_budget"]))
        if status["token_budget"]:
            ratios.append(float(status["tokens_left"]) / float(status["token_budget"]))
        return (min(ratios) if ratios else 1.0), left

    def charge(self, cost: float, tokens: int = 0) -> None:
        if self.budget_env is None:
            self.self_spent += cost
            return
        self.budget_env.charge_lookahead(tool_calls=int(cost > 0), tool_cost=cost, tokens=tokens)


def _find_budget(env: Any) -> ToolBudget | None:
    while env is not None:
        if isinstance(env, ToolBudget):
            return env
        env = getattr(env, "env", None)
    return None


# ------------------------------------------------------------------------------------------ the agent
class BAVTAgent(BatchedAgent):
    """Budget-aware value tree search over a backend agent (see the module docstring)."""

    def __init__(self, backend_agent: Any, config: BAVTConfig | None = None):
        self.backend_agent = backend_agent
        self.config = config or BAVTConfig()
        self.envs: list[Any] = []
        from hiergym.agents.llm import LLMAgent

        self.proposer = (_LLMProposer(backend_agent, self.config) if isinstance(backend_agent, LLMAgent)
                         else _AgentProposer(backend_agent, self.config))

    def attach_envs(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        if not self.envs:
            raise RuntimeError("the bavt agent needs the environments: call attach_envs(envs) before reset")
        self.episodes = []
        for k, (task, info) in enumerate(zip(tasks, infos, strict=True)):
            seed = info.get(EPISODE_SEED, k)
            self.episodes.append(_Episode(self.envs[k], task or str(info.get("task", "")), info, self.config, seed))

    # ---------------------------------------------------------------------------------- acting
    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        return [self._decide(self.episodes[i], obs, info)
                for i, obs, info in zip(episode_indices(infos), observations, infos, strict=True)]

    def _decide(self, ep: _Episode, observation: str, info: dict[str, Any]) -> Decision:
        root = self._root(ep, observation, info)
        spent_before = ep.simulated_calls
        tokens = self._ensure_proposals(ep, root)
        expansions = 0
        if ep.restorable:
            while expansions < self.config.expansions and not self._goal(root):
                edge = self._select(ep, root)
                if edge is None:
                    break
                tokens += self._expand(ep, *edge)
                expansions += 1
        action = self._commit(ep, root)
        child = root.children.get(action)
        if child is not None and child.simulated and child.paid and ep.budget_env is not None:
            ep.budget_env.prepay_next_call()
        ep.real_path = (*ep.real_path, action)
        ratio, _ = ep.ratio_and_left()
        return Decision(action, info={"bavt": {"simulated_calls": ep.simulated_calls - spent_before,
                                               "expansions": expansions, "tree_nodes": len(root.subtree()),
                                               "budget_ratio": round(ratio, 4), "tokens": tokens,
                                               "goal": self._goal(root), "restorable": ep.restorable}})

    def _root(self, ep: _Episode, observation: str, info: dict[str, Any]) -> Node:
        """The tree node of the real state (the subtree of the previous search is kept when it matches)."""
        seen = _strip_tracker(observation)
        previous = ep.root
        if previous is not None and ep.real_path:
            action = ep.real_path[-1]
            ep.history.append(_step(action, seen, info))
            if info.get("tool_call_refused"):  # the env received the empty (no-op) action instead
                ep.real_path = (*ep.real_path[:-1], "")
            child = previous.children.get(action)
            if child is not None and not child.answer and child.observation == seen:
                child.info = dict(info)  # the real info (budget keys) for the prompts
                child.parent = None
                ep.root = child
                ep.seen.add(seen)
                return child
        root = Node(path=ep.real_path, observation=seen, info=dict(info), value=self.config.root_value)
        if ep.restorable and ep.real_path and not info.get("tool_call_refused"):
            # A fresh root must be reproducible in simulation, or the search would plan from a wrong state.
            ep.goto(ep.real_path)
            if _strip_tracker(ep.sim_observation) != seen:
                ep.restorable = False
        ep.root = root
        ep.seen.add(seen)
        return root

    def _ensure_proposals(self, ep: _Episode, node: Node) -> int:
        if node.proposals is not None or node.terminal or node.answer:
            return 0
        actions, tokens = self.proposer.propose(ep, node)
        node.proposals = Counter(actions)
        if tokens and ep.budget_env is not None:
            ep.budget_env.charge_lookahead(tokens=tokens)
        for action in node.proposals:
            if tool_name(action) in self.config.unsimulated and action not in node.children:
                node.children[action] = Node(path=(*node.path, action), observation="", info={},
                                             value=node.share(action), parent=node, answer=True)
        return tokens

    def _frontier(self, ep: _Episode, root: Node) -> list[tuple[Node, str]]:
        _, left = ep.ratio_and_left()
        edges = []
        for node in root.subtree():
            if node.terminal or node.answer or node.proposals is None or node.depth - root.depth >= self.config.max_depth:
                continue
            for action in sorted(node.proposals):
                if action in node.children or tool_name(action) in self.config.unsimulated:
                    continue
                if ep.cost_of(action) > left + 1e-9:
                    continue  # the budget cannot pay for it
                edges.append((node, action))
        return edges

    def _select(self, ep: _Episode, root: Node) -> tuple[Node, str] | None:
        edges = self._frontier(ep, root)
        if not edges:
            return None
        ratio, _ = ep.ratio_and_left()
        if ratio <= 0:
            return None
        probabilities = selection_probabilities([n.value * n.share(a) for n, a in edges], ratio,
                                                self.config.min_ratio)
        return edges[int(ep.rng.choice(len(edges), p=probabilities))]

    def _expand(self, ep: _Episode, node: Node, action: str) -> int:
        cost = ep.cost_of(action)
        observation, _reward, terminated, truncated, info = ep.simulate(node, action)
        if cost > 0:
            ep.charge(cost)
            ep.simulated_calls += 1
        observation = _strip_tracker(observation)
        novel = observation not in ep.seen
        ep.seen.add(observation)
        value = residual_value(node.value, valid=bool(info.get("action_valid", True)), novel=novel,
                               terminated=bool(terminated), truncated=bool(truncated),
                               won=bool(info.get("won", False)), delta=self.config.delta)
        child = Node(path=(*node.path, action), observation=observation, info=dict(info), value=value, parent=node,
                     terminal=bool(terminated or truncated), won=bool(info.get("won", False)), simulated=True,
                     paid=cost > 0)
        node.children[action] = child
        return self._ensure_proposals(ep, child)

    def _goal(self, root: Node) -> bool:
        return any(n.is_goal(self.config.answer_confidence) for n in root.subtree() if n is not root)

    def _commit(self, ep: _Episode, root: Node) -> str:
        goals = [n for n in root.subtree() if n is not root and n.is_goal(self.config.answer_confidence)]
        if goals:
            best = max(goals, key=lambda n: (n.value, -n.depth, n.path))
            return best.path[root.depth]
        simulated = [(child.best_value(), root.share(a), a) for a, child in root.children.items()
                     if child.simulated and not child.terminal]
        if simulated:
            return max(simulated)[2]
        dead = {a for a, child in root.children.items() if child.terminal and not child.won}
        proposals = Counter({a: c for a, c in (root.proposals or Counter()).items() if a not in dead}) or \
            (root.proposals or Counter())
        answers = [(count, a) for a, count in proposals.items() if tool_name(a) in self.config.unsimulated]
        ratio, left = ep.ratio_and_left()
        if answers and (ratio <= self.config.min_ratio or not self._frontier(ep, root)):
            return max(answers)[1]  # the budget backstop: answer with what is known
        if proposals:
            return max((count, a) for a, count in proposals.items())[1]
        return ""


def _step(action: str, observation: str, info: dict[str, Any]) -> Any:
    from hiergym.agents.prompts import Step

    return Step(action, observation, bool(info.get("action_valid", True)))
