"""hiergym.envs: Gymnasium-compatible multi-turn text environments (see docs/environments.md)."""
