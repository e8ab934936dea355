"""The app every workload serves: the example counter, without its effect.

``examples.counter.Counter`` tells an administrator when a count crosses 10;
the baselines have no outbox, so the benchmark registers it with
``threshold=None`` and all three systems do the same work per command: fold
one ``Increased`` event and reply with the new state ``{"count": n}``. Entity,
messages and wire format (``Increment`` / ``Increased``, ``{"amount": n}``)
are the example's own.
"""

from __future__ import annotations

from examples.counter import Counter, Increment
from pachyderm import App

APP = App([Counter(threshold=None)])
SPEC = "bench.app:APP"
ENTITY_TYPE = Counter.type_name
# The name commands travel under (the protocol's pachyderm-message-name).
COMMAND = Counter.command_types.name_of(Increment())
