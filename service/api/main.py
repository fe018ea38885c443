"""The v1 API: one router per resource."""
from fastapi import APIRouter

from service.api import datasets, health, jobs

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(datasets.router)
api_router.include_router(jobs.router)
