"""The one `.npy` header reader: a strict parser of the header's dict literal, never `eval`.

An upload's header is hostile text. numpy reads it with `ast.literal_eval`, which on unbalanced
brackets or quotes raises `tokenize.TokenError`, recurses on thousands of `(`, and echoes AST
nodes (`<ast.Call object at 0x...>`) in its messages. This reader accepts exactly what numpy
writes, `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, and answers anything else
with a NpyHeaderError whose message names the problem and the character, never echoing more than
a few characters of the input. What it accepts, numpy's own reader parses the same way.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000  # numpy's own default cap (np.lib.format's max_header_size)
MAX_DIMENSION_DIGITS = 18  # shapes beyond 10**18 are refused by the size checks anyway
KEYS = ("descr", "fortran_order", "shape")
_TOKEN = re.compile(r"""\s*(?:(?P<string>'[^'\\\n]*'|"[^"\\\n]*")|(?P<integer>\d+)|(?P<name>[A-Za-z_]\w*)|(?P<punct>[{}():,])|(?P<other>.))""",
                    re.DOTALL)


_REST_IS_BLANK = re.compile(r"\s*\Z")


class NpyHeaderError(ValueError):
    """A malformed `.npy` header; the message is safe to show (short, no object reprs)."""


@dataclass(frozen=True)
class NpyHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    header_bytes: int  # magic, version, length and the header itself: where the data starts


def read_npy_header(stream: BinaryIO) -> NpyHeader:
    """Read and check the magic, the version (1.0 or 2.0) and the header dict from `stream`."""
    magic = stream.read(8)
    if len(magic) < 8 or magic[:6] != MAGIC:
        raise NpyHeaderError("not a .npy array (no \\x93NUMPY magic)")
    version = (magic[6], magic[7])
    if version == (1, 0):
        length_format = "<H"
    elif version == (2, 0):
        length_format = "<I"
    else:
        raise NpyHeaderError(f"unsupported .npy format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")
    raw_length = stream.read(struct.calcsize(length_format))
    if len(raw_length) < struct.calcsize(length_format):
        raise NpyHeaderError("the .npy header is cut short")
    (length,) = struct.unpack(length_format, raw_length)
    if length > MAX_HEADER_BYTES:
        raise NpyHeaderError(f"the .npy header declares {length} bytes; at most {MAX_HEADER_BYTES} are read")
    raw = stream.read(length)
    if len(raw) < length:
        raise NpyHeaderError("the .npy header is cut short")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise NpyHeaderError("the .npy header is not ASCII text") from None
    fields = parse_header_dict(text)
    return NpyHeader(dtype=_dtype(fields["descr"]), shape=fields["shape"], fortran_order=fields["fortran_order"],
                     header_bytes=8 + len(raw_length) + length)


def parse_header_dict(text: str) -> dict:
    """`{'descr': str, 'fortran_order': bool, 'shape': (int, ...)}` and nothing else, in any order."""
    tokens = _Tokens(text)
    tokens.expect("{")
    fields: dict = {}
    while not tokens.accept("}"):
        key = tokens.string("a key")
        if key not in KEYS:
            raise NpyHeaderError(f"the .npy header has an unexpected key {_short(key)} (expected {', '.join(KEYS)})")
        if key in fields:
            raise NpyHeaderError(f"the .npy header gives {key!r} twice")
        tokens.expect(":")
        if key == "descr":
            fields[key] = tokens.string("descr (a dtype string such as '<f4'; structured dtypes are not accepted)")
        elif key == "fortran_order":
            fields[key] = tokens.boolean("fortran_order")
        else:
            fields[key] = tokens.shape()
        if not tokens.accept(","):
            tokens.expect("}")
            break
    tokens.end()
    missing = [key for key in KEYS if key not in fields]
    if missing:
        raise NpyHeaderError(f"the .npy header lacks {', '.join(missing)}")
    return fields


def _dtype(descr: str) -> np.dtype:
    try:
        return np.dtype(descr)
    except (TypeError, ValueError, OverflowError, MemoryError):
        raise NpyHeaderError(f"descr {_short(descr)} is not a dtype numpy knows") from None


def _short(text: str, limit: int = 24) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class _Tokens:
    def __init__(self, text: str):
        self.text = text
        self.at = 0
        self.kind = self.value = None
        self._advance()

    def _advance(self) -> None:
        self.start = self.at
        if _REST_IS_BLANK.match(self.text, self.at):
            self.kind, self.value = "end", ""
            self.at = len(self.text)
            return
        match = _TOKEN.match(self.text, self.at)
        self.kind = match.lastgroup
        self.value = match.group(self.kind)
        self.at = match.end()

    def _fail(self, wanted: str) -> NpyHeaderError:
        found = "the end of the header" if self.kind == "end" else _short(self.value, 12)
        return NpyHeaderError(f"malformed .npy header at character {self.start}: expected {wanted}, found {found}")

    def accept(self, punct: str) -> bool:
        if self.kind == "punct" and self.value == punct:
            self._advance()
            return True
        return False

    def expect(self, punct: str) -> None:
        if not self.accept(punct):
            raise self._fail(repr(punct))

    def end(self) -> None:
        if self.kind != "end":
            raise self._fail("the end of the header")

    def string(self, wanted: str) -> str:
        if self.kind != "string":
            raise self._fail(wanted)
        value = self.value[1:-1]
        self._advance()
        return value

    def boolean(self, wanted: str) -> bool:
        if self.kind != "name" or self.value not in ("True", "False"):
            raise self._fail(f"{wanted}: True or False")
        value = self.value == "True"
        self._advance()
        return value

    def shape(self) -> tuple[int, ...]:
        if not self.accept("("):
            raise self._fail("shape: a tuple of non-negative integers")
        dimensions: list[int] = []
        commas = 0
        while not self.accept(")"):
            if self.kind != "integer":
                raise self._fail("shape: a tuple of non-negative integers")
            if len(self.value) > MAX_DIMENSION_DIGITS:
                raise NpyHeaderError(f"malformed .npy header at character {self.start}: "
                                     f"shape: a dimension of {len(self.value)} digits")
            dimensions.append(int(self.value))
            self._advance()
            if self.accept(","):
                commas += 1
            elif self.accept(")"):
                break
            else:
                raise self._fail("shape: a tuple of non-negative integers")
        if len(dimensions) == 1 and not commas:  # `(3)` is the integer 3 to numpy, not a shape
            raise NpyHeaderError("malformed .npy header: shape: a 1-tuple needs its comma, as in (3,)")
        return tuple(dimensions)
