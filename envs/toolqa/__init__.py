"""ToolQA: multi-hop tool-use question answering over a generated encyclopedia (``hiergym/ToolQA-v0``)."""

from hiergym.envs.toolqa.env import ToolQAEnv

__all__ = ["ToolQAEnv"]
