"""Load pickles from the internet without letting them run code.

``pickle.load`` calls whatever global a file names (``os.system``, ``builtins.eval``...), so a
downloaded benchmark file could run code when opened. ``safe_load_pickle`` uses an unpickler whose
``find_class`` only returns builtin containers and scalars and what numpy arrays need, under both
spellings numpy has used: ``numpy.core.multiarray`` (numpy 1.x, which wrote the MMSA and MulT files)
and ``numpy._core.multiarray`` (numpy 2). Anything else raises ``UnsafePickleError`` before it can
be called.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import codecs
import collections
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from .validate import LOGGER, DataFormatError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = ["UnsafePickleError", "safe_load_pickle", "ALLOWED_GLOBALS"]


class UnsafePickleError(DataFormatError):
    """The pickle names a global outside the allow-list; nothing from it was called."""


def _allowed() -> Dict[Tuple[str, str], object]:
    table: Dict[Tuple[str, str], object] = {}
    for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool",
                 "str", "bytes", "bytearray", "slice", "range"):
        table[("builtins", name)] = getattr(__import__("builtins"), name)
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("collections", "defaultdict")] = collections.defaultdict
    table[("_codecs", "encode")] = _codecs.encode  # protocol-2 pickles store bytes this way
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    return table


#: (module, name) -> object: the only globals a data pickle may name
ALLOWED_GLOBALS: Dict[Tuple[str, str], object] = _allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, label: str, encoding: str, pickle_end: bool = True) -> None:
        super().__init__(file, encoding=encoding)
        self._label = label
        self._pickle_end = pickle_end  # the file starts with PROTO or ends with STOP, as pickles do

    def find_class(self, module: str, name: str) -> object:
        # Python 2 names (__builtin__.set, copy_reg...) as the base class's fix_imports maps them
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None and not (_dotted(module) and _dotted(name) and (self._pickle_end or _importable(module))):
            # not a name a pickler writes: a text file whose first letter is GLOBAL's opcode 'c'
            raise pickle.UnpicklingError(f"GLOBAL names no Python object ({module!r}, {name!r})")
        if obj is None:
            raise UnsafePickleError(
                f"{self._label}: refused to load global '{module}.{name}' (only builtin containers "
                f"and numpy arrays are allowed; loading it with pickle.load could run code); "
                f"re-export the file with plain dicts, lists and numpy arrays")
        return obj


def folder_error(p: Path) -> IsADirectoryError:
    """The error for a folder passed where a pickle file belongs, naming the pickles in it."""
    found = sorted(str(q.relative_to(p)) for q in [*p.glob("*.pkl"), *p.glob("*/*.pkl")])[:4]
    hint = (f"pass one of the pickles in it: {', '.join(found)}" if found
            else "it holds no .pkl file; pass the pickle's own path")
    return IsADirectoryError(f"{p}: is a folder, but a pickle file is expected here ({hint})")


#: leading bytes of files often passed where a pickle belongs
_MAGIC = ((b"\x93NUMPY", "a NumPy .npy array"), (b"PK\x03\x04", "a zip archive (a torch.save file or .npz)"),
          (b"\x89HDF", "an HDF5 file"), (b"\x1f\x8b", "gzip-compressed (decompress it first: gunzip)"),
          (b"BZh", "bzip2-compressed (decompress it first: bunzip2)"),
          (b"\xfd7zXZ\x00", "xz-compressed (decompress it first: unxz)"))


def _dotted(text: str) -> bool:
    """Whether ``text`` is a dotted Python name, as a pickle's GLOBAL module and name are."""
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _ends_with_stop(p: Path) -> bool:
    """Whether the file's last byte is pickle's STOP opcode '.'."""
    with open(p, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"."


def _importable(module: str) -> bool:
    """Whether ``module``'s top-level package exists here (found, not imported): a protocol 0 / 1 pickle
    naming one is a pickler's output even with bytes after its end, not a text file starting with 'c'."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _looks_pickled(p: Path) -> bool:
    """Whether the file reads as a pickler's output: it starts with the PROTO opcode (protocol 2 and
    later) or ends with STOP. A text file whose first letter is GLOBAL's opcode 'c' does neither; a
    pickle with bytes after its end still starts with PROTO (a review: an unsafe pickle followed by a
    newline was called a damaged download instead of refused as unsafe)."""
    with open(p, "rb") as fh:
        return fh.read(1) == b"\x80" or _ends_with_stop(p)


def _foreign_kind(p: Path) -> str:
    """What a file that failed to unpickle is, from its first bytes ('' when unknown): a wrong file
    type wants another file, not a fresh download."""
    with open(p, "rb") as fh:
        head = fh.read(512)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    # pickles of protocol 2 and up start with PROTO (0x80); protocol 0 ones are text, usually
    # opening with MARK '(', an empty list / dict or a GLOBAL 'c' followed by a module name (and,
    # like every pickle, ending with STOP '.': a one-column text file 'clip_id\nvid_a\n' does not)
    protocol0_global = head[:1] == b"c" and _dotted(head[1:].split(b"\n")[0].decode("latin1")) and _ends_with_stop(p)
    if head and head[:1] not in (b"\x80", b"(", b"]", b"}") and not protocol0_global:
        try:  # incremental: a multi-byte character cut at the 512th byte is not an error
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
            return "a text file" + (" (comma-separated)" if b"," in head.split(b"\n")[0] else "")
        except UnicodeDecodeError:
            pass
    return ""


def safe_load_pickle(path: str | Path, encoding: str = "latin1") -> object:
    """Unpickle ``path`` allowing only builtin containers, scalars and numpy arrays.

    Args:
        path: the pickle file; it is only read.
        encoding: how Python 2 ``str`` objects are decoded; "latin1" (the default) is what
            Python-2 numpy pickles need (GCNet / DialogueRNN label files) and does not affect
            Python-3 pickles.

    Returns:
        The unpickled object.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        IsADirectoryError: when ``path`` is a folder (the message lists pickles inside it).
        UnsafePickleError: the file names a global outside ``ALLOWED_GLOBALS``; the message is one
            line naming the file and ``module.name``.
        DataFormatError: the file is truncated or not a pickle.

    Example:
        >>> import io, pickle, tempfile, os
        >>> f = tempfile.NamedTemporaryFile(suffix=".pkl", delete=False)
        >>> _ = f.write(pickle.dumps({"train": np.zeros((2, 3))})); f.close()
        >>> safe_load_pickle(f.name)["train"].shape
        (2, 3)
        >>> os.remove(f.name)
    """
    p = Path(path)
    if p.is_dir():
        raise folder_error(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file; check the path (nothing is downloaded for you)")
    with open(p, "rb") as fh:
        try:
            obj = _RestrictedUnpickler(fh, p.name, encoding, _looks_pickled(p)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # any decoding failure means a damaged or foreign file
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            kind = _foreign_kind(p)
            if kind:
                raise DataFormatError(f"{p.name}: is {kind}, not a pickle ({detail}); pass the pickle file the "
                                      f"format expects (docs/data.md)") from None
            raise DataFormatError(
                f"{p.name}: truncated or not a pickle ({detail}); download it again and compare "
                f"its size and SHA-256 with the published ones (docs/data.md)") from None
        end = fh.tell()
    extra = p.stat().st_size - end
    if extra > 0:  # a warning, not an error: the object read is whole, but the file holds more than one dump
        LOGGER.warning("%s: %d bytes follow the end of the pickle (read %d of %d bytes): the file may be damaged or "
                       "two files concatenated; compare its size and SHA-256 with the published ones (docs/data.md)",
                       p.name, extra, end, end + extra)
    return obj
