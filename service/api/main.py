"""The v1 API: one router per resource. Every /v1 route needs the caller's owner (an API key
unless the server runs open on loopback); the health probes stay open."""
from fastapi import APIRouter, Depends

from service.api import caps, datasets, events, health, jobs, portable, sweeps
from service.api.deps import get_owner, strict_query

api_router = APIRouter()
api_router.include_router(health.router)
for resource in (datasets.router, jobs.router, sweeps.router, events.router, portable.router, caps.router):
    # the dependency (cached per request) also guards any route that forgets OwnerDep
    api_router.include_router(resource, dependencies=[Depends(get_owner), Depends(strict_query)])
