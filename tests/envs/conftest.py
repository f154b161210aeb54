"""Helpers the environment tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def wander_to_features() -> Callable[[Any], None]:
    """Leave a WebShop env (just reset) on a page its expert did not choose: search something unrelated, open
    the first product, open its features."""

    def wander(env: Any) -> None:
        env.step("search[comfortable gift]")
        first = next(a for a in env._info(True)["admissible_actions"] if a.startswith("click[b0"))
        env.step(first)
        env.step("click[features]")

    return wander
