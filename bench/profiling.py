"""Where the CPU goes: py-spy samples of running processes, folded by component.

py-spy attaches to a process from outside (``--nonblocking``: it never pauses
it) and writes collapsed stacks; only samples of a thread on the CPU are kept
(py-spy leaves idle ones out), so a function's share of the samples is its
share of the process's CPU time. Time in C code (msgpack, the socket calls)
counts towards the Python function that called it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_STOP_TIMEOUT = 60

# Component of a frame, by the first pattern its file path contains.
COMPONENTS: list[tuple[str, str]] = [
    ("pachyderm/worker/", "pachyderm worker (engine, partitions, cache)"),
    ("pachyderm/store/", "pachyderm store"),
    ("pachyderm/transport/", "pachyderm transport"),
    ("pachyderm/telemetry/", "pachyderm telemetry"),
    ("pachyderm/fleet/", "pachyderm fleet membership"),
    ("pachyderm/", "pachyderm wire, codec, entity"),
    ("bench/", "bench (client loop, baseline code)"),
    ("aio_pika/", "aio-pika / aiormq / pamqp"),
    ("aiormq/", "aio-pika / aiormq / pamqp"),
    ("pamqp/", "aio-pika / aiormq / pamqp"),
    ("asyncpg/", "asyncpg"),
    ("opentelemetry/", "opentelemetry / prometheus"),
    ("prometheus_client/", "opentelemetry / prometheus"),
    ("pydantic", "pydantic"),
    ("msgpack/", "msgpack"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
]
OTHER = "other Python (stdlib: uuid, dataclasses, contextlib, ...)"
# Work counted wherever it sits on the stack (a sample counts once however deep).
GROUPS: dict[str, tuple[str, ...]] = {
    "telemetry": ("pachyderm/telemetry/", "opentelemetry/", "prometheus_client/"),
}


def py_spy() -> str | None:
    """The py-spy executable, if installed (it is not a dependency: pip install py-spy)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def short_path(path: str) -> str:
    for marker in ("site-packages/", "shared/", "/lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3." else rest
    if "/bench/" in path:
        return "bench/" + path.split("/bench/", 1)[1]
    return path.rsplit("/", 1)[-1]


def component(path: str) -> str:
    short = short_path(path)
    for pattern, name in COMPONENTS:
        if pattern in short:
            return name
    return OTHER


@dataclass
class Profile:
    """Samples of one process, by function (self and inclusive) and by component."""

    samples: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    components: Counter[str] = field(default_factory=Counter)
    groups: Counter[str] = field(default_factory=Counter)

    def add(self, stack: list[tuple[str, str]], count: int) -> None:
        if not stack:
            return
        self.samples += count
        files = [short_path(file) for _, file in stack]
        names = [f"{function} ({file})" for (function, _), file in zip(stack, files, strict=True)]
        self.self_time[names[-1]] += count
        for name in set(names):
            self.inclusive[name] += count
        self.components[component(stack[-1][1])] += count
        for group, patterns in GROUPS.items():
            if any(pattern in file for file in files for pattern in patterns):
                self.groups[group] += count

    def merge(self, other: Profile) -> None:
        self.samples += other.samples
        self.self_time.update(other.self_time)
        self.inclusive.update(other.inclusive)
        self.components.update(other.components)
        self.groups.update(other.groups)

    def share(self, counter: Counter[str], top: int) -> list[tuple[str, float]]:
        total = self.samples or 1
        return [(name, count / total) for name, count in counter.most_common(top)]


def parse(text: str) -> Profile:
    """A profile from py-spy's raw format: ``frame;frame;... count`` per line."""
    profile = Profile()
    for line in text.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = []
        for frame in stack_text.split(";"):
            match = _FRAME.match(frame)
            if match:
                stack.append((match["function"], match["file"]))
        profile.add(stack, int(count))
    return profile


class Sampler:
    """py-spy recording some processes until :meth:`stop`."""

    def __init__(self, executable: str, folder: Path, targets: dict[str, int], rate: int = 100):
        self.folder = folder
        self.targets = targets
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        for label, pid in targets.items():
            command = [executable, "record", "--pid", str(pid), "--rate", str(rate)]
            command += ["--format", "raw", "--full-filenames", "--nonblocking", "--gil"]
            command += ["--output", str(self._output(label))]
            with (folder / f"py-spy-{label}.log").open("wb") as log:
                self._running[label] = subprocess.Popen(command, stdout=log, stderr=log)

    def _output(self, label: str) -> Path:
        return self.folder / f"{label}.raw"

    def stop(self) -> dict[str, Profile]:
        """Stop sampling (py-spy writes its file on SIGINT); the profiles it took."""
        for process in self._running.values():
            process.send_signal(signal.SIGINT)
        profiles = {}
        for label, process in self._running.items():
            process.wait(_STOP_TIMEOUT)
            output = self._output(label)
            if output.exists():
                profiles[label] = parse(output.read_text(errors="replace"))
        return profiles
