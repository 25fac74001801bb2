"""`write_atomic`: replace a file's contents all or nothing, the one way every layer does it (the
durable store's records and values, an export's metadata, a plot's image)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes, sync: bool = False) -> None:
    """Write `data` into a new file beside `path`, then rename it over `path`: a reader sees the
    old contents or the new, never a part, and a failed write leaves the old file and no scratch
    file. With `sync`, the file and its directory are fsynced (the change survives a power loss)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
