"""An app whose effect handler appends each payload to a file (for `pachyderm effects`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from examples.counter import Counter
from pachyderm import App, EffectHandler


class FileMailer(EffectHandler):
    name = "admin_mailer"

    def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        with Path(config["path"]).open("a") as file:
            file.write(json.dumps(payload) + "\n")


app = App([Counter], effect_handlers=[FileMailer()])
