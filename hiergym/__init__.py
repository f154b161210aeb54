"""hiergym: multi-turn text environments, hierarchical LLM agents and a hierarchical advantage trainer.

``import hiergym`` registers every environment under the ``hiergym/`` namespace, so that
``gymnasium.make("hiergym/Sokoban-v0")`` works (and ``gymnasium.make("hiergym:hiergym/Sokoban-v0")`` in an
interpreter that has not imported hiergym). Importing it loads nothing heavy: torch and transformers load
only when an agent or the trainer is used.
"""

from hiergym.registration import ENVIRONMENTS, env_ids, register_all
from hiergym.version import __version__

register_all()

#: Public names loaded on first use (``import hiergym`` stays light): name -> module that defines it.
_LAZY_ATTRIBUTES = {
    "make_group_vec": "hiergym.envs.vector",
    "GroupVecEnv": "hiergym.envs.vector",
    "StepOutput": "hiergym.envs.vector",
}


def __getattr__(name: str) -> object:
    if name in _LAZY_ATTRIBUTES:
        import importlib

        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'hiergym' has no attribute {name!r}")


__all__ = ["ENVIRONMENTS", "GroupVecEnv", "StepOutput", "__version__", "env_ids", "make_group_vec", "register_all"]
