"""Gzip-compressed extracts (`.csv.gz`): inflated in memory, never past the size limit.

National raw extracts are about 161 bytes a row uncompressed, more than a machine like the
server has free beside staging and the version, so suppliers may send them gzipped. The
extract is recognised by gzip's magic bytes, not by its name (uploads have none), and is
inflated in memory only (like a plain extract, no copy with identifiers reaches the disk).
The uncompressed size is held to the same limit as a plain upload: the limit exists
because the extract is held in memory, and a small compressed file could otherwise inflate
without bound.
"""

from __future__ import annotations

import zlib

from dpgate_server.governance.errors import GovernanceError, Problem, extract_rejected
from dpgate_server.vocabulary.errors import ErrorReason

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_STEP = 1 << 24


def is_gzip(data: bytes) -> bool:
    """True if `data` starts like a gzip file."""
    return data.startswith(GZIP_MAGIC)


def inflated(data: bytes, limit: int) -> bytes:
    """`data` uncompressed if it is gzip (every member, as `gzip -d` would), else `data`.

    Raises:
        GovernanceError: EXTRACT_TOO_LARGE once the uncompressed bytes pass `limit`;
            EXTRACT_REJECTED if the gzip stream is corrupt or cut short.
    """
    if not is_gzip(data):
        return data
    out = bytearray()
    pending = data
    try:
        while pending:
            decompressor = zlib.decompressobj(_GZIP_WBITS)
            chunk = pending
            while chunk:
                out += decompressor.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit:
                    raise _too_large(limit)
                chunk = decompressor.unconsumed_tail
            if not decompressor.eof:
                raise _corrupt("the compressed extract is cut short")
            pending = decompressor.unused_data.lstrip(b"\0")  # padding after a member
    except zlib.error:
        raise _corrupt("the compressed extract is corrupt (gzip could not read it)") from None
    return bytes(out)


def _corrupt(message: str) -> GovernanceError:
    return extract_rejected([Problem(0, "", message + "; send it again")])


def _too_large(limit: int) -> GovernanceError:
    return GovernanceError(
        ErrorReason.EXTRACT_TOO_LARGE,
        f"the extract uncompressed is over the limit of {limit:,} bytes; nothing was staged "
        "(split it, or the operator raises governance.max_upload_bytes)",
        {"limit_bytes": str(limit)},
    )
