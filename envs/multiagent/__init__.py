"""hiergym.envs.multiagent: multi-agent text games on PettingZoo (see docs/multiagent.md).

Each game is a module with PettingZoo's constructors::

    from hiergym.envs.multiagent import tictactoe_v0
    env = tictactoe_v0.env()            # AEC env
    penv = tictactoe_v0.parallel_env()  # Parallel env

Games: ``tictactoe_v0`` and ``kuhn_poker_v0`` (competitive), ``negotiation_v0`` (mixed-motive),
``household_coop_v0`` (cooperative). Gymnasium views against a fixed opponent are registered as
``hiergym/TicTacToe-v0``, ``hiergym/KuhnPoker-v0``, ``hiergym/Negotiation-v0`` and
``hiergym/HouseholdCoop-v0`` (:mod:`hiergym.envs.multiagent.single_agent`).
"""

#: PettingZoo module names of every multi-agent game, for discovery (``hiergym list`` prints them).
GAMES = ("tictactoe_v0", "kuhn_poker_v0", "negotiation_v0", "household_coop_v0")

#: The Gymnasium view of each game (``single_agent.py``): its single-agent face, and the env id that names the
#: prompt family of an LLM agent playing the game.
GAME_ENVS = {"tictactoe_v0": "hiergym/TicTacToe-v0", "kuhn_poker_v0": "hiergym/KuhnPoker-v0",
             "negotiation_v0": "hiergym/Negotiation-v0", "household_coop_v0": "hiergym/HouseholdCoop-v0"}

__all__ = ["GAMES", "GAME_ENVS"]
