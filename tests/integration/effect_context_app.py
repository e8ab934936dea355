"""An app whose effect handler records what ``current_effect()`` tells it, and dies
mid-dispatch (before the effect is acknowledged) on an effect's first attempt."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from examples.counter import Counter
from pachyderm import App, EffectHandler, current_effect

DIED = 17  # the exit status of a dispatcher that died mid-dispatch


class DyingOnceMailer(EffectHandler):
    name = "admin_mailer"

    def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        effect = current_effect()
        with Path(config["path"]).open("a") as file:
            file.write(json.dumps(dataclasses.asdict(effect)) + "\n")
        if effect.attempt == 1:
            # As a crash would: no ack, no clean-up, so the broker delivers it again.
            os._exit(DIED)


app = App([Counter], effect_handlers=[DyingOnceMailer()])
