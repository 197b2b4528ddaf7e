"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file, and a crash leaves the previous version intact (at
worst a hidden ``.<name>.*.tmp`` file stays behind after SIGKILL or a power loss; an exception,
Ctrl-C or, under the ``pase`` command, SIGTERM leaves none). Resuming a run or starting one in its
folder removes a run's own (``config.yaml``, ``metrics.json``, ``log.csv``, checkpoints); the same
``pase compare`` command again, those of its ``config.yaml`` and ``compare.json``; the same ``pase
crossval`` command again, those of its summaries. One of a diagnosis, a comparison's summary or a
report stays: it is never read and no rerun trips over it, and those folders have no lock, so
removing it could break another process's write in flight. The file gets the permissions a plain
``open(path, "w")`` would give (``mkstemp`` alone would make it private to the owner).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["user_path", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "atomic_save", "sha256_file",
           "FileWriteError", "is_partial_write", "remove_partial_writes", "can_lock", "try_lock", "NOT_WRITABLE",
           "not_writable"]

#: errno values of a write refused by permissions or a read-only file system
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def not_writable(why: str = "") -> str:
    """The words of the one-line refusals of a folder this process cannot write: "is not writable (<the OS's
    reason>)", or without a reason "is not writable by this user (or is on a read-only file system)"."""
    return f"is not writable ({why})" if why else "is not writable by this user (or is on a read-only file system)"


def user_path(path: "str | os.PathLike[str]") -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded as the shell would, like the CLI's options;
    one that names no user (``~notes``) is kept as written. ``Path.expanduser`` raised "Could not
    determine home directory" there, where the CLI had passed the folder through (a review)."""
    return Path(os.path.expanduser(os.fspath(path)))


class FileWriteError(OSError):
    """A file could not be written (a full disk, a read-only folder); its previous version is intact.
    Built as ``FileWriteError(errno, message)``: ``errno`` is the cause's (kept when pickled, as
    from a ``pase compare --jobs`` worker), the message names the file and the free space."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def atomic_save(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    Raises:
        FileWriteError: the folder, the temporary file or the rename failed with an ``OSError``
            (the previous ``path``, if any, is untouched and the temporary file removed).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileWriteError):
            raise FileWriteError(exc.errno, f"{path}: could not be written ({exc.strerror or exc}; "
                                 f"{free_space(path)}); its previous version, if any, is intact") from exc
        raise


def is_partial_write(name: str, of: Sequence[str] = ()) -> bool:
    """Whether ``name`` is the hidden ``.<file>.<random>.tmp`` a killed :func:`atomic_save` leaves (of one of
    the files ``of``, when given): never a finished file, so a folder check may ignore it."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    return not of or any(name.startswith(f".{f}.") for f in of)


def remove_partial_writes(folder: Path, of: Sequence[str]) -> None:
    """Remove the partial writes of the files ``of`` (see :func:`is_partial_write`) a killed command left
    in ``folder``; another hidden ``.*.tmp`` (a user's) stays. For a command that goes ahead after its checks."""
    for p in Path(folder).iterdir() if Path(folder).is_dir() else []:
        if p.is_file() and is_partial_write(p.name, of):
            p.unlink(missing_ok=True)


def free_space(path: Path) -> str:
    """'N MiB free on its disk' for the disk ``path`` (or its nearest existing parent) lies on."""
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its disk"
    except OSError:
        return "free space unknown"


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, read in 4 MiB chunks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def can_lock() -> bool:
    """Whether this platform has ``fcntl.flock`` (Windows has none: the callers then go on without a lock)."""
    return importlib.util.find_spec("fcntl") is not None


def try_lock(fd: int, path: Path, unlocked: str, busy: Exception) -> bool:
    """An exclusive, non-blocking ``fcntl.flock`` on the open file ``fd`` (``path``): True when taken (``fd``
    stays open, holding it). Otherwise ``fd`` is closed: ``busy`` is raised when another process holds the
    lock; False is returned on a filesystem that cannot lock (``ENOLCK``, ``EOPNOTSUPP``), with a warning
    naming ``path`` and saying ``unlocked`` (how the caller goes on). Every failure was read as "another
    process holds it", so on such a filesystem nothing could run (a review)."""
    import fcntl  # the callers check can_lock() first

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise busy from None
    except OSError as exc:
        os.close(fd)
        logging.getLogger("pase").warning("%s: this filesystem cannot lock it (%s); %s", path, exc.strerror or exc,
                                          unlocked)
        return False
    return True
