"""hiergym: multi-turn text environments, hierarchical LLM agents and a hierarchical advantage trainer.

``import hiergym`` registers every environment under the ``hiergym/`` namespace, so that
``gymnasium.make("hiergym/Sokoban-v0")`` works (and ``gymnasium.make("hiergym:hiergym/Sokoban-v0")`` in an
interpreter that has not imported hiergym). Importing it loads nothing heavy: torch and transformers load
only when an agent or the trainer is used.
"""

from hiergym.registration import ENVIRONMENTS, env_ids, register_all
from hiergym.version import __version__

register_all()

__all__ = ["ENVIRONMENTS", "__version__", "env_ids", "register_all"]
