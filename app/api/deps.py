"""Dependencies of the routes, as Annotated aliases."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.state import ApiState
from app.core.errors import ApiError
from app.core.probes import is_probe
from app.core.security import AuthError, NoTenantError, Principal

log = structlog.get_logger(__name__)

_bearer = HTTPBearer(auto_error=False, description="A Supabase access token.")
_UNAUTHORIZED = ApiError(
    401,
    "unauthorized",
    "A valid bearer token is required.",
    headers={"WWW-Authenticate": "Bearer"},
)


async def get_state(request: Request) -> ApiState:
    # async: FastAPI runs a plain function dependency in a thread, a hop on every request.
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


async def get_principal(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _UNAUTHORIZED
    try:
        principal = await state.verifier.verify(credentials.credentials)
    except AuthError as exc:
        # Why is logged for operators; the client learns nothing it could use to probe.
        log.info("token_rejected", reason=str(exc))
        raise _UNAUTHORIZED from None
    except NoTenantError as exc:
        raise ApiError(403, "no_organization", f"The token carries no organization id at {exc}.") from None
    structlog.contextvars.bind_contextvars(
        user_id=str(principal.user_id), org_id=str(principal.org_id), probe=is_probe(principal.org_id)
    )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

_declared_query: dict[int, frozenset[str]] = {}


def _query_aliases(dependant: Dependant) -> Iterator[str]:
    for param in dependant.query_params:
        yield param.alias
    for sub in dependant.dependencies:
        yield from _query_aliases(sub)


async def reject_unknown_query_params(request: Request) -> None:
    """422 for query parameters a route does not declare, so a typo never silently filters
    nothing, and for any given twice, which would otherwise mean whichever came last."""
    if not request.scope["query_string"]:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _declared_query.get(id(route))
    if allowed is None:
        allowed = _declared_query[id(route)] = frozenset(_query_aliases(route.dependant))
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - allowed)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ApiError(422, "unknown_parameter", f"Unknown query parameter: {listed}.")
    repeated = _repeated(names)
    if repeated:
        listed = ", ".join(repr(name) for name in repeated)
        raise ApiError(422, "repeated_parameter", f"Query parameter given more than once: {listed}.")


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON, and which jsonb refuses.
    raise ValueError(f"{name} is not valid JSON")


def _repeated(names: list[str]) -> list[str]:
    """The names given more than once, sorted; linear, as it runs before authentication."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        repeated = _repeated([key for key, _ in pairs])
        raise ValueError(f"duplicate key {', '.join(repr(k) for k in repeated)}")
    return result


def strict_json_loads(body: bytes) -> Any:
    """json.loads that refuses duplicate keys and NaN/Infinity, as json.JSONDecodeError."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        text = body.decode("utf-8", errors="replace")
        raise json.JSONDecodeError(str(exc), text, 0) from None


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json_loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body may not repeat a key (the last would silently win) nor use
    NaN or Infinity; either is a 422 naming the problem."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict
