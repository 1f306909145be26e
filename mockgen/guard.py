"""The guard: only the user who started the server drives it (Host, Origin and content type checked).

A web page the user visits can send a cross-origin POST with a simple content type (``text/plain``,
a form) without a preflight, and a DNS-rebinding page reaches the server under its own name. So a
state-changing control request must carry a JSON (or, for a scenario, YAML) content type, which a
page of another origin can only send after a preflight, and preflights are refused; a foreign
``Origin`` is refused; and a ``Host`` that is not a loopback name, the server's own address or an
allowed host is refused everywhere (the contract's two endpoints check it themselves: api.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError
from .http import json_response, note_scope
from .spec import TASKS_PREFIX

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
# What a page of another origin can send without a preflight (the Fetch standard's CORS-safelisted types).
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
SCENARIO_PATH = "/_mock/scenario"
OK_CACHE = 64  # accepted Host values remembered, so that a request pays one set lookup


def is_loopback_host(host: str) -> bool:
    """``localhost``, a name under ``.localhost`` (RFC 6761), or a loopback address (``127.0.0.0/8``, ``::1``)."""
    host = host.lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def split_host(value: str) -> tuple[str, str] | None:
    """A Host header's name (lower case, IPv6 without brackets) and port, or None if it is not one.

    Only what a URL's authority can hold: LDH names (and ``_``), IPv4, bracketed IPv6, a numeric port.
    """
    name, port = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    elif ":" in value:
        name, _, port = value.rpartition(":")
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    if value.endswith(":"):
        return None
    if not value.startswith("[") and not all(_is_label(label) for label in name.rstrip(".").split(".")):
        return None
    return name.lower(), port


def _is_label(label: str) -> bool:
    return label.isascii() and label.replace("-", "").replace("_", "").isalnum()


class HostPolicy:
    """Which ``Host`` headers this server answers: loopback names, the address a request reached,
    the allowed hosts (``*``: any; ``.example.com``: it and its subdomains) and ``--public-url``'s host.

    The check comes before anything else on every request, so an accepted value is remembered:
    ``host in policy.ok`` is all a request usually pays.
    """

    def __init__(self, allowed: Iterable[str] = (), public_url: str | None = None) -> None:
        self.any = False
        self.names: set[str] = set()
        suffixes: list[str] = []
        for entry in allowed:
            entry = entry.strip().lower()
            if entry == "*":
                self.any = True
            elif entry.startswith(".") and len(entry) > 1:
                suffixes.append(entry)
                self.names.add(entry[1:])
            elif entry:
                parsed = split_host(entry)
                self.names.add(parsed[0] if parsed else entry)
        if public_url:
            parsed = split_host(urlsplit(public_url).netloc.rpartition("@")[2])
            if parsed:
                self.names.add(parsed[0])
        self.suffixes = tuple(suffixes)
        # None: no Host header (HTTP/1.0), which no browser sends: the result URLs then use the bound address.
        self.ok: set[str | None] = {None}

    def allows(self, host: str | None, server: Any = None) -> bool:
        """Whether a request with this Host header, reaching ``server`` (the ASGI scope's), is answered."""
        if host in self.ok:
            return True
        assert host is not None
        parsed = split_host(host)
        if parsed is None:
            return False  # never copied into a result URL, even with '*'
        name = parsed[0]
        if self.any or name in self.names or name.endswith(self.suffixes) or is_loopback_host(name):
            if len(self.ok) < OK_CACHE:
                self.ok.add(host)
            return True
        # The address the connection reached (uvicorn gives the socket's IP; an in-process client, its
        # URL's host): a name there cannot be rebound by a page, so it is answered, but not remembered.
        return bool(server) and name == str(server[0]).lower().strip("[]")

    def check(self, host: str | None, scope: Scope) -> None:
        """``allows``, or ApiError 403 saying which flag would let this Host in."""
        if not self.allows(host, scope.get("server")):
            raise ApiError(self.refusal(host), code=403, status=403)

    @staticmethod
    def refusal(host: str | None) -> str:
        parsed = split_host(host or "")
        if parsed is None:
            return f"Host {short(host)} is not a host name: mockgen answers only a well-formed Host header."
        return (
            f"Host {short(host)} is not one this server answers (a DNS-rebinding page could use any name): "
            f"it answers loopback names (localhost, 127.0.0.1, [::1]) and its own address; to reach it as "
            f"{parsed[0]}, start it with --allowed-host {parsed[0]} (MOCKGEN_ALLOWED_HOSTS; '*' allows any)."
        )


def short(value: str | None) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def media_type(value: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return value.split(";", 1)[0].strip().lower() if value else ""


def is_json_type(kind: str) -> bool:
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def same_origin(origin: str, host: str | None, public_url: str | None) -> bool:
    """Whether a request's ``Origin`` is this server: the authority it was sent to, or --public-url's."""
    if origin == "null" or "://" not in origin:
        return False  # 'null': a sandboxed frame, a file:// page, a redirected form
    authority = origin.split("://", 1)[1].lower()
    if host is not None:
        own = host.lower()
        for default in (":80", ":443"):
            if own.endswith(default):
                own = own[: -len(default)]
        if authority == own:
            return True
    if not public_url:
        return False
    public = urlsplit(public_url)
    return origin.lower() == f"{public.scheme}://{public.netloc}".lower()


PREFLIGHT_REFUSED = (
    "the control API answers no CORS preflight: a page of another origin cannot drive it "
    "(call it from a tool, a test or this server's dashboard)"
)


def control_refusal(
    method: str, path: str, headers: dict[bytes, bytes], public_url: str | None
) -> tuple[int, str] | None:
    """Why a web page could have sent this state-changing /_mock/ request (status and message), or None."""
    origin = headers.get(b"origin")
    host = headers.get(b"host")
    if origin is not None and not same_origin(
        origin.decode("latin-1"), None if host is None else host.decode("latin-1"), public_url
    ):
        return 403, (
            f"{method} {path} comes from the page {short(origin.decode('latin-1'))}, not from this server: "
            "the control API is driven by tools (no Origin header) and by this server's own dashboard"
        )
    kind = media_type(headers.get(b"content-type", b"").decode("latin-1"))
    if is_json_type(kind) or (path == SCENARIO_PATH and method == "PUT" and kind in YAML_TYPES):
        return None
    given = f"Content-Type {kind!r}" if kind else "no Content-Type"
    if path == SCENARIO_PATH and method == "PUT":
        wanted = "send YAML as 'Content-Type: application/yaml', or JSON {\"name\": ...} as 'application/json'"
    else:
        wanted = "send 'Content-Type: application/json' (with or without a body)"
    why = "a web page can send that to any server" if not kind or kind in SIMPLE_TYPES else "it is not JSON"
    return 415, f"{method} {path} has {given} ({why}): {wanted}"


class Guard:
    """ASGI middleware: the Host check on every route but the contract's two (they check it
    themselves, on both paths), and the control API's refusals of what a web page could send."""

    def __init__(
        self, app: ASGIApp, hosts: HostPolicy, public_url: str | None = None, routes: Iterable[BaseRoute] = ()
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.public_url = public_url
        # The routes that change something: another method or path is left to the router (404, 405).
        self.changing = [
            (route.path_regex, route.methods & STATE_CHANGING)
            for route in routes
            if isinstance(route, Route) and route.methods and route.methods & STATE_CHANGING
        ]

    def changes(self, method: str, path: str) -> bool:
        return any(method in methods and regex.match(path) for regex, methods in self.changing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        control = path.startswith("/_mock/")
        if not path.startswith(TASKS_PREFIX):
            host = None
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value.decode("latin-1")
                    break
            if host not in self.hosts.ok and not self.hosts.allows(host, scope.get("server")):
                msg = self.hosts.refusal(host)
                if control:
                    await json_response({"error": msg}, 403)(scope, receive, send)
                else:
                    note_scope(scope, error=msg)
                    await json_response({"code": 403, "msg": msg, "data": None}, 403)(scope, receive, send)
                return
        if control:
            method = scope["method"]
            refused = None
            if method == "OPTIONS":
                refused = 403, PREFLIGHT_REFUSED
            elif method in STATE_CHANGING and self.changes(method, path):
                headers = dict(reversed(scope["headers"]))  # reversed: the first of a repeated header wins
                refused = control_refusal(method, path, headers, self.public_url)
            if refused is not None:
                await json_response({"error": refused[1]}, refused[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)
