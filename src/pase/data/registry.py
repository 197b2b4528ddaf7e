"""Registry of data sources: each on-disk format (and the built-in benchmark) registers a loader.

A loader is ``load(**options) -> DataBundle``; ``create_data(name, **options)`` is the only way in.
A loader may carry attributes that answer from its options alone, reading no data: ``check_options``
(the argument errors it would raise) and ``task_kind`` (the kind of task it loads, a function of the options or
one string: ``source_task_kind``).
"""

from __future__ import annotations

import collections.abc
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..registry import Registry
from .contract import DataBundle, class_support_problem
from .validate import LOGGER

__all__ = ["DATA_SOURCES", "register_data", "create_data", "source_task_kind", "option_hints", "text_options"]

DATA_SOURCES: Registry[Callable[..., DataBundle]] = Registry("data source")


def register_data(name: str):
    """Decorator: register a loader ``fn(**options) -> DataBundle`` under ``name``."""
    return DATA_SOURCES.register(name)


def create_data(name: str, **options) -> DataBundle:
    """Build the ``DataBundle`` of source ``name`` with its options.

    A classification class (multilabel: a label) without a training sample is logged as one warning
    (``contract.class_support_problem``): every source passes here, and training goes on. Once per process
    and file state (``pase compare`` loads the data once per run; a review counted the line N methods x S seeds
    times), and by rank 0 alone in a DDP worker (rank 1 printed the same line again)."""
    bundle = DATA_SOURCES.create(name, **options)
    problem = class_support_problem(bundle) if isinstance(bundle, DataBundle) else None
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    key = (_file_identity(bundle.info.get("file")), problem) if problem else None
    if key and rank == 0 and key not in _WARNED:
        _WARNED.add(key)
        LOGGER.warning("%s", problem)
    return bundle


#: (file identity, line) of the class-support warnings this process logged
_WARNED: set = set()


def _file_identity(file: Any) -> str:
    """A file's path with its size and modification time, so a file changed on disk since a warning (and changed
    back to the state it warned about) warns again in the same process (a review); the path alone without one."""
    try:
        st = os.stat(file)
    except (OSError, TypeError, ValueError):
        return str(file)
    return f"{file}@{st.st_size}:{st.st_mtime_ns}"


def source_task_kind(name: str, **options) -> Optional[str]:
    """The task kind ("regression", "classification", "multilabel") source ``name`` loads with ``options``,
    told without reading any data by the loader's ``task_kind(**options)``; None when it cannot tell (a
    loader without one, a dataset its file name does not give, an unknown source: loading names those).

    Example:
        >>> source_task_kind("synthetic")
        'regression'
    """
    tell = getattr(DATA_SOURCES.get(name), "task_kind", None) if name in DATA_SOURCES else None
    if tell is None or isinstance(tell, str):  # a string: the kind whatever the options
        return tell
    try:
        return tell(**options)
    except (ValueError, TypeError):  # DataFormatError is a ValueError; a missing argument a TypeError
        return None


def option_hints(name: str) -> Dict[str, Any]:
    """The type hints of the options of source ``name``'s loader; ``{}`` for an unknown source, or a
    plug-in loader whose hints do not resolve here (or a partial)."""
    if name not in DATA_SOURCES:
        return {}
    try:
        return typing.get_type_hints(DATA_SOURCES.get(name))
    except (NameError, TypeError):
        return {}


def _members(hint: Any) -> List[Any]:
    """The types ``hint`` allows besides None: ``str | Path`` -> [str, Path], ``Optional[X]`` -> [X], X -> [X]."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _is_text(hint: Any) -> bool:
    """``hint`` takes text alone: ``str``, ``Path``, ``str | Path`` or an Optional of those."""
    inner = set(_members(hint))
    return bool(inner) and inner <= {str, Path}


def text_options(name: str) -> Dict[str, str]:
    """The options of source ``name``'s loader that hold text (a path or a name): option -> ``"value"``
    (the option is text, ``label_path``) or ``"values"`` (a mapping whose values are text, GCNet's
    ``features``). ``DataConfig`` keeps what was written there: YAML reads ``007`` as the int 7.

    Example:
        >>> text_options("gcnet")["label_path"], text_options("gcnet")["features"]
        ('value', 'values')
    """
    found = {}
    for key, hint in option_hints(name).items():
        inner = _members(hint)
        args = typing.get_args(inner[0]) if len(inner) == 1 else ()
        if key != "return" and _is_text(hint):
            found[key] = "value"
        elif len(args) == 2 and typing.get_origin(inner[0]) in (dict, collections.abc.Mapping) and _is_text(args[1]):
            found[key] = "values"
    return found
