"""ALFWorld's household tasks for hiergym: a procedural generator, a fast native engine, an exporter to
ALFWorld's ``.tw-pddl`` games and the real ALFWorld engine (see ``docs/alfworld.md``)."""

from hiergym.envs.alfworld.engine import NativeEngine
from hiergym.envs.alfworld.env import AlfWorldEnv
from hiergym.envs.alfworld.world import TASK_TYPES, Task, generate_task

__all__ = ["AlfWorldEnv", "NativeEngine", "TASK_TYPES", "Task", "generate_task"]
