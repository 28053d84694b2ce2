"""Read a data file whole, refusing it unread when it holds more than a cap."""

from __future__ import annotations

import os
from pathlib import Path

_CHUNK_BYTES = 1 << 20


def read_capped(path: Path, limit: int) -> bytes | None:
    """Return the bytes of ``path``, or None when it holds more than ``limit`` bytes.

    A regular file's size is checked before anything is read; a file whose size the system does not know (a pipe)
    is read in 1 MiB chunks until it ends or passes ``limit``. Memory is what the file holds, never ``limit`` up
    front (``f.read(n)`` allocates n bytes before it reads).

    Raises
    ------
    OSError
        The file cannot be opened or read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d, "f")
    ...     _ = p.write_bytes(b"abc")
    ...     read_capped(p, 3), read_capped(p, 2)
    (b'abc', None)
    """
    with path.open("rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size > limit:
            return None
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = f.read(min(_CHUNK_BYTES, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
    return None
