"""What a benchmark run on its own (``python -m bench.timers``, ``python -m
bench.projections``) does with its runs.

Its medians (with min and max, and whether each target was met) go under its
key of bench/results.json and its section of bench/results.md; every other key
and section is kept as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import HERE
from .fleet import summary

Target = tuple[str, float]  # (">=" or "<=", bound)


def met(target: Target, value: float) -> bool:
    sign, bound = target
    return value >= bound if sign == ">=" else value <= bound


def medians(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    targets: Mapping[str, Target],
    command: str,
) -> dict[str, Any]:
    """The runs' ``rows``: each metric's median, spread and target, the rows themselves."""
    spread = {name: summary([float(row[name]) for row in rows]) for name in metrics}
    return {
        **{name: spread[name]["median"] for name in metrics},
        "spread": spread,
        "targets": {
            name: {
                "target": f"{target[0]} {target[1]:g}",
                "met": met(target, spread[name]["median"]),
            }
            for name, target in targets.items()
        },
        "runs": list(rows),
        "command": command,
    }


def replaced_section(page: str, heading: str, section: str) -> str:
    """``page`` with the section under ``heading`` replaced by ``section`` (or appended)."""
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(page):
        return pattern.sub(lambda _: section + "\n", page, count=1)
    return page.rstrip("\n") + "\n\n" + section


def write(
    key: str | Sequence[str],
    heading: str,
    data: dict[str, Any],
    section: str,
    *,
    directory: Path = HERE,
) -> None:
    """``data`` under ``key`` of results.json, ``section`` under ``heading`` of results.md.

    ``key`` may be a path (``("scale", "simulation")``): only its last key is
    replaced, the keys beside it on the way are kept (a benchmark writing one part
    of ``scale`` leaves the other parts alone).
    """
    results, page = directory / "results.json", directory / "results.md"
    found = json.loads(results.read_text()) if results.exists() else {}
    *parents, last = (key,) if isinstance(key, str) else tuple(key)
    place = found
    for parent in parents:
        place = place.setdefault(parent, {})
    place[last] = data
    results.write_text(json.dumps(found, indent=2) + "\n")
    existing = page.read_text() if page.exists() else ""
    page.write_text(replaced_section(existing, heading, section))
