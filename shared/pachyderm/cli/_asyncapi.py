"""``pachyderm asyncapi``: the app's AsyncAPI document, in YAML or JSON, on stdout.

The document is the packaged generic one made specific to the app
(:func:`pachyderm.gateway.asyncapi_document`): a message per command and
query, whose payload is that message's JSON Schema. Nothing is connected to.
"""

from __future__ import annotations

import argparse
import json

import yaml

from .._loading import load_app
from .._settings import Settings
from ..gateway import asyncapi_document


class _Dumper(yaml.SafeDumper):
    """YAML as the packaged document is written: a text of several lines as a block."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None  # PyYAML picks another where a block cannot be
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


async def asyncapi_command(settings: Settings, arguments: argparse.Namespace) -> None:
    assert settings.app is not None  # the command line's check: this command needs one
    document = asyncapi_document(load_app(settings.app))
    if arguments.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        # In the document's own order (info before channels), as a person reads it.
        print(yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True), end="")
