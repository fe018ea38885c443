"""Keyset cursors for job listings: (ordering, direction, sort value, last id), base64 JSON.

A cursor comes back from the client, so every part is checked before it reaches a query: a
value this API could not have issued (a naive or out-of-range datetime, a non-finite or
oversized number, nested JSON, a malformed id) is an InvalidCursor (422), never a 500.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, or_

from service.store.errors import InvalidCursor
from service.store.models import JobRow

MAX_CURSOR_CHARS = 512  # an issued cursor is about 120 characters
_ID = re.compile(r"[0-9a-f]{1,32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
NOT_ISSUED = "cursor is not one this API issued; repeat the query without it"


def encode_cursor(order_by: str, descending: bool, value: Any, last_id: str) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).isoformat()
    raw = json.dumps([order_by, descending, value, last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order_by: str, descending: bool) -> tuple[Any, str]:
    """(sort value, last id) of a cursor issued for this ordering; InvalidCursor otherwise."""
    if len(cursor) > MAX_CURSOR_CHARS or not _BASE64URL.fullmatch(cursor):
        raise InvalidCursor(NOT_ISSUED)
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidCursor(NOT_ISSUED) from None
    if not (isinstance(parts, list) and len(parts) == 4):
        raise InvalidCursor(NOT_ISSUED)
    cursor_order, cursor_desc, value, last_id = parts
    if not (isinstance(cursor_order, str) and isinstance(cursor_desc, bool)
            and isinstance(last_id, str) and _ID.fullmatch(last_id)):
        raise InvalidCursor(NOT_ISSUED)
    if cursor_order != order_by or cursor_desc != descending:
        raise InvalidCursor("cursor belongs to another ordering; repeat the query without it")
    return (_created_at(value) if order_by == "created_at" else _metric(value)), last_id


def _created_at(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidCursor(NOT_ISSUED)
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:  # issued cursors always carry their offset
            raise ValueError("naive datetime")
        return parsed.astimezone(timezone.utc)  # OverflowError past year 9999 or before year 1
    except (ValueError, OverflowError):
        raise InvalidCursor(NOT_ISSUED) from None


def _metric(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidCursor(NOT_ISSUED)
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidCursor(NOT_ISSUED) from None
    if not math.isfinite(number):
        raise InvalidCursor(NOT_ISSUED)
    return number


def rows_after(column, value: Any, last_id: str, descending: bool, *, nullable: bool, id_column=JobRow.id):
    """Rows strictly after (value, last_id) in the listing order (NULL values last)."""
    beyond = (lambda a, b: a < b) if descending else (lambda a, b: a > b)
    if value is None:
        return and_(column.is_(None), beyond(id_column, last_id))
    condition = or_(beyond(column, value), and_(column == value, beyond(id_column, last_id)))
    return or_(condition, column.is_(None)) if nullable else condition
