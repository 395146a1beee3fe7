"""Generation jobs: submit, read, list and cancel."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response, status

from app import crud
from app.api.deps import PrincipalDep, StateDep, StrictJsonRoute
from app.core.errors import ApiError, error_responses
from app.core.queue import signal_ready
from app.schemas import MAX_PAGE, MAX_PROMPT_BYTES, Generation, GenerationCreate, GenerationPage
from app.status import JobStatus

router = APIRouter(
    prefix="/v1/generations",
    tags=["generations"],
    route_class=StrictJsonRoute,
    responses=error_responses(401, 403, 422, 500, 503),
)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a request safely: the same key and body return the original job.",
    ),
]


def _validate(body: GenerationCreate) -> None:
    if len(body.prompt.encode()) > MAX_PROMPT_BYTES:
        raise ApiError(413, "prompt_too_large", f"The prompt exceeds {MAX_PROMPT_BYTES} bytes.")


def _job(row: dict[str, Any]) -> Generation:
    return Generation.model_validate(row)


def _not_found(job_id: UUID) -> ApiError:
    return ApiError(404, "not_found", f"No generation {job_id}.")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Generation,
    summary="Submit a generation",
    # 400: a body that is not UTF-8 at all; malformed JSON is a 422 like any invalid body.
    responses=error_responses(400, 409, 413, 429),
)
async def create_generation(
    body: GenerationCreate,
    principal: PrincipalDep,
    state: StateDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Queue a job. It is committed in Postgres before the 202 is sent."""
    _validate(body)
    body_hash = crud.request_hash(body.model_dump(mode="json")) if idempotency_key else None
    try:
        row, created = await state.submit(
            principal,
            prompt=body.prompt,
            model=body.model or state.settings.default_model,
            params=body.params,
            idempotency_key=idempotency_key,
            body_hash=body_hash,
        )
    except crud.IdempotencyConflictError:
        raise ApiError(
            409, "idempotency_conflict", "This Idempotency-Key was used with a different body."
        ) from None
    job = _job(row)
    headers = {"Location": f"{router.prefix}/{job.id}"}
    if created:
        # After the commit: a worker woken early must find the row. If Redis is down the job
        # is still safe in Postgres, and the workers' sweep finds it.
        await signal_ready(state.redis, [job.id])
        if state.waker is not None:
            # An on-demand pool may be at zero instances: ask its scaler to start one now, before
            # the 202, while this instance has CPU (app/core/wake.py).
            await state.waker.wake()
    else:
        headers["Idempotent-Replayed"] = "true"
    # Serialized once here: the model was built from the row, so validating it again for
    # response_model (which still documents the body) would only cost time on the hot path.
    return Response(job.model_dump_json(), status.HTTP_202_ACCEPTED, headers, "application/json")


@router.get(
    "/{job_id}", response_model=Generation, summary="Read a generation", responses=error_responses(404)
)
async def get_generation(job_id: UUID, principal: PrincipalDep, state: StateDep) -> Generation:
    """One of the caller's organization's jobs."""
    async with state.tenant(principal) as conn:
        row = await crud.get_generation(conn, principal.org_id, job_id)
    if row is None:
        raise _not_found(job_id)
    return _job(row)


@router.get("", response_model=GenerationPage, summary="List generations")
async def list_generations(
    principal: PrincipalDep,
    state: StateDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> GenerationPage:
    """The organization's jobs, newest first, by keyset pagination."""
    try:
        after = crud.decode_cursor(cursor) if cursor else None
    except crud.InvalidCursorError:
        raise ApiError(422, "invalid_cursor", "The cursor is not one this API issued.") from None
    async with state.tenant(principal) as conn:
        rows, next_cursor = await crud.list_generations(
            conn, principal.org_id, status=status_filter, after=after, limit=limit
        )
    return GenerationPage(items=[_job(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/{job_id}/cancel",
    response_model=Generation,
    summary="Cancel a generation",
    responses={
        202: {"model": Generation, "description": "Running: the worker has been asked to stop."},
        **error_responses(404, 409),
    },
)
async def cancel_generation(
    job_id: UUID, principal: PrincipalDep, state: StateDep, response: Response
) -> Generation:
    """A queued job is cancelled at once (200); a running one is asked to stop (202)."""
    async with state.tenant(principal) as conn:
        row = await crud.cancel_generation(conn, principal.org_id, job_id)
    if row is None:
        raise _not_found(job_id)
    job = _job(row)
    if job.status is JobStatus.RUNNING:
        response.status_code = status.HTTP_202_ACCEPTED
    elif job.status is not JobStatus.CANCELLED:
        raise ApiError(409, "not_cancellable", f"The generation has already {job.status.value}.")
    return job
