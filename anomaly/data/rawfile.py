"""Opening a data file within the limits of `anomaly.limits`: plain or gzip (refused as it inflates past its
allowance), its first lines read without reading a whole over-long line, and a corrupt .gz reported in one
line. `csvread` reads blocks through here and `sniffing` reads the head."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from .. import limits
from ..errors import DataError

SNIFF_BYTES = 64 * 1024


class _Inflated:
    """A gzip stream that refuses to give more than `allowance` bytes (`limits.gzip_allowance`): a small file
    that inflates to gigabytes is refused as it inflates, not after."""

    def __init__(self, path: Path, allowance: int):
        self.path, self.allowance, self.left = path, allowance, allowance
        self.f = gzip.open(path, "rb")

    def read(self, size: int = -1) -> bytes:
        return self._count(self.f.read(self.left + 1 if size is None or size < 0 else min(size, self.left + 1)))

    def readline(self, size: int = -1) -> bytes:
        return self._count(self.f.readline(self.left + 1 if size is None or size < 0 else min(size, self.left + 1)))

    def _count(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise DataError(f"{self.path} decompresses to more than {limits.describe(self.allowance)}, the limit for "
                            f"gzip input ({limits.GZIP_MAX_RATIO} times the compressed size, at least "
                            f"{limits.describe(limits.GZIP_MIN_BYTES)}); if it is genuine, decompress it first (gunzip)")
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compression_of(path: Path) -> str | None:
    with open(path, "rb") as raw:
        return "gzip" if raw.read(2) == b"\x1f\x8b" else None


def open_bytes(path: Path, compression: str | None):
    """The file's (decompressed) bytes, as a binary stream; gzip bounded by `limits.gzip_allowance`."""
    if compression == "gzip":
        return _Inflated(path, limits.gzip_allowance(path.stat().st_size))
    return open(path, "rb")


def read_head(path: Path) -> tuple[bytes, str | None, bool]:
    """(the first bytes, the compression, whether they hold the whole file): at least SNIFF_BYTES, read on
    until the first two non-blank lines have ended (a header wider than SNIFF_BYTES is read whole), at most
    limits.MAX_LINE_BYTES per line. Blank lines before them count too, up to 4 lines' worth."""
    compression = compression_of(path)
    cap = 4 * limits.MAX_LINE_BYTES
    with open_bytes(path, compression) as f:
        head = _read_chunk(f, SNIFF_BYTES, path)
        complete = len(head) < SNIFF_BYTES
        while not complete:
            ended = head[: head.rfind(b"\n") + 1]
            if sum(1 for ln in ended.split(b"\n") if ln.strip()) >= 2 or len(head) >= cap:
                break
            if len(head) - len(ended) > limits.MAX_LINE_BYTES:
                if b"\n" not in head and b"\r" in head:
                    raise DataError(f"{path} uses CR-only line endings (classic Mac); save it with LF or CRLF "
                                    "line endings")
                raise line_too_long(path, ended.count(b"\n") + 1)
            more = _read_chunk(f, len(head), path)
            head += more
            complete = not more
    return head, compression, complete


def line_too_long(path: Path, line: int) -> DataError:
    return DataError(f"{path}: line {line} is longer than {limits.describe(limits.MAX_LINE_BYTES)}, the limit for "
                     "one line of a data file")


def _read_chunk(f, size: int, p: Path, line: bool = False) -> bytes:
    try:
        return f.readline(size) if line else f.read(size)
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt .gz
        raise DataError(f"{p}: cannot read compressed file ({exc})") from None
