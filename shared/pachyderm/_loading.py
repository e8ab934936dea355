"""Find the user's :class:`App` from a ``module`` or ``module:attribute`` string.

Every way a spec can miss (no such module, no such attribute, not an App) is a
:class:`DefinitionError` saying which, in one line; an error raised by the
module's own code while it imports is the module's, and goes on as it was.
"""

from __future__ import annotations

import importlib
import os
import sys

from ._app import App
from ._errors import DefinitionError


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) and check it is an App."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name or not attribute.isidentifier():
        raise DefinitionError(f"{spec!r} is not module[:attribute], e.g. myapp:app")
    # Like uvicorn: an app module in the working directory is found without
    # installing it, as when run through a console script.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise DefinitionError(
                f"cannot import app module {module_name!r}: no module named {missing!r}"
                f" (looked in {os.getcwd()} and the installed packages)"
            ) from None
        raise DefinitionError(f"cannot import app module {module_name!r}: {error}") from error
    except ImportError as error:
        raise DefinitionError(f"cannot import app module {module_name!r}: {error}") from error
    if not hasattr(module, attribute):
        raise DefinitionError(f"app module {module_name!r} has no attribute {attribute!r}")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise DefinitionError(f"{spec!r} is not a pachyderm.App (found {type(app).__name__})")
    return app
