"""What a path given on the command line names, said before anything opens it.

A named pipe (FIFO) makes its reader wait until something writes to it, possibly forever,
and a device such as ``/dev/zero`` never ends: neither may be read as a file, and "does not
exist" would send the user looking for the wrong mistake.
"""

from __future__ import annotations

import stat
from pathlib import Path

KINDS = (
    (stat.S_ISDIR, "is a folder"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), not a file"),
    (stat.S_ISCHR, "is a character device, not a file"),
    (stat.S_ISBLK, "is a block device, not a file"),
    (stat.S_ISSOCK, "is a socket, not a file"),
)


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (``"does not exist"``, ``"is a folder"``, ...);
    ``None`` for a regular file or a link to one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:  # a permission, a link loop, a name too long
        return f"cannot be looked at ({error.strerror})"
    if stat.S_ISREG(mode):
        return None
    return next((text for is_kind, text in KINDS if is_kind(mode)), "is not a file")
