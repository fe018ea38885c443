"""Settings, read from the environment (and `.env`) by pydantic-settings.

Nothing reads the environment at import time: call `get_settings()` (cached) or build
`Settings(...)` explicitly, as the tests do.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.specs import (
    MAX_BATCH_SIZE, MAX_EPOCHS, MAX_FOLDS, MAX_HIDDEN_LAYERS, MAX_PARAMETERS, MAX_PREDICT_ROWS, MAX_TRIALS,
    MAX_UNITS, JobLimits,
)


MAX_DATASET_BYTES = 200 * 1024 * 1024


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///./data/backprop.db", description="SQLAlchemy URL of the results database")
    broker_url: str = Field("sqla+sqlite:///./data/broker.db", description="Celery broker; redis://host:6379/0 in production")
    artifact_url: str = Field(
        "./data/artifacts", min_length=1,
        description="where datasets, checkpoints and models are kept: a folder (or file:///folder), or "
        "s3://bucket/prefix for S3-compatible object storage (S3_ENDPOINT_URL, AWS_* credentials)")
    s3_endpoint_url: str | None = Field(
        None, description="endpoint of an S3-compatible server (MinIO, ...); unset: AWS S3")
    download_url_seconds: int = Field(
        0, ge=0, le=7 * 24 * 3600,
        description="with S3 artifacts: answer model downloads with a redirect to a presigned URL valid "
        "this long; 0 streams them through the API")
    work_dir: Path | None = Field(
        None, description="a private folder for temporary copies (downloads from S3, uploads being "
        "spooled); unset: the system's temp folder. Never needs to be shared")
    orphan_grace_seconds: float = Field(
        3600.0, gt=0, description="an artifact no database row names is removed once it is this old "
        "(a write whose row never committed)")
    orphan_sweep_interval_seconds: float = Field(
        900.0, ge=0, description="how often each worker's reconciler removes orphaned artifacts; 0 turns it off")
    host: str = Field("127.0.0.1", description="API bind address")
    port: int = Field(8000, ge=1, le=65535, description="API bind port")
    api_workers: int = Field(1, ge=1, le=64, description="API processes `backprop api` runs on the port "
                             "(uvicorn workers); about one per core the API may use")
    api_threads: int = Field(4, ge=1, le=64, description="threads per API process for blocking work (database "
                             "calls, upload checks, file streaming); more threads than cores only add GIL contention")
    training_queue: str = Field("training", min_length=1, max_length=100,
                                description="broker queue the API sends to and workers consume")
    lease_seconds: float = Field(60.0, gt=0, description="a running job's lease; renewed every epoch")
    max_attempts: int = Field(3, ge=1, description="deliveries of a job before it ends failed")
    reconcile_interval_seconds: float = Field(
        10.0, ge=0, description="how often each worker's reconciler re-enqueues lost jobs; 0 turns it off")
    requeue_after_seconds: float = Field(
        60.0, gt=0, description="a queued job waiting this long is sent to the broker again (then with backoff)")
    blas_threads: int = Field(
        1, ge=0, description="BLAS threads per training process and per API process (predict); 1 makes a resumed "
                             "run equal an uninterrupted one, 0 leaves the library's default")
    worker_concurrency: int = Field(1, ge=1, description="training processes per `backprop worker`")
    auth_required: bool | None = Field(
        None, description="require an API key (Authorization: Bearer) on /v1; unset: required unless HOST "
        "is a loopback address. Serving a non-loopback HOST without it is refused")

    # Caps (issue 4). A job spec's caps default to the schema's bounds (service.specs) and may only
    # be tightened here: jobs stored under the schema's bounds stay readable whatever is set.
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1024 * 1024,
        description="largest request line and header block `backprop api` reads; beyond it 431 and the "
        "connection is closed before more is read")
    max_header_count: int = Field(100, ge=8, le=1000, description="most headers in one request (431 beyond)")
    max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="largest dataset upload (the file)")
    max_dataset_rows: int = Field(2_000_000, ge=1, description="largest dataset, in rows (X and X_val together)")
    max_dataset_bytes: int = Field(
        MAX_DATASET_BYTES, ge=1024, description="largest dataset as it is trained: every value of X and X_val, "
        "and of the targets (one column per class for classification), as float32; checked from the .npy "
        "headers before anything is decoded")
    max_epochs: int = Field(MAX_EPOCHS, ge=1, le=MAX_EPOCHS, description="largest `epochs` of a job")
    max_hidden_layers: int = Field(MAX_HIDDEN_LAYERS, ge=1, le=MAX_HIDDEN_LAYERS, description="most hidden layers")
    max_units: int = Field(MAX_UNITS, ge=1, le=MAX_UNITS, description="widest hidden layer")
    max_parameters: int = Field(MAX_PARAMETERS, ge=1, le=MAX_PARAMETERS,
                                description="most weights and biases in a job's network")
    max_batch_size: int = Field(MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE, description="largest `batch_size`")
    max_folds: int = Field(MAX_FOLDS, ge=2, le=MAX_FOLDS, description="most `cross_validation.folds` of a job")
    max_queued_jobs_per_owner: int = Field(100, ge=1, description="queued jobs one owner may have waiting")
    max_predict_rows: int = Field(MAX_PREDICT_ROWS, ge=1, le=MAX_PREDICT_ROWS,
                                  description="most rows in one POST /v1/jobs/{id}/predict")
    max_trials_per_sweep: int = Field(MAX_TRIALS, ge=1, le=MAX_TRIALS, description="most trials one sweep may draw")
    max_concurrent_trials_per_owner: int = Field(
        8, ge=1, description="sweep trials one owner may have queued or running at once (the rest wait, held)")
    model_cache_size: int = Field(8, ge=1, le=1024, description="trained models an API process keeps loaded for "
                                  "predict (and as many built ONNX files), least recently used dropped first")

    # Live event streams (GET /v1/jobs/{id}/events, issue 7)
    max_streams_per_owner: int = Field(
        20, ge=1, description="event streams one owner may hold open at once, per API process (429 beyond)")
    stream_poll_seconds: float = Field(
        0.1, gt=0, le=10, description="how often an API process checks the database for changes to the jobs it "
        "streams when the broker is not Redis (with Redis, workers publish a wake-up and this check runs every 1 s)")
    stream_keepalive_seconds: float = Field(
        15.0, gt=0, le=300, description="an idle event stream sends a keep-alive comment this often")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")  # psycopg 3 driver
        return value

    @field_validator("artifact_url")
    @classmethod
    def _known_artifact_store(cls, value: str) -> str:
        scheme = value.partition("://")[0] if "://" in value else ""
        if scheme not in ("", "file", "s3"):
            raise ValueError("ARTIFACT_URL must be a folder, file:///folder or s3://bucket/prefix")
        if scheme == "s3" and not value.removeprefix("s3://").strip("/"):
            raise ValueError("ARTIFACT_URL s3://... must name a bucket")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def auth_enabled(self) -> bool:
        return self.auth_required if self.auth_required is not None else not is_loopback(self.host)

    @property
    def job_limits(self) -> JobLimits:
        return JobLimits(max_epochs=self.max_epochs, max_hidden_layers=self.max_hidden_layers,
                         max_units=self.max_units, max_batch_size=self.max_batch_size,
                         max_parameters=self.max_parameters, max_folds=self.max_folds)

    def unsafe_bind(self) -> str | None:
        """Why serving with these settings would be unsafe (an open API on a non-loopback address), or None."""
        if self.auth_enabled or is_loopback(self.host):
            return None
        return (f"refusing to serve on HOST={self.host} without authentication: AUTH_REQUIRED=false is only "
                "allowed on a loopback address (127.0.0.1, ::1, localhost). Unset AUTH_REQUIRED (or set it "
                "to true) and create API keys with `backprop keys create --owner NAME`")


@lru_cache
def get_settings() -> Settings:
    return Settings()
