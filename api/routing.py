"""What every API route shares: the caller's key is checked, the request is counted in the metrics, and whatever
the route raises becomes one answer (`errors.to_api_error`). Routes stay thin: they read, call and format.

    router = APIRouter(route_class=ServiceRoute)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from results import Owner

from .auth import unauthorized
from .errors import APIError, handle_api_error, language, to_api_error


def metrics_route(path: str) -> str:
    """The route's label in the metrics: its path, with `{job_id}`/`{result_id}` written `{id}`."""
    return re.sub(r"\{\w*id\}", "{id}", path)


class ServiceRoute(APIRoute):
    """An API route: counted per route and outcome, every error mapped to OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        label = metrics_route(self.path_format)

        async def handle(request: Request) -> Response:
            api = request.app.state.api
            with api.metrics.track(label):
                try:
                    return await handler(request)
                except Exception as exc:
                    raise to_api_error(exc, language(request), label) from None

        return handle


def caller(request: Request) -> Owner:
    """Who asks: an API key (with API_KEYS) or an admin key, else the browser's owner cookie (a client without
    keys keeps the cookie it is given, e.g. `curl -c jar -b jar`). The key itself is checked by `require_key`."""
    owner = request.app.state.results.owner_of(request.headers)
    if owner is None:  # only without results.ResultsMiddleware, which gives every request an owner cookie
        raise unauthorized("no_owner", language(request))
    return owner


def require_key(request: Request) -> None:
    """A dependency: with API_KEYS set, a 401 (in the caller's language) without one of them."""
    request.app.state.api.keys.check(request.headers.get("authorization"), language(request))


def refuse_other_methods(app: FastAPI, routers: list[APIRouter]) -> None:
    """A request to a path of `app`'s own routes or `routers`' with a method none of them takes: 405 with `Allow`,
    in OpenAI's error shape.

    Without it the UI mounted at "/" would catch it (Starlette tries the next route on a method mismatch) and
    answer 404. Call after the routes are added and before the UI is mounted."""
    allowed: dict[str, set[str]] = {}
    for route in [*app.router.routes, *(r for router in routers for r in router.routes)]:
        if isinstance(route, APIRoute):
            allowed.setdefault(route.path, set()).update(route.methods or ())
    for path, methods in allowed.items():
        allow = ", ".join(sorted(methods))  # FastAPI's routes answer HEAD only where they say so
        # An ASGI app as endpoint: Starlette's route then matches every method (QUERY, TRACE, ...), where a
        # function endpoint would match GET only. The real routes come first.
        app.router.routes.append(Route(path, _MethodNotAllowed(allow), include_in_schema=False))


class _MethodNotAllowed:
    def __init__(self, allow: str):
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        error = APIError(
            405,
            f"{request.method} is not allowed here; use {self.allow}.",
            code="method_not_allowed",
            outcome="bad_request",
            headers={"Allow": self.allow},
        )
        await (await handle_api_error(request, error))(scope, receive, send)
