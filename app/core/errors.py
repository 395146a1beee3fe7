"""The one error body shape, `{"error": {"code", "message"}}`, for every failure."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class ErrorDetail(BaseModel):
    """A machine-readable code and a human-readable message."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class ApiError(Exception):
    """An expected failure that maps to one HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSONResponse in the error shape."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


# Codes for framework errors that have a better name than their HTTP phrase.
_CODES = {413: "payload_too_large"}


def _code_for(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _describe_validation(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        if err.get("type") == "json_invalid":
            # The position alone says little; the parser's reason says what to fix.
            reason = (err.get("ctx") or {}).get("error")
            parts.append(f"invalid JSON at character {where}" + (f": {reason}" if reason else ""))
            continue
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(errors) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):
        raise exc
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, _code_for(exc.status_code), message, dict(exc.headers or {}))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    return error_response(422, "validation_error", _describe_validation(list(exc.errors())))


# Seconds a client is asked to wait when a dependency is down: about a pool reconnect.
RETRY_AFTER_SECONDS = 5
# SQLSTATE classes of a server that cannot serve now: connection exceptions, insufficient
# resources, operator intervention (shutdown, cannot connect now, statement timeout) and
# transaction rollbacks (serialization failures, deadlocks), which a retry can clear.
# https://www.postgresql.org/docs/current/errcodes-appendix.html
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "40"})
# Raised by migration 0004's limits trigger; PostgREST answers the same code with 429.
TENANT_LIMIT_SQLSTATE = "PT429"
# Errors of a dependency's client or connection: classified, never a bare 500.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    RedisError,
    OSError,
    TimeoutError,
)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def dependency_error(exc: BaseException) -> ApiError | None:
    """The answer to a failure of Postgres or Redis: 429 for a tenant limit, 503 with
    Retry-After for a dependency that is down, slow or overloaded; None for anything else."""
    chain = _causes(exc)
    for cause in chain:
        if _sqlstate(cause) == TENANT_LIMIT_SQLSTATE:
            hint = getattr(cause, "hint", None)
            retry = hint if isinstance(hint, str) and hint.isdigit() else str(RETRY_AFTER_SECONDS)
            message = getattr(cause, "message", None) or "A limit of the organization was reached."
            return ApiError(429, "tenant_limit", str(message), headers={"Retry-After": retry})
    for cause in chain:
        state = _sqlstate(cause)
        unavailable = isinstance(cause, OSError | TimeoutError | asyncpg.InterfaceError | RedisError) or (
            state is not None and state[:2] in _UNAVAILABLE_CLASSES
        )
        if unavailable:
            return ApiError(
                503,
                "unavailable",
                "A service this request needs is unavailable; retry later.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    return None


async def _dependency(request: Request, exc: Exception) -> JSONResponse:
    error = dependency_error(exc)
    if error is None:
        return await _unexpected(request, exc)
    if error.status == 503:
        log.warning("dependency_unavailable", error=repr(exc))
    return error_response(error.status, error.code, error.message, error.headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # The detail goes to the log (and Sentry), never to the client.
    log.error("unhandled_exception", exc_info=exc)
    return error_response(500, "internal_error", "Internal server error.")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, including framework ones, use the error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error_class in DEPENDENCY_ERRORS:
        app.add_exception_handler(error_class, _dependency)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring the error body for each status."""
    return {status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase} for status in statuses}
