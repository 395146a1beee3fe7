"""Anchor: a bare FastAPI endpoint that answers POST /v1/generations with 202 and does no I/O.

The ceiling of one uvicorn process on this machine; not a project code path.
"""

from uuid import uuid4

from fastapi import FastAPI, status

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/generations", status_code=status.HTTP_202_ACCEPTED)
async def create() -> dict[str, str]:
    return {"id": str(uuid4()), "status": "queued"}
