"""A fleet of workers sharing a namespace's partitions.

Each worker renews its membership (:class:`PostgresMembership`, or
:class:`SoloMembership` in embedded mode) and consumes the partitions that
:func:`assign` gives it among the live workers: every worker computes the same
assignment on its own, and it changes whenever a worker joins, leaves or dies.
"""

from ._assignment import assign, owned_by
from ._membership import Membership, OnChange, PostgresMembership, SoloMembership

__all__ = [
    "Membership",
    "OnChange",
    "PostgresMembership",
    "SoloMembership",
    "assign",
    "owned_by",
]
