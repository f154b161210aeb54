"""hiergym.agents: agents that act in hiergym environments (see docs/agents.md)."""
