"""Advantage estimators: pure functions ``name(batch: StepBatch, **options) -> np.ndarray``.

Every estimator returns one advantage per row of the batch (planner and executor rows alike), is vectorised
with NumPy (no Python loop over rows; the only loops run over step positions or history levels), and is
registered by name in :data:`ESTIMATORS`, so ``compute_advantages("gigpo", batch, gamma=0.9)`` works.
``docs/training.md`` gives each formula and its paper.

Each estimator's options are a small frozen dataclass (:data:`ESTIMATOR_OPTIONS`), the one declaration of
their names, defaults and ranges: :func:`estimator_options` builds and checks them (the trainer does so when
its config loads, so a typo fails before any work), and every estimator that discounts shares
:data:`DEFAULT_GAMMA`. An options class also says whether its estimator needs a value head.

Shared conventions:
- A *group* is the G rollouts of one task from the same seed (``batch.group_id``).
- Group-relative terms compare a value with the mean of its group (and divide by the group's standard
  deviation when ``normalize="std"``; the unbiased estimate, as ``torch.std``). A value alone in its group
  carries no relative information and gets advantage 0.
- Returns-to-go are discounted per *environment step*: planner rows carry no reward and take the
  return-to-go of the environment step they precede.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hiergym.training.trajectory import EXECUTOR, PLANNER, StepBatch

Estimator = Callable[..., np.ndarray]
ESTIMATORS: dict[str, Estimator] = {}
NORMALIZE_CHOICES = ("mean", "std")
#: Whose statistics a group-relative term takes (``statistics_codes``): the row's group, or its role's.
NORMALIZE_BY_CHOICES = ("group", "role")
EPS = 1e-6
#: The discount per environment step of every estimator that discounts.
DEFAULT_GAMMA = 0.95


# ------------------------------------------------------------------------------------------ options
def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A field of an estimator's options: default, documentation, and the range or choices it must be in."""
    return dataclasses.field(default=default, metadata={"help": help, "low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class EstimatorOptions:
    """Base of every estimator's options: checks each field's type and range when built."""

    #: Whether the estimator reads ``batch.value`` (the trainer then trains a value head).
    @property
    def needs_value_head(self) -> bool:
        return False

    #: The separate turn critic the estimator reads (``training/critic.py``): ``"archer"`` (Q and V, trained
    #: off-policy by TD from a replay buffer), ``"value"`` (V, regressed on the batch's lambda-returns: Turn-PPO's
    #: turn-level ones, or hiper's advantages plus V) or None.
    @property
    def turn_critic(self) -> str | None:
        return None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta.get("choices") is not None:
                if value not in meta["choices"]:
                    raise ValueError(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if meta.get("low") is not None and value < meta["low"]:
                raise ValueError(f"{f.name} must be >= {meta['low']}, got {value!r}")
            if meta.get("high") is not None and value > meta["high"]:
                raise ValueError(f"{f.name} must be <= {meta['high']}, got {value!r}")

    @classmethod
    def describe(cls) -> str:
        return ", ".join(f"{f.name} (default {f.default!r}: {f.metadata['help']})" for f in dataclasses.fields(cls))


#: name -> the options class of the estimator registered under that name.
ESTIMATOR_OPTIONS: dict[str, type[EstimatorOptions]] = {}


def register_estimator(name: str, options: type[EstimatorOptions]) -> Callable[[Estimator], Estimator]:
    def decorate(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        ESTIMATOR_OPTIONS[name] = options
        return fn

    return decorate


def estimator_options(name: str, options: dict[str, Any] | None = None) -> EstimatorOptions:
    """The checked options of estimator ``name``; a clear error names the valid estimators or option keys."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of {', '.join(sorted(ESTIMATORS))}")
    cls = ESTIMATOR_OPTIONS[name]
    options = dict(options or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option {', '.join(map(repr, unknown))} of estimator {name!r}; valid keys: "
                         + (", ".join(valid) if valid else "none (it takes no options)"))
    try:
        return cls(**options)
    except ValueError as exc:
        raise ValueError(f"estimator {name!r}: {exc}") from None


def compute_advantages(name: str, batch: StepBatch, **options) -> np.ndarray:
    """Run the estimator registered as ``name`` with checked options."""
    checked = estimator_options(name, options)
    return ESTIMATORS[name](batch, **dataclasses.asdict(checked))


# ------------------------------------------------------------------------------------------ helpers
def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {normalize!r}")


def factorize(*columns: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes 0..n-1 for the distinct tuples of integer columns (rows with equal tuples share a code)."""
    codes = np.zeros(len(columns[0]), np.int64)
    num_codes = 1
    for column in columns:
        _, column_codes = np.unique(column, return_inverse=True)
        # Both factors are dense, so the product stays below len(rows) ** 2: no int64 overflow.
        combined = codes * (int(column_codes.max(initial=0)) + 1) + column_codes.reshape(-1)
        _, codes = np.unique(combined, return_inverse=True)
        codes = codes.reshape(-1).astype(np.int64)
        num_codes = int(codes.max(initial=-1)) + 1
    return codes, num_codes


def group_relative(values: np.ndarray, codes: np.ndarray, num_codes: int, normalize: str = "mean",
                   eps: float = EPS, mask: np.ndarray | None = None) -> np.ndarray:
    """``values`` minus the mean of their code's members (divided by its std for ``normalize="std"``).

    Only rows where ``mask`` holds are members (statistics and results); others get 0. Members alone in
    their code get 0.
    """
    _check_normalize(normalize)
    member = np.ones(values.shape[0], bool) if mask is None else mask
    weights = member.astype(np.float64)
    counts = np.bincount(codes, weights=weights, minlength=num_codes)
    sums = np.bincount(codes, weights=values * weights, minlength=num_codes)
    mean = sums / np.maximum(counts, 1)
    centered = (values - mean[codes]) * weights
    if normalize == "std":
        squares = np.bincount(codes, weights=centered**2, minlength=num_codes)
        std = np.sqrt(squares / np.maximum(counts - 1, 1))
        centered = centered / (std[codes] + eps)
    centered[counts[codes] < 2] = 0.0
    return centered


class _Layout:
    """Where each row sits in a dense (trajectory x step) grid of executor rows."""

    def __init__(self, batch: StepBatch):
        self.traj, self.num_traj = factorize(batch.traj_id)
        self.executor = batch.level == EXECUTOR
        first_step = np.full(self.num_traj, np.iinfo(np.int64).max)
        np.minimum.at(first_step, self.traj, batch.step)
        self.col = batch.step - first_step[self.traj]
        self.width = int(self.col.max()) + 1 if self.col.size else 0
        # The group of each trajectory (every row of a trajectory has the same group).
        self.traj_group = np.zeros(self.num_traj, np.int64)
        self.traj_group[self.traj] = batch.group_id

    def grid(self, values: np.ndarray, fill: float = 0.0, dtype=np.float64) -> np.ndarray:
        """Scatter executor-row ``values`` into the grid."""
        grid = np.full((self.num_traj, self.width), fill, dtype=dtype)
        ex = self.executor
        grid[self.traj[ex], self.col[ex]] = values[ex]
        return grid

    def gather(self, grid: np.ndarray) -> np.ndarray:
        """Each row's cell (planner rows read the cell of the step they precede)."""
        return grid[self.traj, self.col]


def discounted_returns(rewards: np.ndarray, gamma: float, cut: np.ndarray | None = None) -> np.ndarray:
    """Reverse discounted cumulative sum along axis 1 of a (trajectories x steps) grid.

    ``cut[:, t]`` True stops the sum after step t (a segment boundary): G_t = r_t there.
    """
    returns = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        if cut is not None:
            running = np.where(cut[:, t], 0.0, running)
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def trajectory_returns(batch: StepBatch, layout: _Layout | None = None) -> np.ndarray:
    """Undiscounted return R of each trajectory (indexed by the layout's trajectory code)."""
    layout = layout or _Layout(batch)
    return np.bincount(layout.traj, weights=batch.reward, minlength=layout.num_traj)


def statistics_codes(batch: StepBatch, normalize_by: str = "group") -> np.ndarray:
    """Per row, the code of the set of rows whose statistics a group-relative term uses.

    ``"group"``: the row's group (``group_id``: the G rollouts of one task; in a multi-agent rollout the G
    copies of one task *and seat*, ``training/selfplay.py``). ``"role"``: every row of the same role (seat) in
    the batch, whatever its group - MARS's agent-specific normalisation.
    """
    if normalize_by == "group":
        return batch.group_id
    if normalize_by == "role":
        return batch.roles()
    raise ValueError(f"normalize_by must be one of {', '.join(NORMALIZE_BY_CHOICES)}, got {normalize_by!r}")


def _traj_codes(batch: StepBatch, layout: _Layout, normalize_by: str) -> tuple[np.ndarray, int]:
    """Per trajectory, the code of its statistics set (``statistics_codes``) and the number of codes."""
    per_row = statistics_codes(batch, normalize_by)
    codes, n = factorize(per_row)
    per_traj = np.zeros(layout.num_traj, np.int64)
    per_traj[layout.traj] = codes
    return per_traj, n


def _episode_term(batch: StepBatch, layout: _Layout, normalize: str, episode_stats: str = "trajectory",
                  normalize_by: str = "group") -> np.ndarray:
    returns = trajectory_returns(batch, layout)
    if episode_stats == "trajectory":
        if normalize_by == "group":
            per_traj = group_relative(returns, layout.traj_group, int(layout.traj_group.max()) + 1, normalize)
        else:
            codes, n = _traj_codes(batch, layout, normalize_by)
            per_traj = group_relative(returns, codes, n, normalize)
        return per_traj[layout.traj]
    if episode_stats == "step":  # verl-agent: statistics over step rows, so long trajectories weigh more
        codes, n = factorize(statistics_codes(batch, normalize_by))
        relative = group_relative(returns[layout.traj], codes, n, normalize, mask=layout.executor)
        per_traj = np.zeros(layout.num_traj)
        per_traj[layout.traj[layout.executor]] = relative[layout.executor]
        return per_traj[layout.traj]
    raise ValueError(f"episode_stats must be 'trajectory' or 'step', got {episode_stats!r}")


def _anchor_term(batch: StepBatch, values: np.ndarray, keys: tuple[np.ndarray, ...], normalize: str,
                 normalize_by: str = "group") -> np.ndarray:
    """``values`` relative to the rows of the same group (or role) and level with equal ``keys``."""
    codes, n = factorize(statistics_codes(batch, normalize_by), batch.level.astype(np.int64), *keys)
    return group_relative(values, codes, n, normalize)


# ------------------------------------------------------------------------------------------ estimators
_NORMALIZE_HELP = "group statistics: 'mean' subtracts the group mean, 'std' also divides by the group std"
_STEP_WEIGHT_HELP = "weight w of the step-level term"
_NORMALIZE_BY_HELP = ("rows the statistics are taken over: 'group' (the task's G rollouts; per task and seat in a "
                      "multi-agent rollout) or 'role' (every row of the same seat in the batch, MARS's "
                      "agent-specific normalisation)")


@dataclass(frozen=True)
class GRPOOptions(EstimatorOptions):
    normalize: str = option("std", _NORMALIZE_HELP, choices=NORMALIZE_CHOICES)
    eps: float = option(EPS, "added to the group std before dividing", low=0.0)
    normalize_by: str = option("group", _NORMALIZE_BY_HELP, choices=NORMALIZE_BY_CHOICES)


@register_estimator("grpo", GRPOOptions)
def grpo(batch: StepBatch, **options: Any) -> np.ndarray:
    """GRPO / Flow-GRPO: (R_i - mean_group R) / std_group R, broadcast to every row of trajectory i."""
    o = GRPOOptions(**options)
    normalize, eps = o.normalize, o.eps
    layout = _Layout(batch)
    returns = trajectory_returns(batch, layout)
    if o.normalize_by == "group":
        codes, n = layout.traj_group, int(layout.traj_group.max()) + 1
    else:
        codes, n = _traj_codes(batch, layout, o.normalize_by)
    per_traj = group_relative(returns, codes, n, normalize, eps)
    return per_traj[layout.traj]


@dataclass(frozen=True)
class RLOOOptions(EstimatorOptions):
    pass


@register_estimator("rloo", RLOOOptions)
def rloo(batch: StepBatch) -> np.ndarray:
    """REINFORCE leave-one-out: R_i - mean_{j != i} R_j over the group's trajectories."""
    layout = _Layout(batch)
    returns = trajectory_returns(batch, layout)
    num_groups = int(layout.traj_group.max()) + 1
    counts = np.bincount(layout.traj_group, minlength=num_groups)[layout.traj_group]
    sums = np.bincount(layout.traj_group, weights=returns, minlength=num_groups)[layout.traj_group]
    others = np.maximum(counts - 1, 1)
    per_traj = np.where(counts > 1, returns - (sums - returns) / others, 0.0)
    return per_traj[layout.traj]


@dataclass(frozen=True)
class MARSOptions(EstimatorOptions):
    gamma: float = option(DEFAULT_GAMMA, "discount of the return-to-go per own turn (environment step of the "
                          "seat)", low=0.0, high=1.0)
    normalize: str = option("std", _NORMALIZE_HELP, choices=NORMALIZE_CHOICES)
    normalize_by: str = option("role", _NORMALIZE_BY_HELP, choices=NORMALIZE_BY_CHOICES)
    eps: float = option(EPS, "added to the std before dividing", low=0.0)


@register_estimator("mars", MARSOptions)
def mars(batch: StepBatch, **options: Any) -> np.ndarray:
    """MARS's turn-level advantage with agent-specific normalisation (multi-agent self-play).

    Every turn t of a seat's trajectory gets its discounted return-to-go over the seat's own turns,
    G_t = sum_{t' >= t} gamma^(t' - t) r_t' (a seat's reward for a turn is what it received until its next turn,
    ``hiergym/multiagent_driver.py``), then A_t = (G_t - mean_S G) / (std_S G + eps) over the set S of rows of the
    same level and the same role in the batch (``normalize_by="role"``, the default: each agent's advantages are
    normalised on their own, so a seat that wins more often - the first mover - does not set the other's
    baseline) or of the same group (``"group"``: per task and seat). Planner rows take the return-to-go of the
    step they precede. A row alone in its set gets 0.
    """
    o = MARSOptions(**options)
    layout = _Layout(batch)
    returns_to_go = layout.gather(discounted_returns(layout.grid(batch.reward), o.gamma))
    codes, n = factorize(statistics_codes(batch, o.normalize_by), batch.level.astype(np.int64))
    return group_relative(returns_to_go, codes, n, o.normalize, o.eps)


@dataclass(frozen=True)
class GiGPOOptions(EstimatorOptions):
    gamma: float = option(DEFAULT_GAMMA, "discount of the return-to-go per environment step", low=0.0, high=1.0)
    step_weight: float = option(1.0, _STEP_WEIGHT_HELP, low=0.0)
    normalize: str = option("mean", _NORMALIZE_HELP, choices=NORMALIZE_CHOICES)
    episode_stats: str = option("trajectory", "episode term's statistics over trajectories, or over step rows "
                                "as verl-agent", choices=("trajectory", "step"))
    normalize_by: str = option("group", _NORMALIZE_BY_HELP, choices=NORMALIZE_BY_CHOICES)


@register_estimator("gigpo", GiGPOOptions)
def gigpo(batch: StepBatch, **options: Any) -> np.ndarray:
    """GiGPO: A = A_E + w * A_S.

    A_E: the episode-level group-relative return (``episode_stats="step"`` takes the statistics over step
    rows as verl-agent does). A_S: the discounted return-to-go G_t minus the mean of G over the step's
    *anchor group* — rows of the same group and level with an equal anchor state, across and within
    trajectories — (divided by its std for ``normalize="std"``); 0 for a row alone in its anchor group.
    """
    o = GiGPOOptions(**options)
    gamma, step_weight, normalize = o.gamma, o.step_weight, o.normalize
    layout = _Layout(batch)
    episode = _episode_term(batch, layout, normalize, o.episode_stats, o.normalize_by)
    returns_to_go = layout.gather(discounted_returns(layout.grid(batch.reward), gamma))
    step = _anchor_term(batch, returns_to_go, (batch.anchor,), normalize, o.normalize_by)
    return episode + step_weight * step


def history_signatures(batch: StepBatch, depth: int, layout: _Layout | None = None) -> list[np.ndarray]:
    """Per row, codes of (anchor_t, anchor_{t-1}, ..., anchor_{t-k}) for k = 0..depth, within the trajectory.

    Steps before the start of the trajectory read as a distinct START state, so a step near the start only
    matches steps equally near the start.
    """
    layout = layout or _Layout(batch)
    start = np.iinfo(np.int64).min
    anchors = layout.grid(batch.anchor, fill=start, dtype=np.int64)
    signature = anchors.copy()
    signatures = [layout.gather(signature)]
    for k in range(1, depth + 1):
        lagged = np.full_like(anchors, start)
        lagged[:, k:] = anchors[:, :-k]
        flat, _ = factorize(signature.reshape(-1), lagged.reshape(-1))
        signature = flat.reshape(anchors.shape)
        signatures.append(layout.gather(signature))
    return signatures


@dataclass(frozen=True)
class HGPOOptions(EstimatorOptions):
    depth: int = option(2, "longest history (preceding anchors) a group must agree on", low=0)
    gamma: float = option(DEFAULT_GAMMA, "discount of the return-to-go per environment step", low=0.0, high=1.0)
    step_weight: float = option(1.0, _STEP_WEIGHT_HELP, low=0.0)
    normalize: str = option("mean", _NORMALIZE_HELP, choices=NORMALIZE_CHOICES)
    weight_power: float = option(1.0, "level k weighs (k + 1) ** weight_power", low=0.0)
    normalize_by: str = option("group", _NORMALIZE_BY_HELP, choices=NORMALIZE_BY_CHOICES)


@register_estimator("hgpo", HGPOOptions)
def hgpo(batch: StepBatch, **options: Any) -> np.ndarray:
    """HGPO: A = A_E + w * sum_k lambda_k A_k over the hierarchy of history-consistent groups.

    Level k groups rows of the same group and level whose anchor and k preceding anchors agree (k = 0 is
    GiGPO's anchor group). A_k is G_t relative to the level-k group. Only non-singleton levels count; their
    weights lambda_k are proportional to (k + 1) ** weight_power and normalised to sum to 1, favouring the
    more consistent (longer-history) groups while falling back on larger groups where the long-history one
    is a singleton. A row with no non-singleton level gets A_S = 0.
    """
    o = HGPOOptions(**options)
    depth, gamma, step_weight, normalize, weight_power = o.depth, o.gamma, o.step_weight, o.normalize, o.weight_power
    layout = _Layout(batch)
    episode = _episode_term(batch, layout, normalize, normalize_by=o.normalize_by)
    returns_to_go = layout.gather(discounted_returns(layout.grid(batch.reward), gamma))
    weighted = np.zeros(len(batch))
    total_weight = np.zeros(len(batch))
    stats = statistics_codes(batch, o.normalize_by)
    for k, signature in enumerate(history_signatures(batch, depth, layout)):
        codes, n = factorize(stats, batch.level.astype(np.int64), signature)
        level_advantage = group_relative(returns_to_go, codes, n, normalize)
        shared = np.bincount(codes, minlength=n)[codes] >= 2
        weight = shared * float(k + 1) ** weight_power
        weighted += weight * level_advantage
        total_weight += weight
    step = np.divide(weighted, total_weight, out=np.zeros_like(weighted), where=total_weight > 0)
    return episode + step_weight * step


def _segment_layout(batch: StepBatch, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Grid of segment ids per executor cell, and the cut mask (True on the last step of a segment)."""
    segments = layout.grid(batch.segment.astype(np.float64), fill=-1.0)
    cut = np.zeros(segments.shape, bool)
    cut[:, :-1] = segments[:, :-1] != segments[:, 1:]
    cut[:, -1] = True
    return segments, cut


def _segment_table(batch: StepBatch, layout: _Layout) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense code per row for (trajectory, segment), the segment's position in its trajectory, #codes.

    Segments are numbered consecutively within a trajectory (the trajectory contract), so the position is
    the segment id minus the trajectory's first one.
    """
    codes, n = factorize(layout.traj, batch.segment)
    first_segment = np.full(layout.num_traj, np.iinfo(np.int64).max)
    np.minimum.at(first_segment, layout.traj, batch.segment)
    return codes, batch.segment - first_segment[layout.traj], n


_CRITIC_HIDDEN_HELP = "critic_init='fresh': hidden size of the critic transformer"
_CRITIC_LAYERS_HELP = "critic_init='fresh': layers of the critic transformer"
_CRITIC_INIT_HELP = ("'policy': the critic's transformer starts as a copy of the policy's (the features behaviour "
                     "cloning taught; then trained apart from it); 'fresh': a new small transformer")


@dataclass(frozen=True)
class SeparateCriticOptions(EstimatorOptions):
    """The options of a separate turn critic (``critic="separate"``: ``training/critic.py``'s
    :class:`~hiergym.training.critic.TurnValueCritic`), shared by the estimators that can use one."""

    critic_learning_rate: float = option(1e-3, "critic='separate': AdamW learning rate of the critic (Turn-PPO: "
                                         "the critic learns faster than the actor)", low=0.0)
    critic_updates: int = option(16, "critic='separate': gradient steps per iteration on the batch's "
                                 "lambda-returns", low=0)
    critic_batch_size: int = option(32, "critic='separate': turns per critic minibatch", low=1)
    critic_init: str = option("policy", _CRITIC_INIT_HELP, choices=("policy", "fresh"))
    critic_hidden_size: int = option(64, _CRITIC_HIDDEN_HELP, low=8)
    critic_layers: int = option(2, _CRITIC_LAYERS_HELP, low=1)
    critic_warmup_iterations: int = option(0, "critic='separate': first iterations that fit only the critic (the "
                                           "policy is not updated while a young critic's values are noise)", low=0)

    def _check_critic_options(self, uses_critic: bool, how: str) -> None:
        """The critic options of a run without a separate critic are a mistake, not a no-op: name them."""
        if uses_critic:
            return
        given = [f.name for f in dataclasses.fields(SeparateCriticOptions)
                 if getattr(self, f.name) != f.default]
        if given:
            raise ValueError(f"{', '.join(given)} set a separate critic, which this run has none of: {how}")


@dataclass(frozen=True)
class HiPEROptions(SeparateCriticOptions):
    form: str = option("relative", "'relative' (critic-free, group-relative) or 'value' (GAE at both levels with "
                       "a value head)", choices=("relative", "value"))
    gamma: float = option(DEFAULT_GAMMA, "executor discount per environment step", low=0.0, high=1.0)
    planner_gamma: float = option(1.0, "planner discount per subgoal segment", low=0.0, high=1.0)
    lam: float = option(0.95, "GAE lambda (form='value')", low=0.0, high=1.0)
    step_weight: float = option(1.0, _STEP_WEIGHT_HELP, low=0.0)
    normalize: str = option("mean", _NORMALIZE_HELP, choices=NORMALIZE_CHOICES)
    normalize_by: str = option("group", _NORMALIZE_BY_HELP + " (form='relative')", choices=NORMALIZE_BY_CHOICES)
    critic: str = option("policy", "form='value': 'policy': a value head on the policy's hidden states (it shares "
                         "the policy's trunk, as gae's); 'separate': a turn critic of its own (see critic_init), "
                         "regressed on the same lambda-returns with its own learning rate and updates",
                         choices=("policy", "separate"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic == "separate" and self.form != "value":
            raise ValueError("critic='separate' needs form='value' (the relative form has no critic)")
        self._check_critic_options(self.turn_critic is not None,
                                   "add form=value,critic=separate or drop them")

    @property
    def needs_value_head(self) -> bool:
        return self.form == "value" and self.critic == "policy"

    @property
    def turn_critic(self) -> str | None:
        return "value" if self.form == "value" and self.critic == "separate" else None


@register_estimator("hiper", HiPEROptions)
def hiper(batch: StepBatch, **options: Any) -> np.ndarray:
    """Hierarchical advantage estimation for planner/executor agents (HiPER; HiMAC's critic-free form).

    Segment returns: R_seg = the rewards of a subgoal segment's environment steps. The planner acts on a
    segment-level MDP (one decision per segment); the executor acts on steps inside its segment.

    ``form="relative"`` (critic-free, HiMAC-style), with A_E the episode-level group-relative return:
      planner row  A = A_E + w * rel_anchor(G^plan),  G^plan_s = sum_{j>=s} planner_gamma^(j-s) R_seg_j
      executor row A = A_E + w * rel_anchor(G^in),    G^in_t = discounted return-to-go cut at the segment end
    where rel_anchor compares with rows of the same group, level and anchor state (0 when alone).

    ``form="value"`` (GAE at both levels; needs ``batch.value`` on every row):
      planner:  delta_s = R_seg_s + planner_gamma * V(next planner row) - V(planner row), GAE over segments
      executor: delta_t = r_t + gamma * V_next - V_t, where V_next is the next executor row's value inside the
                segment and, at the segment's last step, the next segment's planner value (0 at the end);
                GAE(lam) accumulated within the segment only.
    """
    o = HiPEROptions(**options)
    form, gamma, planner_gamma, lam, step_weight, normalize = (o.form, o.gamma, o.planner_gamma, o.lam,
                                                              o.step_weight, o.normalize)
    layout = _Layout(batch)
    is_planner = batch.level == PLANNER
    segment_code, segment_rank, num_segments = _segment_table(batch, layout)
    segment_returns = np.bincount(segment_code, weights=batch.reward, minlength=num_segments)
    # Segment grid: trajectories x segment rank.
    seg_traj = np.zeros(num_segments, np.int64)
    seg_traj[segment_code] = layout.traj
    seg_pos = np.zeros(num_segments, np.int64)
    seg_pos[segment_code] = segment_rank
    seg_grid_shape = (layout.num_traj, int(seg_pos.max()) + 1 if num_segments else 0)
    seg_rewards = np.zeros(seg_grid_shape)
    seg_rewards[seg_traj, seg_pos] = segment_returns
    _, cut = _segment_layout(batch, layout)

    if form == "relative":
        episode = _episode_term(batch, layout, normalize, normalize_by=o.normalize_by)
        plan_returns = discounted_returns(seg_rewards, planner_gamma)[seg_traj, seg_pos][segment_code]
        inner_returns = layout.gather(discounted_returns(layout.grid(batch.reward), gamma, cut))
        values = np.where(is_planner, plan_returns, inner_returns)
        return episode + step_weight * _anchor_term(batch, values, (batch.anchor,), normalize, o.normalize_by)

    if np.isnan(batch.value).any():
        raise ValueError("hiper(form='value') needs a value estimate on every row (StepRecord.value)")
    advantages = np.zeros(len(batch))
    # Planner level: GAE over the segment sequence of each trajectory.
    planner_values = np.zeros(seg_grid_shape)
    planner_rows = np.flatnonzero(is_planner)
    planner_values[seg_traj[segment_code[planner_rows]], seg_pos[segment_code[planner_rows]]] = \
        batch.value[planner_rows]
    next_planner = np.zeros(seg_grid_shape)
    next_planner[:, :-1] = planner_values[:, 1:]
    deltas = seg_rewards + planner_gamma * next_planner - planner_values
    planner_gae = discounted_returns(deltas, planner_gamma * lam)
    advantages[planner_rows] = planner_gae[seg_traj[segment_code[planner_rows]],
                                           seg_pos[segment_code[planner_rows]]]
    # Executor level: GAE inside each segment, bootstrapped on the next segment's planner value.
    values = layout.grid(batch.value)
    next_values = np.zeros_like(values)
    next_values[:, :-1] = values[:, 1:]
    executor_rows = np.flatnonzero(~is_planner)
    seg_of_cell = np.zeros(values.shape, np.int64)
    seg_of_cell[layout.traj[executor_rows], layout.col[executor_rows]] = seg_pos[segment_code[executor_rows]]
    following = np.zeros(seg_grid_shape)
    following[:, :-1] = planner_values[:, 1:]
    boundary_value = following[np.arange(values.shape[0])[:, None], seg_of_cell]
    next_values = np.where(cut, boundary_value, next_values)
    deltas = layout.grid(batch.reward) + gamma * next_values - values
    executor_gae = discounted_returns(deltas, gamma * lam, cut)
    advantages[executor_rows] = layout.gather(executor_gae)[executor_rows]
    return advantages


@dataclass(frozen=True)
class GAEOptions(EstimatorOptions):
    gamma: float = option(DEFAULT_GAMMA, "discount per environment step", low=0.0, high=1.0)
    lam: float = option(0.95, "GAE lambda", low=0.0, high=1.0)

    @property
    def needs_value_head(self) -> bool:
        return True


@register_estimator("gae", GAEOptions)
def gae(batch: StepBatch, **options: Any) -> np.ndarray:
    """PPO's generalised advantage estimation over environment steps with a value head.

    delta_t = r_t + gamma * V_{t+1} - V_t (V after the last step is 0), A_t = sum_l (gamma * lam)^l delta_{t+l}.
    Planner rows (if any) take the advantage of the step they precede. Needs ``batch.value``.
    """
    o = GAEOptions(**options)
    gamma, lam = o.gamma, o.lam
    executor = batch.level == EXECUTOR
    if np.isnan(batch.value[executor]).any():
        raise ValueError("gae needs a value estimate on every executor row (StepRecord.value)")
    layout = _Layout(batch)
    values = layout.grid(batch.value)
    next_values = np.zeros_like(values)
    next_values[:, :-1] = values[:, 1:]
    deltas = layout.grid(batch.reward) + gamma * next_values - values
    return layout.gather(discounted_returns(deltas, gamma * lam))


def placebo_advantages(batch: StepBatch, advantages: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """``advantages`` permuted among the rows of each level (a placebo control: the same magnitudes, no credit).
    The permutation is a function of ``seed`` (the run's seed and batch), so a resumed run draws the same."""
    rng = np.random.default_rng(list(seed))
    permuted = advantages.copy()
    for level in np.unique(batch.level):
        rows = np.flatnonzero(batch.level == level)
        permuted[rows] = advantages[rng.permutation(rows)]
    return permuted



def value_targets(batch: StepBatch, advantages: np.ndarray) -> np.ndarray:
    """Critic regression targets: advantage + value (the lambda-return for GAE-style advantages)."""
    return advantages + np.nan_to_num(batch.value)


# ------------------------------------------------------------------------------------------ turn-level critics
def turn_links(batch: StepBatch) -> tuple[np.ndarray, np.ndarray]:
    """For each row, whether the next row is the next turn of the same trajectory, and the steps between them.

    A *turn* is one generation (one row): the turn-level MDP of a hierarchical agent interleaves planner and
    executor turns. Rows of a trajectory are contiguous and in turn order (``StepBatch``'s contract), so the
    next turn is the next row; the discount between turns is ``gamma ** (step' - step)``: none between a planner
    turn and the executor turn of the same environment step, ``gamma`` per environment step otherwise.
    """
    n = len(batch)
    has_next = np.zeros(n, bool)
    has_next[:-1] = batch.traj_id[1:] == batch.traj_id[:-1]
    delta = np.zeros(n, np.int64)
    delta[:-1] = np.where(has_next[:-1], batch.step[1:] - batch.step[:-1], 0)
    return has_next, delta


def _turn_grid(batch: StepBatch) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Each row's (trajectory code, turn index within its trajectory) and the grid's shape."""
    traj, num_traj = factorize(batch.traj_id)
    first = np.full(num_traj, np.iinfo(np.int64).max)
    rows = np.arange(len(batch))
    np.minimum.at(first, traj, rows)
    col = rows - first[traj]
    return traj, col, (num_traj, int(col.max()) + 1 if col.size else 0)


def turn_gae(batch: StepBatch, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE over the turns (rows) of each trajectory with per-row discounts ``gamma ** (step' - step)``.

    delta_k = r_k + gamma^(s_{k+1} - s_k) V_{k+1} - V_k (V after the last turn = 0);
    A_k = delta_k + gamma^(s_{k+1} - s_k) * lam * A_{k+1}.
    """
    has_next, delta_steps = turn_links(batch)
    discount = np.where(has_next, float(gamma) ** delta_steps.astype(np.float64), 0.0)
    next_values = np.zeros(len(batch))
    next_values[:-1] = values[1:]
    deltas = batch.reward + discount * next_values - values
    traj, col, shape = _turn_grid(batch)
    delta_grid = np.zeros(shape)
    delta_grid[traj, col] = deltas
    discount_grid = np.zeros(shape)
    discount_grid[traj, col] = discount * lam
    advantages = np.zeros(shape)
    running = np.zeros(shape[0])
    for k in range(shape[1] - 1, -1, -1):
        running = delta_grid[:, k] + discount_grid[:, k] * running
        advantages[:, k] = running
    return advantages[traj, col]


@dataclass(frozen=True)
class ArcherOptions(EstimatorOptions):
    gamma: float = option(DEFAULT_GAMMA, "discount per environment step of the TD target", low=0.0, high=1.0)
    tau: float = option(0.1, "Polyak rate of the target critic: target <- (1 - tau) target + tau online, after "
                        "every critic step", low=0.0, high=1.0)
    critic_learning_rate: float = option(1e-3, "AdamW learning rate of the critic", low=0.0)
    buffer_size: int = option(8192, "turns kept in the replay buffer (oldest dropped first)", low=1)
    critic_updates: int = option(16, "critic gradient steps per iteration, each on a minibatch drawn from the "
                                 "replay buffer", low=0)
    critic_batch_size: int = option(32, "turns per critic minibatch", low=1)
    warmup_iterations: int = option(0, "first iterations that train only the critic (advantages 0)", low=0)
    normalize: str = option("std", "'std': divide Q - V by its standard deviation over the batch (PPO's advantage "
                            "whitening; a young critic's Q - V is small, so raw it would act as a much lower "
                            "learning rate); 'none': raw Q - V", choices=("std", "none"))
    critic_init: str = option("policy", _CRITIC_INIT_HELP, choices=("policy", "fresh"))
    critic_hidden_size: int = option(64, _CRITIC_HIDDEN_HELP, low=8)
    critic_layers: int = option(2, _CRITIC_LAYERS_HELP, low=1)

    @property
    def turn_critic(self) -> str | None:
        return "archer"


@register_estimator("archer", ArcherOptions)
def archer(batch: StepBatch, **options: Any) -> np.ndarray:
    """ArCHer's utterance-level advantage: A(s, a) = Q(s, a) - V(s) of the off-policy turn critic.

    Every row (planner or executor generation) is a turn; ``batch.q_value`` and ``batch.value`` hold the
    critic's Q of the turn (its prompt and response) and V of its state (the prompt), filled by the trainer's
    :class:`hiergym.training.critic.ArcherCritic` after its TD updates on the replay buffer. Every token of the
    turn is trained with this one advantage (the token-level actor of ArCHer's hierarchy).
    """
    o = ArcherOptions(**options)
    if batch.q_value is None or np.isnan(batch.q_value).any() or np.isnan(batch.value).any():
        raise ValueError("archer needs the turn critic's Q and V on every row (batch.q_value, batch.value): the "
                         "trainer's ArcherCritic fills them (training/critic.py)")
    return _whiten(batch.q_value - batch.value, o.normalize)


def _whiten(advantages: np.ndarray, normalize: str) -> np.ndarray:
    """``normalize="std"``: the advantages divided by their standard deviation over the batch (their mean is
    the trainer's ``center_advantages``); ``"none"``: as they are."""
    if normalize == "std" and advantages.size > 1:
        return advantages / (advantages.std() + EPS)
    return advantages


@dataclass(frozen=True)
class TurnPPOOptions(SeparateCriticOptions):
    gamma: float = option(DEFAULT_GAMMA, "discount per environment step", low=0.0, high=1.0)
    lam: float = option(0.9, "GAE lambda per turn (the Turn-PPO paper's ablation favours about 0.9)",
                        low=0.0, high=1.0)
    critic: str = option("separate", "'separate': a turn critic of its own (see critic_init) with its own learning "
                         "rate and updates; 'policy': the value head on the policy's hidden states that gae uses",
                         choices=("separate", "policy"))
    normalize: str = option("none", "'std': divide the advantages by their standard deviation over the batch "
                            "(critic='separate' only: the policy's value head regresses on the returned "
                            "advantages); 'none': as gae", choices=("std", "none"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic == "policy" and self.normalize != "none":
            raise ValueError("normalize='std' needs critic='separate' (the value head's targets are the returned "
                             "advantages plus the values)")
        self._check_critic_options(self.critic == "separate", "add critic=separate or drop them")

    @property
    def needs_value_head(self) -> bool:
        return self.critic == "policy"

    @property
    def turn_critic(self) -> str | None:
        return "value" if self.critic == "separate" else None


@register_estimator("turn_ppo", TurnPPOOptions)
def turn_ppo(batch: StepBatch, **options: Any) -> np.ndarray:
    """Turn-PPO: GAE on the turn-level MDP, one advantage per turn shared by all of its tokens.

    Every generation is a turn (state = its prompt, action = its whole response), planner and executor turns
    alike in one sequence per trajectory: delta_k = r_k + gamma^(s_{k+1} - s_k) V(s_{k+1}) - V(s_k),
    A_k = delta_k + gamma^(s_{k+1} - s_k) lam A_{k+1} (V after the last turn = 0), and the critic regresses on
    the turn-level lambda-return A_k + V(s_k). For a flat agent (one turn per environment step) this is
    ``gae``; with planner turns, ``gae`` gives a planner row the advantage of the step it precedes, Turn-PPO
    its own. Needs ``batch.value`` on every row.
    """
    o = TurnPPOOptions(**options)
    if np.isnan(batch.value).any():
        raise ValueError("turn_ppo needs a value estimate on every row (StepRecord.value / batch.value)")
    return _whiten(turn_gae(batch, batch.value, o.gamma, o.lam), o.normalize)
