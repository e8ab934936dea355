"""The gateway's interactive documentation: Swagger UI at ``/docs``, rendering
``/openapi.json``.

Swagger UI's files come from the ``swagger-ui-py`` package (Swagger UI 5, which
reads OpenAPI 3.1), served by the gateway itself under ``/docs/assets``: the
page loads nothing from another host, so it works where there is no internet.
The page's URLs are relative to it, so the gateway may be served under a path
prefix.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

DOCS = "/docs"
_ASSETS = DOCS + "/assets"
# What swagger-ui-py ships Swagger UI's distribution as: package, folder.
_SWAGGER_UI = ("swagger_ui", "static")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Pachyderm gateway</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: false,
    });
  </script>
</body>
</html>
"""


async def _page(request: Request) -> Response:
    return HTMLResponse(_PAGE)


def docs_routes() -> list[BaseRoute]:
    """``/docs`` (the page) and ``/docs/assets`` (Swagger UI's files); no authentication:
    the page shows the public document, and a caller's token is typed into it."""
    assets = StaticFiles(packages=[_SWAGGER_UI])
    return [Route(DOCS, _page, methods=["GET"]), Mount(_ASSETS, assets)]
