"""The store and transport contract suites ship in the package, for any backend.

A third party's backend proves itself with the very tests ours pass, so the
suites may use only the package, must not be collected on their own, and must
not make pytest a dependency of ``import pachyderm.testing``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import pachyderm.testing
from pachyderm.testing import _store_contract, _transport_contract

from .python_process import run_python

SUITES = [_store_contract, _transport_contract]

WITHOUT_PYTEST = """
import sys
sys.modules["pytest"] = None  # as if pytest were not installed
import pachyderm.testing
from pachyderm.testing import given

try:
    pachyderm.testing.EventStoreContract
except ImportError as error:
    print("contract:", error.name)
"""


def test_the_testing_kit_imports_without_pytest() -> None:
    finished = run_python("-c", WITHOUT_PYTEST)
    assert finished.returncode == 0, finished.stderr
    # Only the suites need it, and say so when first used.
    assert finished.stdout.strip() == "contract: pytest"


@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: suite.__name__)
def test_a_suite_imports_nothing_from_outside_the_package(suite: object) -> None:
    tree = ast.parse(Path(str(getattr(suite, "__file__", ""))).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) <= {"pytest"}, imported


@pytest.mark.parametrize(
    ("name", "suite"),
    [
        ("EventStoreContract", _store_contract),
        ("StoreFactory", _store_contract),
        ("TransportContract", _transport_contract),
        ("DeadLetters", _transport_contract),
        ("InspectableTransport", _transport_contract),
    ],
)
def test_the_package_exports_the_suites_own_objects(name: str, suite: object) -> None:
    assert getattr(pachyderm.testing, name) is getattr(suite, name)


@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: suite.__name__)
def test_a_failing_assert_of_a_suite_is_explained(suite: object) -> None:
    # pytest rewrote the module's asserts, as it does a test module's.
    assert "@py_builtins" in vars(suite)


def test_the_suites_are_collected_only_through_a_backends_subclass() -> None:
    for base in (pachyderm.testing.EventStoreContract, pachyderm.testing.TransportContract):
        assert not base.__name__.startswith("Test")
        assert getattr(base, "__test__", True)  # its subclasses stay collectable
