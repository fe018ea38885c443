"""GET /v1/jobs/{id}/events: a job's live event stream (Server-Sent Events).

    event: status   data: the job (JobPublic)      on connecting and at each status change
    event: epoch    data: EpochMetrics, id: N      each recorded epoch, in order, once
    event: end      data: the finished job         last; then the server closes the stream
    : keep-alive                                   a comment every STREAM_KEEPALIVE_SECONDS while idle

`Last-Event-ID: k` (what EventSource sends when it reconnects) replays only epochs after k. What
the stream sends, and how it follows the database: service.api.streams.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.deps import OwnerDep, StoreDep
from service.api.errors import error_responses
from service.api.streams import JobStreams, TooManyStreams

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def json_errors(*statuses: int, **descriptions: str) -> dict[int | str, dict]:
    """error_responses, declared as JSON: with response_class=EventSourceResponse FastAPI would
    otherwise document the error bodies as text/event-stream."""
    return {status: {"description": answer["description"],
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}}
            for status, answer in error_responses(*statuses, **descriptions).items()}


async def stream_slot(job_id: str, request: Request, store: StoreDep, owner: OwnerDep) -> AsyncIterator[None]:
    """Before the 200: the job must be the caller's (404) and the owner under the stream cap (429).
    The slot is given back when the stream ends, however it ends (FastAPI runs this teardown then)."""
    await anyio.to_thread.run_sync(partial(store.get_job, job_id, owner=owner))
    streams: JobStreams = request.app.state.streams
    try:
        streams.slots.acquire(owner)
    except TooManyStreams as error:
        raise HTTPException(429, detail=str(error)) from None
    try:
        yield
    finally:
        streams.slots.release(owner)


@router.get(
    "/{job_id}/events", response_class=EventSourceResponse,
    responses={**json_errors(401, 404, 429, _404="no such job (or another owner's)",
                                 _429="the owner already has MAX_STREAMS_PER_OWNER streams open on this API process")},
    description="The job's live events as Server-Sent Events: `status` (the job, on connecting and at each "
    "status change), `epoch` (each recorded epoch's metrics; the SSE id is the epoch number), and `end` "
    "(the finished job), after which the server closes the stream. `Last-Event-ID: k` replays only the "
    "epochs after k. A comment line (`: keep-alive`) is sent while idle.",
)
async def job_events(
    job_id: str,
    request: Request,
    _slot: Annotated[None, Depends(stream_slot)],
    last_event_id: Annotated[int | None, Header(ge=0, description="send only epochs after this one "
                                                "(the id of the last event received)")] = None,
) -> AsyncIterator[ServerSentEvent]:
    streams: JobStreams = request.app.state.streams
    async for event in streams.follow(job_id, after=last_event_id or 0):
        yield event
