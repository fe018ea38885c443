"""Settings, read from the environment (and `.env`) by pydantic-settings.

Nothing reads the environment at import time: call `get_settings()` (cached) or build
`Settings(...)` explicitly, as the tests do.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///./data/backprop.db", description="SQLAlchemy URL of the results database")
    broker_url: str = Field("sqla+sqlite:///./data/broker.db", description="Celery broker; redis://host:6379/0 in production")
    artifact_dir: Path = Field(Path("./data/artifacts"), description="where datasets, checkpoints and models are written")
    host: str = Field("127.0.0.1", description="API bind address")
    port: int = Field(8000, ge=1, le=65535, description="API bind port")
    training_queue: str = Field("training", min_length=1, max_length=100,
                                description="broker queue the API sends to and workers consume")
    lease_seconds: float = Field(60.0, gt=0, description="a running job's lease; renewed every epoch")
    max_attempts: int = Field(3, ge=1, description="deliveries of a job before it ends failed")
    reconcile_interval_seconds: float = Field(
        10.0, ge=0, description="how often each worker's reconciler re-enqueues lost jobs; 0 turns it off")
    requeue_after_seconds: float = Field(
        60.0, gt=0, description="a queued job waiting this long is sent to the broker again (then with backoff)")
    blas_threads: int = Field(
        1, ge=0, description="BLAS threads per training process; 1 makes a resumed run equal an uninterrupted one, "
                             "0 leaves the library's default")
    worker_concurrency: int = Field(1, ge=1, description="training processes per `backprop worker`")
    max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="largest dataset upload")
    max_dataset_rows: int = Field(2_000_000, ge=1, description="largest dataset, in rows")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")  # psycopg 3 driver
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
