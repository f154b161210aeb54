"""How the trainer splits a batch's rollouts across its tasks: ``uniform`` (G each) or Knapsack RL's allocation.

Knapsack RL (Li et al., 2025, "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget Allocation",
arXiv 2509.25849) observes that with a fixed G per task, tasks the policy always or never solves give groups
whose rewards are all equal: zero group-relative advantage, rollouts that cost compute and teach nothing. It
treats each (task, number of rollouts) as a knapsack item with a value and a cost and solves for the split.
``docs/budgets.md`` ("Knapsack RL") has the formulas; in short:

**Task stream.** Tasks must recur for their history to say anything, so allocation runs on a fixed pool: the
training tasks are task ids ``0 .. task_pool - 1`` of the train split (``reset(options={"task_id": ...})``,
the same task every time), and batch ``t`` samples ``num_tasks`` distinct ids of the pool uniformly, from a
generator seeded by ``(seed, t)``: with replacement across batches, so a task recurs about every
``task_pool / num_tasks`` batches. (``task_pool=0``, the default, keeps today's stream of fresh tasks.)

**Success estimate.** Each task keeps decayed counts of its successes ``s`` and failures ``f``; a revisit first
multiplies them by ``decay`` (the policy has moved since). Its success probability is
``p ~ Beta(a0 + s, b0 + f)`` with the prior ``a0 = m * pbar``, ``b0 = m * (1 - pbar)``: strength ``m``
(``allocation_prior``) around the pool's (decayed, Laplace-smoothed) success rate ``pbar``.

**Value of n rollouts** (``allocation_value``), in expectation over that posterior (closed forms from the Beta
moments ``E[p^a (1-p)^b] = B(alpha + a, beta + b) / B(alpha, beta)``):

- ``"nonzero"`` (default): ``V(n) = P(a group of n has both outcomes) = 1 - E[p^n] - E[(1-p)^n]``, the chance
  that the group gives GRPO a non-zero gradient. Its marginal gain is
  ``V(n+1) - V(n) = E[p^n (1-p) + (1-p)^n p]``.
- ``"infogain"``: Knapsack RL's task value, ``V(n) = E[(1 - p^n - (1-p)^n) * p (1-p)^2]``: the same
  probability weighted by its InfoGain approximation ``p (1-p)^2`` (the expected gain in success probability
  from one update), which favours tasks that are mostly failed.

Both are concave in n (their increments shrink: ``V(n+2) - 2 V(n+1) + V(n) = -E[w(p) (p^n (1-p)^2 +
(1-p)^n p^2)] <= 0`` with ``w >= 0`` the weight), and 0 for ``n <= 1``.

**Cost** (``allocation_cost``): ``"steps"`` (default), a task's expected env steps per rollout (decayed mean of
its past rollouts; the pool's mean for an unseen task): generation and env time scale with steps; or
``"rollouts"``, 1 per rollout.

**Budget and solver.** Every task gets ``min_group`` rollouts (2: a group statistic needs two), then rollouts
are added one at a time to the task with the largest marginal value per cost, ``(V_i(n_i + 1) - V_i(n_i)) /
c_i``, while the batch stays within *both* of uniform's budgets: at most ``B x G`` rollouts (the vector env's
copies) and at most ``G x sum_i c_i`` expected steps (what uniform's allocation is expected to cost). With
``"rollouts"`` cost the two coincide, and greedy is exactly optimal: the values are concave and separable, so
the marginal gains taken are the largest ``B x G - 2B`` of all tasks' (non-increasing) increments (the classic
result for separable concave resource allocation). With step costs it is the greedy solution of a knapsack
with concave items: optimal for the fractional relaxation, within one item's marginal value of the integer
optimum for the cost constraint alone (the count constraint makes it a two-constraint problem, where greedy
is a heuristic). Knapsack RL solves its version by dynamic programming; greedy is O(N log B) and needs no
discretised budget. Copies a step-cost allocation leaves unused stay idle (compute saved).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiergym.envs.core import stable_seed

ALLOCATIONS = ("uniform", "knapsack")
VALUES = ("nonzero", "infogain")
COSTS = ("steps", "rollouts")


# ------------------------------------------------------------------------------------------ values
def beta_moment(alpha: float, beta: float, a: int, b: int) -> float:
    """``E[p^a (1-p)^b]`` for ``p ~ Beta(alpha, beta)``: ``B(alpha + a, beta + b) / B(alpha, beta)``."""
    return math.exp(math.lgamma(alpha + a) + math.lgamma(beta + b) - math.lgamma(alpha + beta + a + b)
                    - math.lgamma(alpha) - math.lgamma(beta) + math.lgamma(alpha + beta))


def group_value(alpha: float, beta: float, n: int, value: str = "nonzero") -> float:
    """The expected value of a group of ``n`` rollouts of a task with success ``p ~ Beta(alpha, beta)``.

    ``"nonzero"``: ``1 - E[p^n] - E[(1-p)^n]`` (the group has a success and a failure);
    ``"infogain"``: ``E[(1 - p^n - (1-p)^n) p (1-p)^2]`` (Knapsack RL's task value).
    """
    if n <= 1:
        return 0.0
    if value == "nonzero":
        return max(0.0, 1.0 - beta_moment(alpha, beta, n, 0) - beta_moment(alpha, beta, 0, n))
    if value == "infogain":
        return max(0.0, beta_moment(alpha, beta, 1, 2) - beta_moment(alpha, beta, n + 1, 2)
                   - beta_moment(alpha, beta, 1, n + 2))
    raise ValueError(f"value must be one of {', '.join(VALUES)}, got {value!r}")


def knapsack_sizes(alphas: Sequence[float], betas: Sequence[float], costs: Sequence[float], *, total: int,
                   cost_budget: float | None = None, min_group: int = 2, max_group: int | None = None,
                   value: str = "nonzero") -> list[int]:
    """Rollouts per task: ``min_group`` each, then greedy on marginal value per cost within ``total`` rollouts
    and (when given) ``cost_budget``; see the module docstring. Ties go to the earlier task."""
    n = len(alphas)
    if not (len(betas) == len(costs) == n):
        raise ValueError("alphas, betas and costs must have one entry per task")
    if any(c <= 0 for c in costs):
        raise ValueError(f"costs must be positive, got {list(costs)}")
    if min_group * n > total:
        raise ValueError(f"{n} tasks x min_group {min_group} exceed the {total} rollouts of the batch")
    cap = total if not max_group else max(int(max_group), min_group)
    sizes = [min_group] * n
    count, spent = min_group * n, min_group * float(sum(costs))
    budget = math.inf if cost_budget is None else float(cost_budget)

    def gain(i: int) -> float:
        k = sizes[i]
        return (group_value(alphas[i], betas[i], k + 1, value) - group_value(alphas[i], betas[i], k, value)) / costs[i]

    heap = [(-gain(i), i) for i in range(n) if sizes[i] < cap]
    heapq.heapify(heap)
    while heap and count < total:
        _, i = heapq.heappop(heap)
        if spent + costs[i] > budget + 1e-9:
            continue  # this task's next rollouts cost as much: it is done
        sizes[i] += 1
        count += 1
        spent += costs[i]
        if sizes[i] < cap:
            heapq.heappush(heap, (-gain(i), i))
    return sizes


# ------------------------------------------------------------------------------------------ the allocator
@dataclass
class Allocation:
    """One batch's allocation: the pool's task ids and the rollouts of each (None: today's fresh tasks, G each)."""

    task_ids: list[int] | None
    group_sizes: list[int] | None
    #: Per task: the posterior mean success and the expected cost used, for the metrics.
    expected_success: list[float] = field(default_factory=list)
    expected_cost: list[float] = field(default_factory=list)

    def rollout_arguments(self) -> dict[str, Any]:
        if self.task_ids is None:
            return {}
        return {"task_ids": list(self.task_ids), "group_sizes": list(self.group_sizes or [])}

    def metrics(self) -> dict[str, Any]:
        if self.group_sizes is None:
            return {}
        sizes = np.asarray(self.group_sizes)
        return {"allocated_rollouts": int(sizes.sum()), "group_size_min": int(sizes.min()),
                "group_size_max": int(sizes.max()), "allocation_tasks": len(sizes)}


class RolloutAllocator:
    """Plans each batch's task ids and group sizes, and learns each task's success from its groups.

    Its statistics live in a plain dict (``state``, JSON-ready) that the trainer keeps in its checkpointed
    state, so a resumed run allocates exactly as the uninterrupted one would.
    """

    def __init__(self, *, mode: str, task_pool: int, num_tasks: int, group_size: int, seed: int,
                 value: str = "nonzero", cost: str = "steps", min_group: int = 2, max_group: int = 0,
                 prior: float = 1.0, decay: float = 0.8):
        if mode not in ALLOCATIONS:
            raise ValueError(f"rollout_allocation must be one of {', '.join(ALLOCATIONS)}, got {mode!r}")
        if mode == "knapsack" and task_pool < num_tasks:
            raise ValueError(f"rollout_allocation=knapsack needs a task pool of at least num_tasks ({num_tasks}) "
                             f"task ids that recur (task_pool={task_pool})")
        if value not in VALUES or cost not in COSTS:
            raise ValueError(f"allocation value/cost must be in {VALUES} / {COSTS}, got {value!r} / {cost!r}")
        self.mode, self.task_pool, self.num_tasks, self.group_size = mode, int(task_pool), int(num_tasks), int(group_size)
        self.seed, self.value, self.cost = int(seed), value, cost
        self.min_group = min(int(min_group), self.group_size)
        self.max_group, self.prior, self.decay = int(max_group), float(prior), float(decay)

    # ---------------------------------------------------------------------------------- task stream
    def sample_tasks(self, batch_index: int) -> list[int]:
        """``num_tasks`` distinct ids of the pool for batch ``batch_index`` (a pure function of seed and index)."""
        rng = np.random.default_rng(stable_seed("hiergym.task_pool", self.seed, int(batch_index)))
        return sorted(int(t) for t in rng.choice(self.task_pool, size=self.num_tasks, replace=False))

    # ---------------------------------------------------------------------------------- estimates
    @staticmethod
    def _tasks(state: dict[str, Any]) -> dict[str, list[float]]:
        return state.setdefault("allocation", {}).setdefault("tasks", {})

    @staticmethod
    def _pool(state: dict[str, Any]) -> list[float]:
        # decayed successes, outcomes, steps
        return state.setdefault("allocation", {}).setdefault("pool", [0.0, 0.0, 0.0])

    def posterior(self, state: dict[str, Any], task_id: int) -> tuple[float, float]:
        """``(alpha, beta)`` of task ``task_id``'s success probability (the prior for an unseen task)."""
        successes, outcomes, _ = self._pool(state)
        pbar = (1.0 + successes) / (2.0 + outcomes)
        s, f, _ = self._tasks(state).get(str(task_id), (0.0, 0.0, 0.0))
        return self.prior * pbar + s, self.prior * (1.0 - pbar) + f

    def expected_cost(self, state: dict[str, Any], task_id: int) -> float:
        if self.cost == "rollouts":
            return 1.0
        record = self._tasks(state).get(str(task_id))
        if record is not None and record[2] > 0:
            return float(record[2])
        _, outcomes, steps = self._pool(state)
        return steps / outcomes if outcomes > 0 else 1.0

    # ---------------------------------------------------------------------------------- plan and learn
    def plan(self, state: dict[str, Any], batch_index: int) -> Allocation:
        if self.task_pool == 0:
            return Allocation(None, None)
        tasks = self.sample_tasks(batch_index)
        posteriors = [self.posterior(state, t) for t in tasks]
        costs = [self.expected_cost(state, t) for t in tasks]
        if self.mode == "uniform":
            sizes = [self.group_size] * len(tasks)
        else:
            sizes = knapsack_sizes([a for a, _ in posteriors], [b for _, b in posteriors], costs,
                                   total=self.num_tasks * self.group_size,
                                   cost_budget=self.group_size * sum(costs), min_group=self.min_group,
                                   max_group=self.max_group or None, value=self.value)
        return Allocation(tasks, sizes, [a / (a + b) for a, b in posteriors], costs)

    def update(self, state: dict[str, Any], allocation: Allocation, episodes: Sequence[dict[str, Any]]) -> None:
        """Fold a played batch into the estimates (``episodes``: ``collect_rollouts``' per-trajectory dicts, with
        ``copy``, ``won`` and ``steps``)."""
        if allocation.task_ids is None:
            return
        starts = np.cumsum([0, *allocation.group_sizes])
        outcomes: dict[int, list[tuple[bool, int]]] = {}
        for episode in episodes:
            slot = int(np.searchsorted(starts, int(episode["copy"]), side="right")) - 1
            if 0 <= slot < len(allocation.task_ids) and not episode.get("error"):
                outcomes.setdefault(allocation.task_ids[slot], []).append((bool(episode["won"]), int(episode["steps"])))
        tasks, pool = self._tasks(state), self._pool(state)
        pool[:] = [self.decay * v for v in pool]
        for task_id, results in outcomes.items():
            wins = float(sum(w for w, _ in results))
            s, f, steps = tasks.get(str(task_id), (0.0, 0.0, 0.0))
            mean_steps = float(np.mean([n for _, n in results]))
            steps = mean_steps if steps <= 0 else self.decay * steps + (1 - self.decay) * mean_steps
            tasks[str(task_id)] = [self.decay * s + wins, self.decay * f + len(results) - wins, steps]
            pool[0] += wins
            pool[1] += len(results)
            pool[2] += float(sum(n for _, n in results))


# ------------------------------------------------------------------------------------------ metrics
def group_signal(episodes: Sequence[dict[str, Any]], group_rows: dict[int, np.ndarray] | None = None) -> dict[str, Any]:
    """The share of the batch's groups that carry a learning signal.

    ``mixed_success_groups``: groups with both a success and a failure (what the ``nonzero`` value targets);
    ``mixed_success_rollouts``: the share of rollouts in such groups (Knapsack RL's effective-gradient ratio:
    the rollouts whose GRPO advantage is non-zero);
    ``nonzero_return_groups``: groups whose returns are not all equal (a non-zero episode-level advantage);
    also the rollouts and env steps the batch consumed.
    """
    by_group: dict[int, list[dict[str, Any]]] = {}
    for episode in episodes:
        by_group.setdefault(int(episode["group_id"]), []).append(episode)
    groups = list(by_group.values())
    mixed = [g for g in groups if len({bool(e["won"]) for e in g}) > 1]
    nonzero = sum(1 for g in groups if len(g) > 1 and np.ptp([float(e["return"]) for e in g]) > 1e-9)
    return {"groups": len(groups), "mixed_success_groups": len(mixed) / max(len(groups), 1),
            "mixed_success_rollouts": sum(len(g) for g in mixed) / max(len(episodes), 1),
            "nonzero_return_groups": nonzero / max(len(groups), 1), "rollouts": len(episodes),
            "env_steps": int(sum(int(e["steps"]) for e in episodes))}


def nonzero_advantage_groups(group_id: np.ndarray, advantages: np.ndarray, eps: float = 1e-9) -> float:
    """The share of groups with at least one row whose advantage is non-zero (as the estimator gave them)."""
    if group_id.size == 0:
        return 0.0
    groups, codes = np.unique(group_id, return_inverse=True)
    signal = np.zeros(len(groups), bool)
    np.logical_or.at(signal, codes.reshape(-1), np.abs(advantages) > eps)
    return float(signal.mean())
