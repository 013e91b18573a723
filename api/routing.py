"""What every API route shares: the caller's key is checked, the request is counted in the metrics, and whatever
the route raises becomes one answer (`errors.to_api_error`). Routes stay thin: they read, call and format.

    router = APIRouter(route_class=ServiceRoute)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import language, to_api_error


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


def require_key(request: Request) -> None:
    """A dependency: with API_KEYS set, a 401 (in the caller's language) without one of them."""
    request.app.state.api.keys.check(request.headers.get("authorization"), language(request))
