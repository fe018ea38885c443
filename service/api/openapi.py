"""What the app's own OpenAPI schema says about a request path: its operations and parameters.

The schema is the contract (FastAPI builds it once and caches it); reading it here keeps the
405 Allow header and the strict query check in step with the routes without FastAPI internals.
Each path template is compiled once per app, and each operation's query parameter names
collected once, because the strict query check runs on every request.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


@dataclass(frozen=True)
class SchemaPath:
    pattern: re.Pattern[str]
    operations: dict[str, dict[str, Any]]  # METHOD -> operation
    query_names: dict[str, frozenset[str]]  # METHOD -> declared query parameter names


def _schema_paths(app: FastAPI) -> list[SchemaPath]:
    cached = getattr(app.state, "schema_paths", None)
    if cached is None:
        cached = []
        for template, item in app.openapi()["paths"].items():
            parts = ("[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/"))
            operations = {method.upper(): operation for method, operation in item.items()
                          if method.upper() in HTTP_METHODS}
            query_names = {method: frozenset(parameter["name"] for parameter in operation.get("parameters", [])
                                             if parameter["in"] == "query")
                           for method, operation in operations.items()}
            cached.append(SchemaPath(re.compile("/".join(parts)), operations, query_names))
        app.state.schema_paths = cached
    return cached


def _match(app: FastAPI, path: str) -> SchemaPath | None:
    return next((entry for entry in _schema_paths(app) if entry.pattern.fullmatch(path)), None)


def operations_for(app: FastAPI, path: str) -> dict[str, dict[str, Any]]:
    """{METHOD: operation} of the schema path matching `path` ({} when none does)."""
    entry = _match(app, path)
    return entry.operations if entry else {}


def query_parameters(app: FastAPI, method: str, path: str) -> frozenset[str] | None:
    """Names of the query parameters the operation declares; None if the schema has no such operation."""
    entry = _match(app, path)
    return entry.query_names.get(method.upper()) if entry else None
