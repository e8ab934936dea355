"""Who may call: bearer tokens and their rights, and (in development) which host names.

Tokens come from ``PACHYDERM_GATEWAY_TOKENS`` as ``token=right+right,...``,
e.g. ``s3cret=call+read,dashboard=read``. ``call`` allows sending commands,
``read`` reading state, history and queries.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from enum import StrEnum

from starlette.requests import Request
from starlette.responses import Response

from ._problems import Problem

Endpoint = Callable[[Request], Awaitable[Response]]

# RFC 6750's b64token: what a bearer token may look like on the wire.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_REALM = 'Bearer realm="pachyderm"'


class Right(StrEnum):
    """What a token allows: ``call`` sends commands; ``read`` reads state, history, queries."""

    CALL = "call"
    READ = "read"


class Tokens:
    """Bearer tokens and the rights each grants.

    Looking a token up compares it with every known token in constant time,
    so the time taken tells nothing about how much of a guess was right.
    ``repr`` shows no token.
    """

    def __init__(self, grants: Mapping[str, Iterable[Right]]) -> None:
        if not grants:
            raise ValueError("no bearer tokens given")
        self._grants = [(token.encode(), frozenset(rights)) for token, rights in grants.items()]

    @classmethod
    def parse(cls, text: str) -> Tokens:
        """Parse ``token=right+right,token=right``; ``ValueError`` names the faulty entry.

        The message never repeats a token: the text is a secret.
        """
        grants: dict[str, frozenset[Right]] = {}
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        for number, entry in enumerate(entries, start=1):
            # The last "=": base64 tokens may end in "=" padding.
            token, equals, listed = entry.rpartition("=")
            where = f"gateway token entry {number} of {len(entries)}"
            if not equals or not _TOKEN.fullmatch(token):
                raise ValueError(
                    f"{where} must read token=right+right, the token made of letters, digits"
                    " and -._~+/ (rights: call, read)"
                )
            try:
                rights = frozenset(Right(right.strip()) for right in listed.split("+"))
            except ValueError:
                raise ValueError(f"{where} has rights {listed!r}; rights: call, read") from None
            if token in grants:
                raise ValueError(f"{where} repeats an earlier token")
            grants[token] = rights
        return cls(grants)

    def rights_of(self, presented: str) -> frozenset[Right] | None:
        """The rights of ``presented``, or ``None`` when it is no known token."""
        candidate = presented.encode()
        found = None
        for token, rights in self._grants:  # all of them, whatever matched: constant time
            if hmac.compare_digest(token, candidate):
                found = rights
        return found

    def __len__(self) -> int:
        return len(self._grants)

    def __repr__(self) -> str:
        return f"<Tokens: {len(self)}>"


def _presented_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Guard:
    """Admits a request to an endpoint if its token grants the endpoint's right.

    ``tokens`` ``None`` turns authentication off. ``hosts``, when given, is
    every host name a request may address (its ``Host`` header): with
    authentication off on loopback, it keeps web pages from reaching the
    gateway through a DNS name rebound to 127.0.0.1.
    """

    def __init__(self, tokens: Tokens | None, hosts: Collection[str] | None = None) -> None:
        self.tokens = tokens
        self.hosts = hosts

    def protect(self, endpoint: Endpoint, right: Right) -> Endpoint:
        """``endpoint``, answering 401 or 403 instead when the request lacks ``right``."""

        async def guarded(request: Request) -> Response:
            self.admit(request, right)
            return await endpoint(request)

        return guarded

    def admit(self, request: Request, right: Right) -> None:
        """Return if ``request`` may use ``right``; raise the 401 or 403 problem otherwise."""
        if self.hosts is not None and request.url.hostname not in self.hosts:
            raise Problem(
                403,
                f"this gateway answers only requests addressed to {', '.join(sorted(self.hosts))}",
            )
        if self.tokens is None:
            return
        presented = _presented_token(request)
        if presented is None:
            raise Problem(
                401,
                "send a bearer token: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": _REALM},
            )
        rights = self.tokens.rights_of(presented)
        if rights is None:
            raise Problem(
                401,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        if right not in rights:
            raise Problem(
                403,
                f"the bearer token lacks the right {right.value!r}",
                headers={
                    "WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{right}"'
                },
            )
