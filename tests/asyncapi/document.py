"""docs/asyncapi.yaml as the tests read it: the document, its official schemas, and
whether an AMQP message the fleet sends or accepts is one of its messages.

The document's one source is the package's ``pachyderm/gateway/asyncapi.yaml``;
``docs/asyncapi.yaml`` is a symbolic link to it (test_document checks the link).

A message matches the document's message ``name`` when its decoded body is
valid against that message's ``payload`` schema, its application headers
against its ``headers`` schema, and every header it carries is one the
document declares (a header the fleet sends and the document does not name
is a gap in the document, even where the schema would let it through).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

import yaml
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from pachyderm import _codec as codec

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "shared" / "pachyderm" / "gateway" / "asyncapi.yaml"
DOCS_LINK = ROOT / "docs" / "asyncapi.yaml"
SPECS = Path(__file__).resolve().parent / "specs"
ASYNCAPI_SCHEMA = SPECS / "schemas" / "2.6.0.json"
AMQP_BINDINGS = SPECS / "bindings" / "amqp" / "0.3.0"
_EXTENSIONS = SPECS / "definitions" / "3.0.0" / "specificationExtension.json"
# Where the document sits in the registry its message schemas are resolved in.
_DOCUMENT_URI = "urn:pachyderm:asyncapi"

Json = dict[str, Any]


def document() -> Json:
    """docs/asyncapi.yaml, parsed (a fresh copy each time: tests may spoil it)."""
    parsed = yaml.safe_load(DOCUMENT.read_text())
    assert isinstance(parsed, dict), "docs/asyncapi.yaml is not a mapping"
    return cast(Json, parsed)


def _load(path: Path) -> Json:
    return cast(Json, json.loads(path.read_text()))


@cache
def _asyncapi_validator() -> Draft7Validator:
    return Draft7Validator(_load(ASYNCAPI_SCHEMA))


@cache
def _binding_validators() -> dict[str, Draft7Validator]:
    registry: Registry[Any] = Registry().with_resource(
        _load(_EXTENSIONS)["$id"], DRAFT7.create_resource(_load(_EXTENSIONS))
    )
    return {
        kind: Draft7Validator(_load(AMQP_BINDINGS / f"{kind}.json"), registry=registry)
        for kind in ("channel", "operation", "message")
    }


def _amqp_bindings(spec: Json) -> Iterator[tuple[str, str, Json]]:
    """Every AMQP binding of the document: (where, its kind, the binding)."""
    for name, channel in spec.get("channels", {}).items():
        if "amqp" in channel.get("bindings", {}):
            yield f"channels/{name}", "channel", channel["bindings"]["amqp"]
        for operation in ("publish", "subscribe"):
            bindings = channel.get(operation, {}).get("bindings", {})
            if "amqp" in bindings:
                yield f"channels/{name}/{operation}", "operation", bindings["amqp"]
    for name, message in spec.get("components", {}).get("messages", {}).items():
        if "amqp" in message.get("bindings", {}):
            yield f"components/messages/{name}", "message", message["bindings"]["amqp"]


def official_errors(spec: Json) -> list[str]:
    """What the official JSON Schemas find wrong in ``spec``: the AsyncAPI 2.6.0 schema,
    and the AMQP binding schemas for its bindings (as AsyncAPI's own parser checks them)."""
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _asyncapi_validator().iter_errors(spec)
    ]
    for where, kind, binding in _amqp_bindings(spec):
        errors += [
            f"{where}/bindings/amqp: {e.message}"
            for e in _binding_validators()[kind].iter_errors(binding)
        ]
    return errors


def amqp_binding_count(spec: Json) -> int:
    return sum(1 for _ in _amqp_bindings(spec))


def resolve(spec: Json, node: Any) -> Any:
    """``node``, or what its local ``$ref`` (``#/...``) points at in ``spec``."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        pointer = node["$ref"]
        assert pointer.startswith("#/"), f"only local references are used: {pointer}"
        node = spec
        for part in pointer[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def message(spec: Json, name: str) -> Json:
    """The document's message ``name`` (components/messages)."""
    found = resolve(spec, spec["components"]["messages"][name])
    assert isinstance(found, dict)
    return cast(Json, found)


def content_type(spec: Json, name: str) -> str:
    """The content type the document gives message ``name`` (else its default)."""
    return str(message(spec, name).get("contentType", spec["defaultContentType"]))


def declared_headers(spec: Json, name: str) -> set[str]:
    """The application headers the document names for message ``name``."""
    headers = resolve(spec, message(spec, name).get("headers", {}))
    return set(headers.get("properties", {}))


def _schema_errors(spec: Json, name: str, part: str, instance: Any) -> list[str]:
    if part not in message(spec, name):
        return []
    # Validated where it sits in the document, so that its own references resolve.
    registry: Registry[Any] = Registry().with_resource(
        _DOCUMENT_URI, Resource.from_contents(spec, default_specification=DRAFT7)
    )
    pointer = f"{_DOCUMENT_URI}#/components/messages/{name}/{part}"
    validator = Draft7Validator(
        {"$ref": pointer}, registry=registry, format_checker=FormatChecker()
    )
    return [
        f"{name} {part} {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def mismatches(
    spec: Json, name: str, *, body: bytes, content_type: str | None, headers: Mapping[str, Any]
) -> list[str]:
    """How an AMQP message (body as sent, its content type and application headers)
    differs from the document's message ``name``; empty when it is one."""
    problems = _schema_errors(spec, name, "payload", codec.decode(body, content_type))
    problems += _schema_errors(spec, name, "headers", dict(headers))
    undeclared = set(headers) - declared_headers(spec, name)
    if undeclared:
        problems.append(f"{name} headers not in the document: {sorted(undeclared)}")
    return problems
