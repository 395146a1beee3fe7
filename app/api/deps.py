"""Dependencies of the routes, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
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
