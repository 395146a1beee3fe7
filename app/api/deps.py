"""Dependencies of the routes, as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.state import ApiState
from app.core.errors import ApiError
from app.core.security import AuthError, NoTenantError, Principal

log = structlog.get_logger(__name__)

_bearer = HTTPBearer(auto_error=False, description="A Supabase access token.")
_UNAUTHORIZED = ApiError(
    401,
    "unauthorized",
    "A valid bearer token is required.",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_state(request: Request) -> ApiState:
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
    structlog.contextvars.bind_contextvars(user_id=str(principal.user_id), org_id=str(principal.org_id))
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

_declared_query: dict[int, frozenset[str]] = {}


def _query_aliases(dependant: Dependant) -> Iterator[str]:
    for param in dependant.query_params:
        yield param.alias
    for sub in dependant.dependencies:
        yield from _query_aliases(sub)


def reject_unknown_query_params(request: Request) -> None:
    """422 for query parameters a route does not declare, so a typo never silently filters nothing."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _declared_query.get(id(route))
    if allowed is None:
        allowed = _declared_query[id(route)] = frozenset(_query_aliases(route.dependant))
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise ApiError(422, "unknown_parameter", f"Unknown query parameter: {names}.")
