"""Multipart forms read as UTF-8 or refused (400), never guessed.

Starlette decodes a part's `name`, `filename` and a field's value as UTF-8 and, when that fails,
silently as Latin-1: `name=b"caf\\xe9"` becomes the field `café`, and a dataset could be stored
under a name the client never sent. `StrictFormRoute` (the datasets router's route class) hands
handlers a Request whose form parser refuses those bytes instead, naming the part.
"""
from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response


def _utf8(raw: bytes | bytearray, what: str) -> None:
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError as error:
        raise MultiPartException(f"multipart: {what} is not UTF-8 (byte {error.start})") from None


class Utf8MultiPartParser(MultiPartParser):
    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        _utf8(options.get(b"name", b""), "a part's name")
        name = bytes(options.get(b"name", b"")).decode()
        if b"filename" in options:
            _utf8(options[b"filename"], f"the file name of part {name!r}")
        super().on_headers_finished()

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            _utf8(self._current_part.data, f"the value of field {self._current_part.field_name!r}")
        super().on_part_end()


class Utf8FormRequest(Request):
    async def _get_form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                        max_part_size: int = 1024 * 1024) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type"))
        if self._form is None and content_type == b"multipart/form-data":
            parser = Utf8MultiPartParser(self.headers, self.stream(), max_files=max_files, max_fields=max_fields,
                                         max_part_size=max_part_size)
            try:
                self._form = await parser.parse()
            except MultiPartException as error:
                raise HTTPException(status_code=400, detail=error.message) from None
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class StrictFormRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(Utf8FormRequest(request.scope, request.receive, request._send))

        return strict_handler
