"""Writing files where someone else on the board may have planted a link.

A temporary file at a predictable name (`.collect-<pid>.tmp`, `.model.onnx.<pid>.tmp`) can be
pre-created by another local user as a symbolic link to a victim file, which the next write then
overwrites. And a folder inside a shared dataset folder can be a link that leads out of it.

- `create_exclusive(folder, prefix, suffix)`: a new file with a random name, created with
  O_CREAT|O_EXCL|O_NOFOLLOW (it cannot already exist, as a file or as a link), mode 0666 less the
  umask (as open() makes it: the group may read a dataset or a model as before). `folder` is a path
  or a directory file descriptor.
- `open_folder(path)`: a folder's descriptor, opened with O_NOFOLLOW|O_DIRECTORY: a symbolic link
  there is refused (UnsafeFile). Files are then made relative to the descriptor, so the folder cannot
  be swapped for a link between the check and the write.
"""

from __future__ import annotations

import errno
import os
import secrets

from edge_runtime.util.safeio import UnsafeFile

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def create_exclusive(folder: str | os.PathLike | int, prefix: str, suffix: str = ".tmp",
                     mode: int = 0o666) -> tuple[int, str]:
    """(fd, name) of a file created now, by us, in `folder` (a path or a directory fd)."""
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            if isinstance(folder, int):
                return os.open(name, _FLAGS, mode, dir_fd=folder), name
            return os.open(os.path.join(os.fspath(folder), name), _FLAGS, mode), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name after 100 tries")


def open_folder(path: str | os.PathLike) -> int:
    """A directory fd for `path`, refusing a symbolic link (UnsafeFile) and anything not a folder."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise UnsafeFile(f"{os.fspath(path)} is a symbolic link; refusing to follow it") from None
        raise
