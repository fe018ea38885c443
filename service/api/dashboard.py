"""The dashboard: static pages at /, /jobs/{id} and /compare, and their files under /static.

The pages hold no data and need no key (BearerAuth leaves these paths open); their scripts call
/v1 with the key the user enters, kept in the tab's sessionStorage. Not in the OpenAPI schema, so
the strict query check and the fuzzing see /v1 only.
"""
from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.web import WEB_DIR

STATIC_PREFIX = "/static"
router = APIRouter(include_in_schema=False)


def page(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/")
def jobs_page() -> FileResponse:
    return page("index.html")


@router.get("/jobs/{job_id}")
def job_page(job_id: str) -> FileResponse:
    return page("job.html")


@router.get("/compare")
def compare_page() -> FileResponse:
    return page("compare.html")


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR), name="static")
