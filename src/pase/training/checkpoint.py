"""Checkpoint files: weights-only loading that names what it refuses, and atomic saving.

``torch.load(weights_only=True)`` only rebuilds tensors, containers and scalars; a file that
names any other global (``os.system``, a class...) is refused before anything is called.
``safe_load_checkpoint`` turns torch's long refusal into one line naming the file and the
global. ``SafeCheckpointIO`` is the Lightning plugin the trainer uses for every checkpoint: it
saves through a temporary file in the same folder, fsync and ``os.replace`` (Lightning's own
writer goes through an fsspec transaction whose temporary file lives in the system temp folder,
so the final move may be a copy across file systems and is never fsync'ed), and it loads every
checkpoint (resume, ``ckpt_path="best"``) weights-only, whatever the caller asks.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..io import FileWriteError, atomic_save, free_space, user_path

__all__ = ["CheckpointWriteError", "UnsafeCheckpointError", "safe_load_checkpoint", "SafeCheckpointIO"]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, most often); the previous one is intact.

    ``problem`` says what failed, ``fix`` what to do about it ("free space") and ``run`` which run to
    resume. A command that trains several runs (``pase compare``, ``pase crossval``) tells the user to
    run itself again (:meth:`for_command`): resuming the one run left the others untrained (a review)."""

    def __init__(self, problem: str, fix: str, run: str, command: str = "") -> None:
        then = (f"run the same {command} command again to continue (finished runs are kept)" if command
                else f"continue with pase train --resume {run}")
        super().__init__(f"{problem}: {fix}, then {then}")
        self.problem, self.fix, self.run, self.command = problem, fix, run, command

    def __reduce__(self):  # raised in a comparison's worker process: pickled with its parts
        return type(self), (self.problem, self.fix, self.run, self.command)

    def for_command(self, command: str) -> "CheckpointWriteError":
        return CheckpointWriteError(self.problem, self.fix, self.run, command)


class UnsafeCheckpointError(ValueError):
    """A checkpoint file is not a weights-only pase checkpoint; nothing from it was called."""


def safe_load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)``, with one-line errors.

    ``mmap=True`` maps the tensors' storage instead of reading it (a zip checkpoint; a legacy pickle is
    read whole): for callers that read only the small entries (``epoch``, ``pase_state``), so checking an
    interrupted run of a large model does not read its weights.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file names a global outside torch's weights-only allow-list
            (the message names it), or it is truncated or not a checkpoint.
    """
    p = user_path(path)  # as the CLI's options: `~` is the home folder
    if p.is_dir():
        found = sorted(str(c) for c in (p / "checkpoints" / "best.ckpt", p / "checkpoints" / "last.ckpt") if c.is_file())
        raise FileNotFoundError(f"checkpoint {str(p)!r} is a folder; pass a checkpoint file"
                                + (f", for example {found[0]}" if found else " (a run's checkpoints/best.ckpt)"))
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head and not (head.startswith(b"PK\x03\x04") or head[0] == 0x80):  # a zip archive, or a legacy pickle
        raise UnsafeCheckpointError(
            f"{p}: not a PyTorch checkpoint (it starts with {head!r}; a checkpoint is a zip archive written by "
            "torch.save); pass a .ckpt file from a run's checkpoints/, for example checkpoints/best.ckpt")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True,
                           mmap=mmap and head.startswith(b"PK\x03\x04"))
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        what = (f"names the global '{found.group(1)}'" if found
                else "holds objects other than tensors and containers")
        raise UnsafeCheckpointError(
            f"{p}: refused: the checkpoint {what}, which weights-only loading does not allow (loading "
            "it with pickle could run code); only checkpoints written by pase load") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file, whatever torch says
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise UnsafeCheckpointError(f"{p}: truncated or not a checkpoint ({detail})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise UnsafeCheckpointError(f"{p}: not a pase checkpoint (no 'state_dict'; found "
                                    f"{type(state).__name__}); pass a .ckpt file from a run's checkpoints/")
    return state


def _at_file_size_limit(size: Optional[int]) -> bool:
    """Whether a write that stopped with its file at ``size`` bytes met this process's file-size limit
    (``ulimit -f``, RLIMIT_FSIZE). torch's writer reports the refused write as a RuntimeError
    "unexpected pos ..." with no errno (Python ignores SIGXFSZ, so the process lives and the write fails with
    EFBIG inside torch), and the kernel fills the file up to the limit first, so the size tells: an
    EFBIG test on the error alone never fired under a real limit (a review)."""
    try:
        import resource
    except ImportError:  # not on Windows: the errno alone decides
        return False
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return size is not None and soft != resource.RLIM_INFINITY and size >= soft - 4096  # one page: "near"


#: a disk with less free space than this when a write failed is full (a block or a few are left at most)
_FULL = 2**20


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic saves, weights-only loads with one-line refusals."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO does not take storage_options")
        stopped_at: list = []  # the temporary file's size when the write failed (atomic_save then removes it)
        free_then: list = []  # the disk's free bytes at that moment, the partial file still on it

        def write(tmp: str) -> None:
            try:
                torch.save(checkpoint, tmp)
            except BaseException:
                stopped_at.append(os.path.getsize(tmp) if os.path.exists(tmp) else None)
                try:
                    free_then.append(shutil.disk_usage(os.path.dirname(tmp) or ".").free)
                except OSError:
                    pass
                raise

        try:
            atomic_save(path, write)
        except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as "unexpected pos ..."
            p = Path(path)
            # measured with the partial file still there: after its removal a full disk showed its size as free
            free = f"{free_then[0] / 2**20:.0f} MiB free on its disk" if free_then else free_space(p)
            exc = (exc.__cause__ or exc) if isinstance(exc, FileWriteError) else exc  # the write's own error
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:120]
            # a file-size limit (ulimit -f) is not a full disk: "free space" sent users to a disk with room
            limit = (_at_file_size_limit(stopped_at[0] if stopped_at else None)
                     or getattr(exc, "errno", None) == errno.EFBIG)
            fix = "raise the file-size limit (ulimit -f)" if limit else "free space"
            # a full disk is the cause itself: torch's internals ("[enforce fail at inline_container.cc:672] .
            # unexpected pos ...") said nothing more to the user (a review)
            full = not limit and (getattr(exc, "errno", None) == errno.ENOSPC
                                  or bool(free_then and free_then[0] < _FULL))
            why = f"{free}: the disk is full" if full else f"{free}; {detail}"
            # the first save of a file had nothing to keep: "the previous one is kept" was false (a review)
            kept = "the previous one is kept" if p.is_file() else "there was no earlier one to keep"
            raise CheckpointWriteError(f"{p}: the checkpoint could not be written ({why}); {kept}", fix,
                                       str(p.parent.parent)) from None

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return safe_load_checkpoint(path, map_location=map_location)  # weights-only, always
