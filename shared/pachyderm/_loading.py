"""Find the user's :class:`App` from a ``module`` or ``module:attribute`` string."""

from __future__ import annotations

import importlib
import os
import sys

from ._app import App
from ._errors import DefinitionError


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) and check it is an App."""
    module_name, _, attribute = spec.partition(":")
    # Like uvicorn: an app module in the working directory is found without
    # installing it, as when run through a console script.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise DefinitionError(f"cannot import app module {module_name!r}: {error}") from error
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise DefinitionError(f"{spec!r} is not a pachyderm.App (found {type(app).__name__})")
    return app
