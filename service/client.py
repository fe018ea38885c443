"""The Python SDK: every /v1 endpoint as a typed method (httpx), and a job's live events.

    from service.client import Client

    with Client() as bp:                      # BACKPROP_URL, BACKPROP_API_KEY (or Client(url, api_key=...))
        job = bp.submit_job({"dataset": {"builtin": "digits"}, "epochs": 30})
        for event in bp.events(job.id):       # reconnects with Last-Event-ID; stops after `end`
            if event.event == "epoch":
                print(event.id, event.data.val_loss)
        bp.download_model(job.id, "model.npz")   # checks the file's sha256 against the server's

Answers are the API's own models (service.specs: JobPublic, DatasetPublic, ...). A refused request
raises ApiError (NotFound, Unauthorized, InvalidRequest, ...) carrying the server's status and
message; an unreachable server raises ConnectionFailed. Adding an endpoint is one method:
`return self._request("POST", path, json=body, model=SomeModel)`.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from service.specs import (
    TERMINAL_STATUSES, CheckpointPublic, DatasetPublic, EpochMetrics, HistoryPublic, JobPage, JobPublic, JobSpec,
    LimitsPublic, SweepPage, SweepPublic, SweepSpec,
)

ENV_URL = "BACKPROP_URL"
ENV_API_KEY = "BACKPROP_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
STREAM_READ_TIMEOUT_SECONDS = 60.0  # the server sends a keep-alive every 15 s; silence this long means a dead link
CHUNK = 1024 * 1024

Model = TypeVar("Model")


# ---------------------------------------------------------------- errors


class BackpropError(Exception):
    """Anything the SDK raises."""


class ConnectionFailed(BackpropError):
    """The server could not be reached (or the connection broke)."""


class ChecksumMismatch(BackpropError):
    """A downloaded model's sha256 differs from the server's X-Model-SHA256; nothing was kept."""


class StreamLost(BackpropError):
    """An event stream kept failing to reconnect."""


class ApiError(BackpropError):
    """The server refused the request: `status` and the server's `message` (its `detail`)."""

    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class Unauthorized(ApiError):
    """401: no API key, or one that is unknown or revoked."""


class NotFound(ApiError):
    """404: no such job or dataset, or another owner's."""


class Conflict(ApiError):
    """409: e.g. the job has no model yet."""


class InvalidRequest(ApiError):
    """400, 413 or 422: the server names the field (`errors` holds a 422's entries)."""

    @property
    def errors(self) -> list[dict]:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return detail if isinstance(detail, list) else []


class TooManyRequests(ApiError):
    """429: too many queued jobs, or too many open event streams."""


ERRORS = {401: Unauthorized, 404: NotFound, 409: Conflict, 400: InvalidRequest, 413: InvalidRequest,
          422: InvalidRequest, 429: TooManyRequests}


def api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's 422: one entry per field
        message = "; ".join(f"{'.'.join(str(part) for part in entry.get('loc', [])[1:]) or 'request'}: "
                            f"{entry.get('msg', entry)}" for entry in detail if isinstance(entry, dict))
    else:
        message = str(detail or response.reason_phrase)
    return ERRORS.get(response.status_code, ApiError)(response.status_code, message, body)


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One event of a job's stream: `status` and `end` carry the job, `epoch` an epoch (id = its number)."""

    event: str
    data: JobPublic | EpochMetrics
    id: int | None = None


@dataclass(frozen=True)
class RawEvent:
    event: str
    data: str
    id: str | None
    retry: int | None


def parse_sse(lines: Iterable[str]) -> Iterator[RawEvent]:
    """Server-Sent Events from text lines, as the HTML standard parses them (comments skipped)."""
    event, data, event_id, retry = "", [], None, None
    for line in lines:
        if not line:
            if data:
                yield RawEvent(event or "message", "\n".join(data), event_id, retry)
            event, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            event_id = value
        elif field == "retry" and value.isdigit():
            retry = int(value)


def to_event(raw: RawEvent) -> Event:
    if raw.event == "epoch":
        return Event("epoch", EpochMetrics.model_validate_json(raw.data), int(raw.id) if raw.id else None)
    return Event(raw.event, JobPublic.model_validate_json(raw.data))


@dataclass(frozen=True)
class DownloadedModel:
    path: Path
    sha256: str
    size_bytes: int


# ---------------------------------------------------------------- the client


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 reconnect_delay: float = 1.0, max_reconnects: int = 10, transport: httpx.BaseTransport | None = None):
        self.url = (url or os.environ.get(ENV_URL) or DEFAULT_URL).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnects = max_reconnects
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ plumbing

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ConnectionFailed(f"cannot reach {self.url}: {error}") from error
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def _request(self, method: str, path: str, *, model: type[Model] | Any = None, **kwargs) -> Model:
        """Send, raise on an error status, and parse the JSON answer as `model` (a type, or list[...])."""
        response = self._send(method, path, **kwargs)
        if model is None:
            return response.json()
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate_json(response.content)
        return TypeAdapter(model).validate_json(response.content)

    # ------------------------------------------------------------ health and limits

    def health(self) -> dict:
        return self._request("GET", "/healthz")

    def ready(self) -> dict:
        """{"status": "ok" | "unavailable", "database": ..., "broker": ...} (a 503 is an answer here)."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as error:
            raise ConnectionFailed(f"cannot reach {self.url}: {error}") from error
        return response.json()

    def limits(self) -> LimitsPublic:
        return self._request("GET", "/v1/limits", model=LimitsPublic)

    # ------------------------------------------------------------ datasets

    def upload_dataset(self, file: str | Path, *, name: str | None = None, target: str | None = None,
                       task: str | None = None) -> DatasetPublic:
        """Upload a .npz (X, y, optionally X_val, y_val) or a .csv (`target` names the label column)."""
        path = Path(file)
        fields = {key: value for key, value in (("name", name), ("target", target), ("task", task)) if value is not None}
        with open(path, "rb") as handle:
            return self._request("POST", "/v1/datasets", files={"file": (path.name, handle)}, data=fields,
                                 model=DatasetPublic)

    def list_datasets(self) -> list[DatasetPublic]:
        return self._request("GET", "/v1/datasets", model=list[DatasetPublic])

    def get_dataset(self, dataset_id: str) -> DatasetPublic:
        return self._request("GET", f"/v1/datasets/{_segment(dataset_id)}", model=DatasetPublic)

    # ------------------------------------------------------------ jobs

    def submit_job(self, spec: Mapping[str, Any] | JobSpec) -> JobPublic:
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, JobSpec) else dict(spec)
        return self._request("POST", "/v1/jobs", json=body, model=JobPublic)

    def list_jobs(self, *, status: str | None = None, tag: str | None = None, name: str | None = None,
                  dataset: str | None = None, order_by: str | None = None, order: str | None = None,
                  limit: int | None = None, cursor: str | None = None, sweep_id: str | None = None) -> JobPage:
        params = _params(status=status, tag=tag, name=name, dataset=dataset, order_by=order_by, order=order,
                         limit=limit, cursor=cursor, sweep_id=sweep_id)
        return self._request("GET", "/v1/jobs", params=params, model=JobPage)

    def iter_jobs(self, **filters: Any) -> Iterator[JobPublic]:
        """Every job matching the filters of list_jobs, page after page."""
        cursor = None
        while True:
            page = self.list_jobs(**filters, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_job(self, job_id: str) -> JobPublic:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}", model=JobPublic)

    def history(self, job_id: str, *, points: int | None = None, fold: int | None = None) -> HistoryPublic:
        """Every epoch's metrics; with `points`, at most that many rows picked by the server for a chart;
        with `fold`, only that fold's epochs of a cross-validated job (the folds' count: the refit)."""
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}/history", params=_params(points=points, fold=fold),
                             model=HistoryPublic)

    def history_csv(self, job_id: str, *, fold: int | None = None) -> str:
        return self._send("GET", f"/v1/jobs/{_segment(job_id)}/history",
                          params={"format": "csv", **_params(fold=fold)}).text

    def cancel_job(self, job_id: str) -> JobPublic:
        return self._request("POST", f"/v1/jobs/{_segment(job_id)}/cancel", model=JobPublic)

    def checkpoints(self, job_id: str) -> list[CheckpointPublic]:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}/checkpoints", model=list[CheckpointPublic])

    def download_model(self, job_id: str, path: str | Path | None = None, *, part: str = "model") -> DownloadedModel:
        """Save the model .npz (default ./model-<id>.npz); written atomically, and only if its sha256
        matches the server's X-Model-SHA256 (ChecksumMismatch otherwise). A redirect to a presigned
        URL (S3 artifacts) is followed without the API key. `part="encoder"`: an autoencoder's
        layers up to its narrowest, as their own model file (default ./encoder-<id>.npz)."""
        name = f"{part}-{job_id}.npz"
        target = Path(path) if path is not None else Path(name)
        if target.is_dir():
            target = target / name
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        params = {} if part == "model" else {"part": part}
        try:
            with self._http.stream("GET", f"/v1/jobs/{_segment(job_id)}/model", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response)
                expected = response.headers.get("x-model-sha256")
                if response.is_redirect:
                    with httpx.stream("GET", response.headers["location"], timeout=self._timeout) as stored:
                        stored.raise_for_status()
                        digest, size = _save(stored, partial)
                else:
                    digest, size = _save(response, partial)
            if expected is None or digest != expected.lower():
                raise ChecksumMismatch(f"{part} of job {job_id}: sha256 {digest} does not match the "
                                       f"server's {expected}; the download was discarded")
            os.replace(partial, target)
        except httpx.HTTPStatusError as error:
            raise ConnectionFailed(f"the model's storage answered {error.response.status_code}") from error
        except httpx.TransportError as error:
            raise ConnectionFailed(f"cannot reach {self.url}: {error}") from error
        finally:
            partial.unlink(missing_ok=True)
        return DownloadedModel(target, digest, size)

    # ------------------------------------------------------------ live events

    def events(self, job_id: str, *, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's events (`status`, `epoch`, `end`) as they happen; ends after `end`.

        A dropped connection is reopened with `Last-Event-ID` (the last epoch received), so every
        epoch arrives once, in order. StreamLost after `max_reconnects` failures in a row."""
        last, failures, delay = last_event_id, 0, self.reconnect_delay
        path = f"/v1/jobs/{_segment(job_id)}/events"
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                timeout = httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT_SECONDS)
                with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise api_error(response)
                    for raw in parse_sse(response.iter_lines()):
                        if raw.retry is not None:
                            delay = raw.retry / 1000
                        event = to_event(raw)
                        failures = 0
                        if event.event == "epoch":
                            last = event.id
                        yield event
                        if event.event == "end":
                            return
                error: Exception | None = None  # closed without `end` (e.g. the server restarted)
            except httpx.TransportError as lost:
                error = lost
            failures += 1
            if failures > self.max_reconnects:
                raise StreamLost(f"the event stream of job {job_id} failed {failures} times in a row "
                                 f"(last: {error or 'closed without end'})") from error
            time.sleep(delay)

    # ------------------------------------------------------------ sweeps

    def create_sweep(self, spec: Mapping[str, Any] | SweepSpec) -> SweepPublic:
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, SweepSpec) else dict(spec)
        return self._request("POST", "/v1/sweeps", json=body, model=SweepPublic)

    def get_sweep(self, sweep_id: str) -> SweepPublic:
        return self._request("GET", f"/v1/sweeps/{_segment(sweep_id)}", model=SweepPublic)

    def list_sweeps(self, *, limit: int | None = None, cursor: str | None = None) -> SweepPage:
        return self._request("GET", "/v1/sweeps", params=_params(limit=limit, cursor=cursor), model=SweepPage)

    def cancel_sweep(self, sweep_id: str) -> SweepPublic:
        return self._request("POST", f"/v1/sweeps/{_segment(sweep_id)}/cancel", model=SweepPublic)

    def wait_sweep(self, sweep_id: str, *, poll_seconds: float = 2.0, sleep=time.sleep,
                   on_poll: Callable[[SweepPublic], None] | None = None) -> SweepPublic:
        """Poll the sweep until it ends (every trial finished, or the sweep cancelled and its
        trials stopped); `on_poll` sees each answer."""
        while True:
            sweep = self.get_sweep(sweep_id)
            if on_poll is not None:
                on_poll(sweep)
            if sweep.status in TERMINAL_STATUSES and not (sweep.counts["queued"] or sweep.counts["running"]):
                return sweep
            sleep(poll_seconds)

    def wait(self, job_id: str) -> JobPublic:
        """Follow the job's events until it ends; returns the finished job."""
        for event in self.events(job_id):
            if event.event == "end":
                return event.data
        raise StreamLost(f"the event stream of job {job_id} ended without `end`")  # pragma: no cover


def _save(response: httpx.Response, path: Path) -> tuple[str, int]:
    """Write the body to `path` (fsync'd); returns its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as out:
        for chunk in response.iter_bytes(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _segment(ident: str) -> str:
    return quote(ident, safe=":")


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
