"""Running a standalone benchmark the way its tests do: ``python -m bench.NAME --quick``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_quick(module: str, output: Path, *services: str) -> dict[str, Any]:
    """Run ``python -m MODULE --quick`` against ``services`` (``--database-url URL``
    and the like); the JSON it wrote to ``output``. Fails showing its output."""
    command = [sys.executable, "-m", module, "--quick", "--json-out", str(output), *services]
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    found: dict[str, Any] = json.loads(output.read_text())
    return found
