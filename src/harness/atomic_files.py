"""Files replaced in one rename, so a crash or a kill leaves the old file or the new one,
never half of one.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """A new file to write that then replaces ``path`` in one rename.

    The temporary name is unique per writer, so processes writing the same path (DDP
    ranks, runs sharing a folder) never rename each other's half-written files. Ctrl-C and
    SIGTERM wait until the file is in place: raised inside torch's writer, a
    ``KeyboardInterrupt`` aborts the whole process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    held: list[int] = []
    handlers = {
        signum: signal.signal(signum, lambda signum, _: held.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in held:
            signal.raise_signal(signum)


def write_atomic(path: Path, text: str) -> None:
    with replaced_atomically(path) as file:
        file.write(text.encode())
