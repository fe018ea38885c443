"""What the app's own OpenAPI schema says about a request path: its operations and parameters.

The schema is the contract (FastAPI builds it once and caches it); reading it here keeps the
405 Allow header and the strict query check in step with the routes without FastAPI internals.
"""
from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def operations_for(app: FastAPI, path: str) -> dict[str, dict[str, Any]]:
    """{METHOD: operation} of the schema path matching `path` ({} when none does)."""
    for template, item in app.openapi()["paths"].items():
        parts = ("[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/"))
        if re.fullmatch("/".join(parts), path):
            return {method.upper(): operation for method, operation in item.items() if method.upper() in HTTP_METHODS}
    return {}


def query_parameters(app: FastAPI, method: str, path: str) -> set[str] | None:
    """Names of the query parameters the operation declares; None if the schema has no such operation."""
    operation = operations_for(app, path).get(method.upper())
    if operation is None:
        return None
    return {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"}
