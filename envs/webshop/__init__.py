"""WebShop: search a catalog, read product pages and buy what an instruction asks for (``hiergym/WebShop-v0``).

See :mod:`hiergym.envs.webshop.env` for the environment and ``docs/webshop.md`` for the details. Importing this
package is light; the catalog and search index load when an environment is made.
"""

from __future__ import annotations

__all__ = ["WebShopEnv"]


def __getattr__(name: str):
    if name == "WebShopEnv":
        from hiergym.envs.webshop.env import WebShopEnv

        return WebShopEnv
    raise AttributeError(name)
