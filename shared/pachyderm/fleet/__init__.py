"""A fleet of workers sharing a namespace's partitions.

Each worker renews its membership (:class:`PostgresMembership`, or
:class:`SoloMembership` in embedded mode) and consumes the partitions that
:func:`assign` gives it among the live workers: every worker computes the same
assignment on its own, and it changes whenever a worker leaves or dies, or a
joining one has settled (workers started together count together). The
simulation of a fleet (``pachyderm.fleet._simulation``) runs this same code for
hundreds of workers on a virtual clock; docs/scaling.md has its figures.
:class:`PostgresMembership` is imported on first use, and asyncpg with it.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._assignment import assign, owned_by
from ._port import Membership, OnChange
from ._solo import SoloMembership

if TYPE_CHECKING:
    from ._membership import PostgresMembership
else:
    # Hidden from type checkers, which then still report a misspelt name.
    __getattr__ = lazy_names(__name__, {"PostgresMembership": "._membership"})

__all__ = [
    "Membership",
    "OnChange",
    "PostgresMembership",
    "SoloMembership",
    "assign",
    "owned_by",
]
