"""An upload's body spooled to disk, checked as it arrives for what the reader would meet once it opens it: the
size decompressed (the body limit counts compressed bytes, and a 600 KB gzip can hold gigabytes of rows) and
the longest line (one line is parsed whole: a 30 MiB line took the server past 4 GB). Nothing is held but one
chunk: a gzip body is inflated a megabyte at a time only to be counted; the file keeps the bytes as sent."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import AsyncIterator

from ..errors import AnomalyError, DataError

MAX_LINE = 1 << 20  # bytes in one line of an upload; a 20,000-column row is a fifth of this
GZIP = 16 + zlib.MAX_WBITS


class UploadTooLarge(AnomalyError):
    http_status = 413


class UploadCheck:
    def __init__(self, limit: int, max_line: int = MAX_LINE):
        self.limit, self.max_line = limit, max_line
        self.total = self.line = self.lines = 0
        self.inflate = None
        self.start = b""  # the first two bytes: gzip or not

    def add(self, chunk: bytes) -> None:
        if len(self.start) < 2:
            self.start += chunk[:2 - len(self.start)]
            if self.start == b"\x1f\x8b":
                self.inflate = zlib.decompressobj(GZIP)
        if self.inflate is None:
            self._count(chunk)
            return
        data = chunk
        while data:
            try:  # at most 1 MiB out per step: a bomb is counted, never held
                self._count(self.inflate.decompress(data, 1 << 20))
            except zlib.error:  # not a valid gzip after all: the reader says what is wrong with it
                self.inflate = None
                return
            data = self.inflate.unconsumed_tail
            if self.inflate.eof:  # another gzip member may follow (cat a.gz b.gz)
                data, self.inflate = self.inflate.unused_data + data, zlib.decompressobj(GZIP)

    def _count(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.limit:
            raise UploadTooLarge(f"the upload holds more than {self.limit / (1 << 20):.0f} MiB of data once "
                                 "decompressed (--max-upload-decompressed-mb); send a smaller file")
        first = data.find(b"\n")
        # a chunk is at most 1 MiB: only the line running across chunks can be longer than one
        self.line += len(data) if first < 0 else first
        if self.line > self.max_line:
            raise DataError(f"line {self.lines + 1} of the upload is longer than {self.max_line >> 20} MiB; "
                            "is it a CSV/TXT file with one row a line?")
        if first >= 0:
            self.lines += data.count(b"\n")
            self.line = len(data) - data.rfind(b"\n") - 1


async def spool(body: AsyncIterator[bytes], path: Path, limit: int) -> None:
    """Write the body to `path`, refusing it (413 / 422) as soon as it is too large or a line is too long."""
    check = UploadCheck(limit)
    with open(path, "wb") as f:
        async for chunk in body:
            check.add(chunk)
            f.write(chunk)
