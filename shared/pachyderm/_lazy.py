"""Public names of a package whose module is imported only when the name is first used.

The PostgreSQL and RabbitMQ backends pull in asyncpg and aio-pika, which the
embedded mode and entity tests never need: their packages export those
backends through :func:`lazy_names`, so ``import pachyderm`` loads neither
library. Invariant: a lazily exported name is the very object its module
defines (the same class, for ``isinstance`` and identity), cached in the
package once loaded, and a name nobody exports is still an ``AttributeError``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_names(package: str, modules: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``modules[name]`` on first use.

    ``modules`` maps each lazy public name to the relative module defining it
    (``{"PostgresEventStore": "._postgres"}``).
    """

    def lazy_getattr(name: str) -> object:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        # Later look-ups find it in the package and never come back here.
        setattr(sys.modules[package], name, value)
        return value

    return lazy_getattr
