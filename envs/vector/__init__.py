"""Group vector environments: B tasks x G same-seed copies, stepped in lock-step or asynchronously.

Every group-based trainer (GRPO, GiGPO, HGPO, HiPER, and TRL / verl / OpenRLHF outside hiergym) needs the same
thing from its environments: ``num_tasks`` (B) tasks, each played ``group_size`` (G) times from the identical
start, with per-copy done masks. :func:`make_group_vec` builds that for any single-agent hiergym environment
(or any Gymnasium env with string observations and actions)::

    env = make_group_vec("hiergym/Sokoban-v0", num_tasks=16, group_size=8, seed=0)
    observations, infos = env.reset()             # 128 copies; copies g*G .. g*G+G-1 play task g
    while env.running.any():
        out = env.step(actions)                   # one action per copy; finished copies are masked
        records = out.to_records()                # the trainer's StepRecord rows of this step

Copy ``i`` belongs to group slot ``i // group_size``. Everything about a step comes back in a
:class:`StepOutput` (which also unpacks like Gymnasium's ``obs, rewards, terminated, truncated, infos``):
group and trajectory ids, the step index, the ``state_key`` before (``anchor``) and after the action, the
invalid-action and error flags, so that building the trainer's ``StepBatch`` is a direct copy.

Backends: ``"sync"`` steps the copies in this process (fast envs); ``"process"`` shards them over worker
processes connected by pipes (envs with expensive steps). Both run the very same per-copy code, so the same
seeds give the same results. A worker that dies or hangs (``step_timeout``) is reported in the info of each of
its copies (``info["error"]``), restarted, and its copies end cleanly with ``error=True`` instead of hanging.

Overlap: :meth:`GroupVecEnv.step_async` submits actions for any subset of copies and :meth:`GroupVecEnv.poll`
returns the steps that have finished, so a trainer can step the copies whose actions are ready while the LLM
still generates for the others. See ``docs/vector.md``.
"""

from hiergym.envs.vector.backends import default_num_workers
from hiergym.envs.vector.group_env import (
    BACKENDS,
    DEFAULT_STEP_TIMEOUT,
    SEED_NAMESPACE,
    Backend,
    GroupVecEnv,
    fixed_task_seed,
    group_task_seed,
    make_group_vec,
)
from hiergym.envs.vector.outputs import StepOutput

__all__ = ["BACKENDS", "DEFAULT_STEP_TIMEOUT", "SEED_NAMESPACE", "Backend", "GroupVecEnv", "StepOutput",
           "default_num_workers", "fixed_task_seed", "group_task_seed", "make_group_vec"]
