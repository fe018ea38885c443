"""Keyset cursors for job listings: (ordering, direction, sort value, last id), base64 JSON."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, or_

from service.store.errors import InvalidCursor
from service.store.models import JobRow


def encode_cursor(order_by: str, descending: bool, value: Any, last_id: str) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).isoformat()
    raw = json.dumps([order_by, descending, value, last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order_by: str, descending: bool) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_order, cursor_desc, value, last_id = json.loads(raw)
        if order_by == "created_at":
            value = datetime.fromisoformat(value)
        elif value is not None:
            value = float(value)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API issued") from None
    if cursor_order != order_by or cursor_desc != descending or not isinstance(last_id, str):
        raise InvalidCursor("cursor belongs to another ordering; repeat the query without it")
    return value, last_id


def rows_after(column, value: Any, last_id: str, descending: bool, *, nullable: bool):
    """Rows strictly after (value, last_id) in the listing order (NULL values last)."""
    beyond = (lambda a, b: a < b) if descending else (lambda a, b: a > b)
    if value is None:
        return and_(column.is_(None), beyond(JobRow.id, last_id))
    condition = or_(beyond(column, value), and_(column == value, beyond(JobRow.id, last_id)))
    return or_(condition, column.is_(None)) if nullable else condition
