"""Through the gateway, a quarantined command is answered 500 with its own problem type."""

from pachyderm import CommandQuarantinedError
from pachyderm.gateway._problems import problem_from


def test_a_quarantined_command_is_a_problem_of_its_own() -> None:
    problem = problem_from(CommandQuarantinedError("command c of entity e", attempts=3))
    assert problem.status_code == 500
    assert problem.kind == "quarantined"
    document = problem.document.model_dump()
    assert document["type"] == "urn:pachyderm:problem:quarantined"
    assert "an operator may resume it" in document["detail"]
