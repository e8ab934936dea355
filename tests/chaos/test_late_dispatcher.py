"""An effect handler deployed to workers before any dispatcher exists, under worker kills:
every committed effect is eventually delivered, and none blocks another.

No queue is bound for the effects to handlers (counters crossing their threshold)
while workers are killed, so the broker keeps them in ``<ns>.effects-unrouted``;
meanwhile every transfer (a Send to another account) must still be credited.
Then the sink binds its queue, the product routes the waiting effects again, and
the sink must see every one of them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chaos.run import Services

from .scenario import CI_OPTIONS, assert_survives

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]

FAULTS = ["kill_anywhere", "kill_before_effects"]


async def test_effects_wait_for_a_dispatcher_deployed_after_them_while_workers_die(
    tmp_path: Path, shared_services: Services
) -> None:
    options = replace(CI_OPTIONS, sink_after=len(FAULTS))
    verdict = await assert_survives(tmp_path, shared_services, FAULTS, options=options)
    # They did wait: the sink saw them only through the product's routing them again.
    assert verdict.effects_routed_again > 0
