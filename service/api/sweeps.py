"""/v1/sweeps: submit a sweep (its trials drawn and checked up front), read, list, cancel.

Submission: validate, find the dataset, draw every trial and resolve its spec (a 422 naming
`space.<path>` and the value when one cannot train), commit the sweep with its first released
trials, then publish those trials' tasks. Later trials are released as earlier ones end (see
service.store.sweeps).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError

from service.api.deps import EnqueuerDep, JobEventsDep, OwnerDep, SettingsDep, StoreDep
from service.api.errors import error_responses
from service.api.jobs import dataset_for
from service.specs import SweepPage, SweepPublic, SweepSpec
from service.sweeps import SweepError, draw_trials

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=error_responses(401))

NOT_FOUND = error_responses(404, _404="no such sweep (or another owner's)")


@router.post(
    "", status_code=202, response_model=SweepPublic,
    responses={**error_responses(400, 404, 413, _404="unknown dataset (or another owner's)"),
               422: {"description": "an invalid sweep spec: a path that names no numeric or categorical "
                     "field, a distribution or value that gives an invalid job spec (located at "
                     "`space.<path>`), a metric the dataset does not measure, or more trials than "
                     "max_trials_per_sweep (type `limit_exceeded`)"}},
)
def submit_sweep(spec: SweepSpec, store: StoreDep, enqueuer: EnqueuerDep, owner: OwnerDep, settings: SettingsDep,
                 response: Response) -> SweepPublic:
    dataset_id, info = dataset_for(spec.base.dataset, store, owner)
    try:
        trials = draw_trials(spec, info, settings.job_limits, settings.max_trials_per_sweep)
    except SweepError as error:
        raise RequestValidationError([{"type": error.type, "loc": ("body", *error.loc), "msg": error.message,
                                       "input": error.value}]) from None
    sweep, released = store.create_sweep(owner=owner, spec=spec, dataset_id=dataset_id, trials=trials)
    for job_id in released:  # after the commit, as a job's submission (the reconciler covers a lost one)
        enqueuer.send_later(job_id)
    response.headers["Location"] = router.url_path_for("get_sweep", sweep_id=sweep.id)
    return sweep


@router.get("", response_model=SweepPage, responses={422: {"description": "a cursor this API did not issue"}})
def list_sweeps(store: StoreDep, owner: OwnerDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
                ) -> SweepPage:
    return store.list_sweeps(owner=owner, limit=limit, cursor=cursor)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=NOT_FOUND)
def get_sweep(sweep_id: str, store: StoreDep, owner: OwnerDep) -> SweepPublic:
    return store.get_sweep(sweep_id, owner=owner)


@router.post(
    "/{sweep_id}/cancel", status_code=202, response_model=SweepPublic, responses=NOT_FOUND,
    description="No more trials are released; queued trials are cancelled at once, running ones stop at "
    "their next batch boundary (cancelled, keeping their checkpoints). A finished sweep is returned unchanged.",
)
def cancel_sweep(sweep_id: str, store: StoreDep, owner: OwnerDep, events: JobEventsDep) -> SweepPublic:
    sweep, stopping = store.cancel_sweep(sweep_id, owner=owner)
    for job_id in stopping:
        events.changed(job_id, "cancel")  # wakes the trials' event streams
    return sweep
