"""Public training API: ``train``, ``evaluate``, ``predict``; the CLI is a view of these.

A run directory holds ``config.yaml`` (fully resolved), ``metrics.json`` (validation and test
metrics of the selected checkpoint, protocol, dataset, method, seed, elapsed seconds, package
version), ``log.csv`` (one row per epoch) and ``checkpoints/`` (``best.ckpt``, ``last.ckpt``).
Selection uses the validation split only; the test split is evaluated once, at the end, from
the best checkpoint.

Reliability (docs/reliability.md): every file is written atomically (checkpoints through
``SafeCheckpointIO``), every checkpoint is loaded weights-only, ``last.ckpt`` is saved at the
end of every epoch and ``train(..., resume=True)`` continues from it bit for bit on CPU, a
non-finite loss, gradient or weight stops the run (``NonFiniteGuard``), and under
``torch.distributed`` only rank 0 writes the run directory.
"""

from __future__ import annotations

import collections.abc
import contextlib
import csv
import dataclasses
import difflib
import errno
import json
import inspect
import io
import logging
import math
import os
import shutil
import signal
import threading
import time
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
import torch

from .. import __version__, code_fingerprint
from ..config import (Config, ConfigError, apply_overrides, as_trained, coerce_value, config_difference,
                      first_difference, from_dict, load_config, save_config, to_dict, with_dataset)
from ..data import create_data
from ..data.registry import DATA_SOURCES, option_hints
from ..data.contract import (READ_CHANGED, DataBundle, fingerprint, fingerprint_difference, select_modalities,
                             standardize)
from ..errors import RESUME_ADVICE, RunInterrupted
from ..io import (NOT_WRITABLE, atomic_save, atomic_write_json, atomic_write_text, is_partial_write, not_writable,
                  remove_partial_writes, can_lock, sha256_file, try_lock, user_path)
from ..methods import create_method
from ..methods.ogm_ge import check_modalities as check_ogm_modalities
from ..methods.pase import schedule_warning
from ..metrics import MetricAccumulator, get_protocol
from ..models import build_model
from .callbacks import (EpochCSVLog, InterruptRecorder, NonFiniteGuard, RelocatableCheckpoint,
                        ResumableEarlyStopping, early_stopped)
from .checkpoint import SafeCheckpointIO, safe_load_checkpoint
from .datamodule import DATA_ORDER, make_loader, set_loader_epoch
from .precision import inference, precision_plugin, set_inference_precision, token_inputs, trainer_precision
from .lightning_module import PaseModule, check_compile

__all__ = ["train", "evaluate", "predict", "load_bundle", "load_checkpoint", "RunDirError", "RunInterrupted"]

log = logging.getLogger("pase")
for _name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class RunDirError(FileExistsError):
    """The output directory already holds a run; nothing in it is touched."""


#: the settings a resumed run may change (how long and where it trains, how it reports); any
#: other difference from the run's config.yaml would mix two configurations in one run
RESUMABLE = ("train.max_epochs", "train.early_stop_patience", "train.progress_bar", "train.num_workers",
             "train.accelerator", "train.devices", "train.strategy", "train.compile")

#: the :data:`RESUMABLE` settings that change the numbers from the resumed epoch on (under DDP each process takes
#: train.batch_size samples, so train.devices and train.strategy set the global batch): a resume that changes one
#: keeps the config.yaml the earlier epochs ran with as config.epochs<N>.yaml (:func:`_keep_config`)
CHANGES_THE_NUMBERS = ("train.accelerator", "train.devices", "train.strategy", "train.compile")


def _option_key(name: str) -> str:
    """The config key of a loader argument: ``path`` is ``data.path``, the others ``data.options.<name>``."""
    return "data.path" if name == "path" else f"data.options.{name}"


def _check_data_options(source: str, opts: Dict[str, Any]) -> None:
    """Every option is one the source's loader takes, of the type it declares, and every argument it
    requires is given (else one line naming the key: the accepted ones, the type, or the missing one)."""
    loader = DATA_SOURCES.get(source)
    params = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in opts:
            if key not in params:
                accepted = ", ".join(_option_key(k) for k in params) or "none"
                close = difflib.get_close_matches(key, list(params), n=1)
                hint = f"; did you mean {_option_key(close[0])}?" if close else ""
                raise ConfigError(f"{_option_key(key)} is not an option of data source {source!r}{hint}; it takes "
                                  f"{accepted}")
    hints = option_hints(source)  # {} for a plug-in loader whose hints do not resolve here, or a partial: unchecked
    mods = opts.get("modalities")
    if isinstance(mods, (list, tuple)):  # a second 'a' overwrote the first (synthetic: a torch shape error; mosi_bclstm
        names = [m for m in mods if isinstance(m, str)]  # others: the loader's "must be a list of names"
        twice = sorted({m for m in names if names.count(m) > 1})  # loaded one modality; review)
        if twice:
            raise ConfigError(f"config key 'data.options.modalities' names {twice[0]!r} twice; name each modality once")
    for key, value in opts.items():  # a number, flag or text option of the wrong type (seed=abc) is named here
        want = hints.get(key)
        union = typing.get_origin(want) in (typing.Union, types.UnionType)  # Optional[x] and x | y
        inner = [a for a in typing.get_args(want) if a is not type(None)] if union else [want]
        if len(inner) == 1 and inner[0] in (int, float, bool, str):
            coerce_value(value, want, _option_key(key))
        elif value is not None:
            _check_structured_option(key, value, inner)
    for name, p in params.items():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in opts:
            key = _option_key(name)
            raise ConfigError(f"data source {source!r} needs {key} (docs/data.md); set it in the config or with "
                              f"--set {key}=...")


def _check_structured_option(key: str, value: Any, inner: List[Any]) -> None:
    """A mapping option (``expected_dims``, GCNet's ``features``) or a path option (``feature_root``)
    of another type failed inside the loader with a bare Python error naming neither."""
    if len(inner) == 1 and typing.get_origin(inner[0]) in (collections.abc.Mapping, dict):
        if not isinstance(value, collections.abc.Mapping):
            raise ConfigError(f"config key {_option_key(key)!r} must be a mapping of modality to value, for example "
                              f"{{audio: ...}}, got {type(value).__name__} {value!r}")
        args = typing.get_args(inner[0])
        for m, v in value.items():
            if len(args) == 2:  # the values' type: int (widths) or an optional folder name
                coerce_value(v, args[1], f"{_option_key(key)}.{m}")
    elif inner and set(inner) <= {str, Path} and not isinstance(value, (str, Path)):
        raise ConfigError(f"config key {_option_key(key)!r} must be a path, got {type(value).__name__} {value!r}")


def data_options(cfg: Config) -> Dict[str, Any]:
    """The loader arguments of ``cfg.data`` (its options and ``data.path``), checked against the
    source's loader (``_check_data_options``)."""
    opts = dict(cfg.data.options)
    if "path" in opts and cfg.data.path is not None and opts["path"] != cfg.data.path:
        # data.path overrode it silently, and config.yaml recorded both (a run of an older version may hold it)
        raise ConfigError(f"data.options.path={opts['path']!r} and data.path={cfg.data.path!r}: the data path is "
                          "data.path; drop data.options.path (or, resuming an older run, --set data.options.path="
                          "the data.path value)")
    if cfg.data.path is not None:
        opts["path"] = cfg.data.path
    _check_data_options(cfg.data.source, opts)
    return opts


def load_bundle(cfg: Config) -> DataBundle:
    """The ``DataBundle`` named by ``cfg.data`` (source, path, options). ``data.modalities`` also
    reaches a loader that takes ``modalities`` (unless ``data.options.modalities`` is set), so a
    file without an unused modality loads, and the unused one is neither read nor checked."""
    opts = data_options(cfg)
    if (cfg.data.modalities and "modalities" not in opts
            and "modalities" in inspect.signature(DATA_SOURCES.get(cfg.data.source)).parameters):
        opts["modalities"] = tuple(cfg.data.modalities)
    elif cfg.data.modalities and cfg.data.source == "gcnet":  # its features map leaves the unused ones unread
        from ..data.gcnet import DEFAULT_FEATURES

        named = dict(opts.get("features") or {})
        known = {**DEFAULT_FEATURES, **named}
        if all(m in known for m in cfg.data.modalities):  # else select_modalities names the unknown one
            opts["features"] = {**named, **{m: None for m in known if m not in cfg.data.modalities}}
    bundle = create_data(cfg.data.source, **opts)
    if cfg.data.modalities:
        bundle = select_modalities(bundle, cfg.data.modalities)
    if cfg.data.standardize:
        bundle = standardize(bundle)
    return bundle


def trained_dataset(run: Path, saved: Optional[Config] = None) -> Optional[str]:
    """The dataset (the loader's ``dataset`` option) the run in folder ``run`` was trained as, where known:
    ``data.options.dataset`` of ``saved`` (default: the run's config.yaml; a run records the one its path
    resolved to), else, for a run of a pase that left it to the path, the ``data_info.dataset`` of the run's
    metrics.json."""
    if saved is None:
        try:
            saved = load_config(run / "config.yaml")
        except (ConfigError, OSError, TypeError, ValueError):  # none, or unreadable: its own check names it
            saved = None
    name = saved.data.options.get("dataset") if saved is not None else None
    if name is None:
        try:
            name = ((json.loads((run / "metrics.json").read_text()) or {}).get("data_info") or {}).get("dataset")
        except (OSError, ValueError, AttributeError):  # no metrics.json (an unfinished run), or not pase's
            name = None
    return name if isinstance(name, str) else None


def check_trained_as(what: str | Path, trained: Optional[str], cfg: Config, bundle: DataBundle) -> None:
    """ConfigError unless ``bundle`` (``cfg``'s data) loaded as the dataset ``what`` (a checkpoint or run
    folder) was trained as: a dataset inferred from a moved path scored a SIMS run under MOSI's protocol, and
    resumed and compared it so (a review)."""
    now = bundle.info.get("dataset")
    if trained is None or not isinstance(now, str) or now == trained.lower():
        return
    file = next((v for v in _locations(cfg).values() if v), None) or bundle.info.get("file")  # data.path first
    raise ConfigError(f"{file}: this data loads as dataset {now!r} ({bundle.name}, "
                      f"protocol {bundle.task.protocol}), but {what} was trained as {trained.lower()!r}: its path "
                      "names another dataset (the dataset is read from the file and folder names when "
                      f"data.options.dataset is not set); pass --set data.options.dataset={trained.lower()} to read "
                      f"it as the run's dataset, or point {data_location_keys(cfg)} at the run's data (nothing was "
                      "changed)")


def path_dataset(source: Any, file: Any) -> Optional[str]:
    """The dataset the path ``file`` of a data file of loader ``source`` names (its file, then folder names, as
    the ``mmsa``, ``mult`` and ``gcnet`` loaders infer it when ``data.options.dataset`` is not set), or None:
    another source, or a path that names none (MMSA's ``unaligned_39.pkl`` in a folder named after none)."""
    from ..data import gcnet, mmsa, mult
    from ..data.validate import DataFormatError, infer_dataset

    patterns = {"mmsa": mmsa._NAME_PATTERNS, "mult": mult._NAME_PATTERNS, "gcnet": gcnet._NAME_PATTERNS}.get(source)
    if patterns is None or not isinstance(file, str) or not file:
        return None
    try:
        return infer_dataset(Path(file), patterns)
    except DataFormatError:
        return None


def warn_path_names_another(what: str | Path, trained: Optional[str], bundle: DataBundle,
                            saved_data: Any = None) -> None:
    """Log one warning when ``bundle`` (read as the dataset ``what`` was trained as, ``trained``) lies at a
    path that names another dataset: a MOSI run scored on a SIMS file was read, and scored, as MOSI without a
    word (a review). Not refused: a run's own data moved to a folder named after another dataset is read as
    the run's on purpose, and that case (``saved_data``, the checkpoint's data fingerprint, equal to the
    data's) says nothing."""
    now = bundle.info.get("dataset")
    named = path_dataset(bundle.info.get("format"), bundle.info.get("file"))
    if (not isinstance(trained, str) or not isinstance(now, str) or now != trained.lower() or named is None
            or named == now):
        return
    if saved_data is not None and fingerprint_difference(saved_data, fingerprint(bundle)) is None:
        return  # the run's own data, moved
    log.warning("%s: its path names dataset %r, but %s was trained as %r: the file is read as %r (%s), and its "
                "scores use the run's protocol %r, whatever the path names", bundle.info.get("file"), named, what, now,
                now, bundle.name, bundle.task.protocol)


def _source_protocols(source: str) -> Dict[str, str]:
    """dataset -> metric protocol of the loader ``source`` (``mmsa``, ``mult``, ``gcnet``; others: none)."""
    from ..data.gcnet import GCNET_DATASETS
    from ..data.mmsa import MMSA_DATASETS
    from ..data.mult import MULT_DATASETS

    return {"mmsa": {d: p for d, (p, _) in MMSA_DATASETS.items()},
            "mult": {d: t.protocol for d, t in MULT_DATASETS.items()},
            "gcnet": {d: t.protocol for d, t in GCNET_DATASETS.items()}}.get(source, {})


def logged_metrics(log_csv: Path) -> set:
    """The protocol metric names (``valid/<name>`` columns, any protocol's) filled in some row of a run's
    log.csv: the protocol its finished epochs were scored under. Empty without the file or such a row."""
    from ..metrics.protocols import PROTOCOLS

    known = {n for p in PROTOCOLS.values() for n in p.metric_names}
    try:
        with open(log_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()
    return {k[len("valid/"):] for row in rows for k, v in row.items()
            if isinstance(k, str) and k.startswith("valid/") and v not in (None, "") and k[len("valid/"):] in known}


def check_logged_protocol(out: Path, cfg: Config, bundle: DataBundle) -> None:
    """ConfigError when ``out``'s log.csv was scored under another protocol than ``bundle`` (``cfg``'s data)
    loads as: for a run of a pase before the dataset was recorded, interrupted before metrics.json (the only
    other record), whose data now lies under a path that names another dataset (a review: a SIMS run resumed
    from a folder named MOSI finished as MOSI, its log.csv mixing both protocols' columns). The message names
    the run's dataset: the one of its log's protocol that the run's config.yaml path names, else each such."""
    logged = logged_metrics(out / "log.csv")
    names = set(get_protocol(bundle.task.protocol).metric_names)
    if not logged or logged <= names:
        return
    protocols = _source_protocols(cfg.data.source)
    runs = [d for d, p in protocols.items() if logged <= set(get_protocol(p).metric_names)]
    if not runs:  # no dataset of this source is scored so: not a protocol this check knows
        return
    try:
        saved = load_config(out / "config.yaml")
        named = [path_dataset(cfg.data.source, v) for v in _locations(saved).values()]
        runs = [d for d in named if d in runs][:1] or runs
    except (ConfigError, OSError, TypeError, ValueError):
        pass
    now = bundle.info.get("dataset")
    raise ConfigError(f"{out}: its log.csv was scored as dataset {' or '.join(map(repr, runs))} (valid/ columns "
                      f"{', '.join(sorted(logged - names))}), but this data loads as dataset {now!r} ({bundle.name}, "
                      f"protocol {bundle.task.protocol}): its path names another dataset, and the run's config.yaml "
                      f"does not record its own (a pase before that record); pass --set data.options.dataset="
                      f"{runs[0]} to resume it as the run's dataset, or point {data_location_keys(cfg)} at the "
                      "run's data (nothing was changed)")


def _with_resolved_dataset(cfg: Config, bundle: DataBundle) -> Config:
    """``cfg`` naming the dataset its data resolved to (``data.options.dataset``), where the loader takes one
    and the configuration left it to the path: saved with the run, so an evaluation, a resume or a comparison
    reads moved data as the same dataset (and protocol)."""
    name = bundle.info.get("dataset")
    loader = DATA_SOURCES.get(cfg.data.source) if cfg.data.source in DATA_SOURCES else None
    if (not isinstance(name, str) or cfg.data.options.get("dataset") is not None or loader is None
            or "dataset" not in inspect.signature(loader).parameters):
        return cfg
    return with_dataset(cfg, name)


def _monitor(cfg: Config, bundle: DataBundle) -> str:
    protocol = get_protocol(bundle.task.protocol)
    monitor = cfg.train.monitor or protocol.monitor
    if monitor not in protocol.higher_is_better:
        raise ValueError(f"train.monitor={monitor!r} is not a metric of protocol {protocol.name!r}; "
                         f"valid: {', '.join(protocol.metric_names)}")
    return monitor


def _build(cfg: Config, bundle: DataBundle, max_steps: Optional[Dict[str, int]] = None,
           pretrained: Optional[Dict[str, Dict[str, Any]]] = None) -> PaseModule:
    model = build_model(cfg, bundle, max_steps, pretrained)
    method = create_method(cfg.method, cfg, bundle.task, model)
    return PaseModule(model, method, bundle.task, to_dict(cfg), _monitor(cfg, bundle))


def _loaders(cfg: Config, bundle: DataBundle):
    tc = cfg.train
    mk = lambda split, shuffle: make_loader(bundle, split, tc.batch_size, shuffle, tc.seed,  # noqa: E731
                                            by_group=cfg.model.context, num_workers=tc.num_workers, shard=True)
    return mk("train", True), mk("valid", False), mk("test", False)


def _check_shards(cfg: Config, trainer: L.Trainer, loaders: Dict[str, Any]) -> None:
    """Under multi-process DDP (however it was asked for: ``strategy=auto`` with ``devices=2`` runs
    it too) every rank needs at least one batch of every split (Lightning stops otherwise,
    mid-launch and once per rank), and the processes must be started as ``ddp`` starts them:
    say so before anything starts."""
    world = trainer.world_size
    if world <= 1:
        return
    method = getattr(trainer.strategy, "_start_method", "popen")
    if method != "popen":  # ddp_spawn / ddp_fork: the spawned workers failed with 'bad value(s) in fds_to_keep'
        raise ValueError(f"train.strategy={cfg.train.strategy} starts its processes by {method}, which pase does "
                         "not support (its run folder lock and loaders are per process); use train.strategy=ddp")
    for split, loader in loaders.items():
        if len(loader) < world:
            raise ValueError(
                f"train.devices={cfg.train.devices} with train.strategy={cfg.train.strategy} runs {world} processes, "
                f"each with a share of the {split} batches, but split {split!r} has {len(loader.dataset)} samples = "
                f"{len(loader)} batch(es) of train.batch_size={cfg.train.batch_size}: use fewer devices or a smaller "
                "train.batch_size")


def _trainer(cfg: Config, out: Path, callbacks: Sequence[L.Callback], quiet: bool) -> L.Trainer:
    tc = cfg.train
    logger: Any = False
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401

        logger = TensorBoardLogger(str(out), name="tensorboard", version="")
    except ImportError:
        pass
    if tc.compile:
        check_compile(tc.accelerator)
        log.warning("train.compile=true: the first training steps compile the step (seconds with inductor's cache, "
                 "a minute or more without it on a CPU); it pays off in long runs (BENCHMARKS.md, section train.compile)")
    return _lightning_trainer(
        cfg, deterministic=tc.deterministic, callbacks=list(callbacks), logger=logger,
        enable_progress_bar=tc.progress_bar and not quiet, enable_model_summary=False, num_sanity_val_steps=0,
        gradient_clip_val=tc.grad_clip or None, default_root_dir=str(out), log_every_n_steps=1,
        use_distributed_sampler=False)  # the loaders shard themselves (datamodule)


def check_trainer_settings(cfg: Config) -> None:
    """Whether Lightning runs ``cfg``'s accelerator, devices, strategy and precision on this machine (as
    ``_trainer`` builds them), without a run folder: ``pase compare`` checks them before it writes its
    config.yaml (``train.devices='0,'`` on the CPU failed every run, and the corrected command was then
    refused as another configuration: a review). Raises the ConfigError ``pase train`` gives."""
    with warnings.catch_warnings():  # its notes (an unused GPU) come again with each run
        warnings.simplefilter("ignore")
        _lightning_trainer(cfg, logger=False, enable_progress_bar=False, enable_model_summary=False,
                           enable_checkpointing=False)


def _lightning_trainer(cfg: Config, **kwargs: Any) -> L.Trainer:
    """``L.Trainer`` with ``cfg``'s training length and hardware settings, and ``kwargs``; settings Lightning
    cannot run here are one ConfigError naming them."""
    tc = cfg.train
    precision = trainer_precision(tc.precision, token_inputs(cfg))  # {"precision": ...} or {"plugins": [...]}
    try:
        return L.Trainer(
            max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy,
            precision=precision.get("precision"), plugins=[SafeCheckpointIO(), *precision.get("plugins", [])],
            **kwargs)
    except (MisconfigurationException, ModuleNotFoundError, ValueError, TypeError) as e:
        # Lightning's own line ("No supported gpu backend found!") named no setting (a review); its CPU
        # accelerator raises TypeError for devices it takes elsewhere (-1, [0], "0,1")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        # a strategy such as fsdp or deepspeed is not fixed by the accelerator (a review): name the strategies
        # that run anywhere when the same settings with train.strategy=auto would run, else the accelerator
        hint = ("train.strategy=auto (one process) or ddp run on any machine"
                if tc.strategy != "auto" and _runs_with_auto_strategy(cfg)
                else "train.accelerator=auto runs on any machine; a GPU needs a CUDA build of torch")
        raise ConfigError(f"train.accelerator={tc.accelerator}, train.devices={tc.devices}, train.strategy="
                          f"{tc.strategy}, train.precision={tc.precision}: Lightning cannot run these on this machine "
                          f"({first[:200]}); change the setting it names ({hint})") from None


def _runs_with_auto_strategy(cfg: Config) -> bool:
    """Whether Lightning builds a trainer for ``cfg``'s accelerator, devices and precision with
    ``train.strategy=auto``: then the strategy is what this machine cannot run."""
    try:
        check_trainer_settings(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, strategy="auto")))
        return True
    except ConfigError:
        return False


def _rank() -> int:
    """This process's rank: a DDP worker that Lightning started for rank > 0 knows it from the start."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


def check_run_folder(out: Path, resume: bool) -> None:
    """``out`` can take a run: not a file, nor below one, and for a resume a run folder (with its config.yaml).
    The messages name the option that passed ``out``: a --resume below a file was told to pass another
    --out, which --resume refuses (a review)."""
    if out.exists() and not out.is_dir():
        if resume:
            raise RunDirError(f"--resume {out} is a file, not a run folder; pass the run folder to continue "
                              "(nothing was changed)")
        raise RunDirError(f"{out} is a file, not a run folder; pass a new --out (nothing was overwritten)")
    # below a file, mkdir failed after the data loaded, with a bare "[Errno 20] Not a directory" (review)
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and above is not None and not above.is_dir():
        if resume:
            raise RunDirError(f"--resume {out}: {above} is a file, not a run folder; pass the run folder to "
                              "continue (nothing was changed)")
        raise RunDirError(f"--out {out}: {above} is a file, not a folder; pass another --out (nothing was written)")
    if resume and not (out / "config.yaml").is_file():
        raise RunDirError(f"{out}: no config.yaml, so not a pase run folder to resume; start a new run with --out")
    # a read-only run folder failed at its lock, after the data loaded, with a bare errno line and advice to pass
    # another path, which --resume cannot take (a review)
    if resume and not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(_not_writable(out, resume))


def _not_writable(out: Path, resume: bool, why: str = "") -> str:
    """The one line for a run folder this process cannot write (``why``: the OS's reason, when known)."""
    cause = not_writable(why)
    if resume:
        return (f"--resume {out}: the run folder {cause}; make it writable, or copy the run elsewhere and resume "
                "the copy (nothing was changed)")
    return f"--out {out}: the folder {cause}; pass another --out (nothing was written)"


def _check_out(out: Path, resume: bool) -> None:
    check_run_folder(out, resume)
    if resume:
        return
    # the lock and a partial write of config.yaml are what a run killed before its first file leaves: such a
    # folder is empty to a new run (it was refused here, and --resume refused it for lack of config.yaml)
    if out.exists() and any(p.name != ".lock" and not (p.is_file() and is_partial_write(p.name, ("config.yaml",)))
                            for p in out.iterdir()):  # only pase's own leftovers: a user's .notes.tmp is refused
        raise RunDirError(f"{out} already holds files; pass a new --out, or --resume {out} to continue it "
                          "(nothing was overwritten)")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: a config built in Python may hold tuples, its config.yaml lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def without_data_location(data: Dict[str, Any]) -> Dict[str, Any]:
    """The ``data`` section of a config dict without where the files lie (``data.path``, a loader's
    ``path`` / ``*_path`` / ``*_root`` options): what may move between a run and its resume or evaluation."""
    options = {k: v for k, v in (data.get("options") or {}).items()
               if not (k == "path" or k.endswith(("_path", "_root")))}
    return {**{k: v for k, v in data.items() if k != "path"}, "options": options}


def data_location_keys(cfg: Config) -> str:
    """The keys that locate ``cfg``'s data as set (``data.path``, or a loader's location options such
    as ``data.options.label_path``): what a message about other data says to point at the run's data."""
    data = to_dict(cfg)["data"]
    keys = (["data.path"] if data.get("path") not in (None, "") else []) + [
        f"data.options.{k}" for k, v in (data.get("options") or {}).items()
        if (k == "path" or k.endswith(("_path", "_root"))) and v not in (None, "")]
    return " / ".join(keys) or "data.path"


def _locations(cfg: Config) -> Dict[str, Any]:
    """The keys that locate ``cfg``'s data (``data.path``, a loader's ``path`` / ``*_path`` / ``*_root``
    options) and their values, as set."""
    data = to_dict(cfg)["data"]
    return {"data.path": data.get("path"), **{f"data.options.{k}": v for k, v in (data.get("options") or {}).items()
                                              if k == "path" or k.endswith(("_path", "_root"))}}


def missing_run_data(e: FileNotFoundError, what: str, saved: Config, cfg: Config) -> FileNotFoundError:
    """``e`` (a data file or folder not found) saying, where the missing path is one ``cfg`` took from the run's
    own configuration ``saved`` (``what``: the checkpoint or run folder), where it came from and how to point
    at the data: pase evaluate from another folder than training ran in said only "no such file; check the path"
    of a relative path the user never typed (a review). The path is not rewritten."""
    own = _locations(saved)
    for key, value in _locations(cfg).items():
        if isinstance(value, str) and value.strip() and value == own.get(key) and not user_path(value).exists():
            relative = ("; a relative path is read from the current folder "
                        f"({Path.cwd()}), not the one training ran in" if not user_path(value).is_absolute() else "")
            return FileNotFoundError(f"{value}: no such file or folder; {key} comes from the configuration {what} "
                                     f"was trained with (its run's config.yaml){relative}: pass --set {key}=NEW with "
                                     "where the data lies now (nothing is downloaded for you)")
    return e


def without_locations(d: Dict[str, Any]) -> Dict[str, Any]:
    """A config dict without where files lie, which may move between a run and its resume, evaluation
    or a later comparison: the data's (:func:`without_data_location`) and a pretrained encoder's folder
    (``model.pretrained_path``; a BERT run whose folder moved could be neither evaluated nor resumed)."""
    return {**d, "data": without_data_location(d["data"]),
            "model": {k: v for k, v in d["model"].items() if k != "pretrained_path"}}


def _resumable_view(cfg: Config) -> Dict[str, Any]:
    """The settings a resume must keep: all but :data:`RESUMABLE` and where files lie
    (``without_locations``), which may move between the runs, as for evaluation."""
    d = _plain(to_dict(cfg))
    for key in RESUMABLE:
        section, name = key.split(".")
        d[section].pop(name, None)
    return without_locations(d)


def _folder_state(out: Path) -> Tuple[Optional[Tuple[int, int]], ...]:
    """(mtime_ns, size) of the files a resume's checks read, None for an absent one."""
    def stat(p: Path) -> Optional[Tuple[int, int]]:
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size
    return tuple(stat(out / f) for f in ("checkpoints/last.ckpt", "metrics.json", "config.yaml"))


#: the files of a run folder whose killed atomic writes (``.<name>.<random>.tmp``) a resume may remove
_RUN_WRITES = ("config.yaml", "metrics.json", "metrics.epochs", "log.csv")


def _clean_partial_writes(out: Path) -> None:
    """Remove the atomic writes a killed run did not finish (``pase.io`` names them ``.<file>.*.tmp``):
    of the run's own files and checkpoints only (a review: every ``.*.tmp`` went, a user's hidden
    ``.draft.tmp`` in the folder of a new run included); called once every check has passed."""
    remove_partial_writes(out, _RUN_WRITES)
    for tmp in (out / "checkpoints").glob(".*.ckpt.*.tmp"):
        if tmp.is_file():
            tmp.unlink()


def _kept_tag(kept: Path) -> str:
    """``epochs<N>`` of ``metrics.epochs<N>.json``: the infix of everything a longer run sets aside."""
    return kept.stem.split(".", 1)[1]


def _kept_checkpoint(out: Path, kept: Path) -> Path:
    """Where the selected checkpoint of a finished run that trains longer is kept beside its
    ``metrics.epochs<N>.json``: ``checkpoints/best.epochs<N>.ckpt``."""
    return out / "checkpoints" / f"best.{_kept_tag(kept)}.ckpt"


#: the files ``pase diagnose`` writes into a folder (diagnostics.json last, marking it finished); in a
#: run folder they are set aside with metrics.json when the run trains longer
DIAGNOSIS_FILES = ("diagnostics.json", "robustness.csv", "diagnostics.csv", "trajectory.csv")


def _selected_checkpoint(out: Path, metrics: Dict[str, Any]) -> Path:
    """The checkpoint a finished run's metrics.json names, inside ``out`` (a path outside it, as
    older versions wrote absolute paths, falls back to ``checkpoints/best.ckpt``)."""
    named = Path(metrics.get("checkpoint") or "checkpoints/best.ckpt")
    path = named if named.is_absolute() else out / named
    if not path.resolve().is_relative_to(out.resolve()):
        path = out / "checkpoints" / "best.ckpt"
    return path


def _leftover_keep(out: Path, kept: Path) -> bool:
    """Whether ``kept`` and the checkpoint copy beside it are what an interrupted
    :func:`_keep_finished` of this run wrote (so finishing it again is safe): the kept record is
    metrics.json but for its checkpoint, and the copy has the bytes of the selected checkpoint."""
    metrics = json.loads((out / "metrics.json").read_text())
    if kept.exists():
        try:
            record = json.loads(kept.read_text())
        except (OSError, ValueError):
            return False
        if {k: v for k, v in record.items() if k != "checkpoint"} != \
                {k: v for k, v in metrics.items() if k != "checkpoint"}:
            return False
    copy = _kept_checkpoint(out, kept)
    return not copy.exists() or sha256_file(copy) == sha256_file(_selected_checkpoint(out, metrics))


def _keep_finished(out: Path, kept: Path) -> None:
    """Set a finished run's record aside before it trains longer: its selected checkpoint is
    copied to :func:`_kept_checkpoint` (the longer run replaces ``best.ckpt``), its diagnosis
    files get the same ``.epochs<N>`` infix, then metrics.json is written to ``kept`` naming the
    copy (``checkpoint`` null, with ``checkpoint_note``, when the selected checkpoint is gone) and
    removed. Each write is atomic; a resume finishes an interrupted one (:func:`_leftover_keep`)."""
    metrics = json.loads((out / "metrics.json").read_text())
    best = _selected_checkpoint(out, metrics)
    tag = _kept_tag(kept)
    if best.is_file():
        copy = _kept_checkpoint(out, kept)
        # atomic_save: a full disk or a read-only folder is its one line naming the file (shutil's bare
        # "[Errno 27] File too large" left a partial temporary file; a review)
        atomic_save(copy, lambda tmp: shutil.copy2(best, tmp))
        metrics["checkpoint"] = _relative(copy, out)
    else:
        metrics["checkpoint"] = None
        metrics["checkpoint_note"] = f"{_relative(best, out)} was missing when this run was trained longer"
    for name in DIAGNOSIS_FILES:  # a diagnosis of the replaced model must not pass for the new one's
        if (out / name).is_file():
            stem, ext = name.split(".")
            os.replace(out / name, out / f"{stem}.{tag}.{ext}")
    atomic_write_json(kept, metrics)
    (out / "metrics.json").unlink()


def _keep_config(out: Path, cfg: Config, done: int) -> Optional[Path]:
    """Before a resume after ``done`` epochs rewrites config.yaml with ``cfg``: when ``cfg`` changes one of
    :data:`CHANGES_THE_NUMBERS`, keep the config.yaml those epochs ran with as ``config.epochs<done>.yaml``
    (beside ``metrics.epochs<N>.json``, the record a longer run keeps). Before, a resume on another number of
    devices rewrote config.yaml, and nothing in the folder said that the earlier epochs ran with another global
    batch (a review). One kept already (an earlier resume from the same epoch, stopped before it finished one)
    holds the config those epochs ran with, and stays. Returns the file written, if any."""
    kept = out / f"config.epochs{done}.yaml"
    if done == 0 or kept.exists() or not (out / "config.yaml").is_file():
        return None
    try:
        before = load_config(out / "config.yaml")
    except (ConfigError, OSError, TypeError, ValueError):  # _check_resume read it: not expected
        return None
    was, now = to_dict(before), to_dict(cfg)
    if all(was[s][k] == now[s][k] for s, k in (key.split(".") for key in CHANGES_THE_NUMBERS)):
        return None
    atomic_save(kept, lambda tmp: shutil.copy2(out / "config.yaml", tmp))
    return kept


def run_files(out: Path) -> List[str]:
    """The files of a run folder as POSIX paths relative to it, without the lock and the TensorBoard
    logger's folder (written from the first step when tensorboard is installed): what a resume or a
    comparison asks of a folder without ``last.ckpt``."""
    files = (p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return sorted(f for f in files if f != ".lock" and not f.startswith("tensorboard/"))


def _check_first_epoch_leftovers(out: Path) -> None:
    """A resume without ``last.ckpt`` trains from scratch in ``out``, so ``out`` must hold only what a
    run killed in its first epoch leaves: config.yaml, the lock (always: it is taken before config.yaml
    is written, so a user's folder with a config.yaml of its own is told apart), the TensorBoard
    logger's folder, and
    (killed between the epoch's writes) log.csv with one row and an epoch-0 best.ckpt, or a
    temporary file of an atomic write.
    Anything else (a comparison's folder, another run's checkpoint, the user's files) is refused:
    they would be overwritten."""
    allowed = {"config.yaml", "log.csv", "checkpoints/best.ckpt"}
    other = [f for f in run_files(out) if f not in allowed and not f.endswith(".tmp")]
    why = f"it holds {other[0]}" if other else None
    if why is None and (out / "log.csv").is_file() and len((out / "log.csv").read_text().splitlines()) > 2:
        why = "its log.csv has more than one epoch"
    if why is None and not (out / ".lock").is_file():  # every run takes it before it writes config.yaml
        why = "it has no .lock, which a run writes before its config.yaml: that config.yaml is not a run's"
    best = out / "checkpoints" / "best.ckpt"
    if why is None and best.is_file() and int(safe_load_checkpoint(best, mmap=True).get("epoch", 0)) > 0:
        why = "its checkpoints/best.ckpt is from a later epoch than the first"
    if why:
        raise RunDirError(f"{out} has no checkpoints/last.ckpt, and it is not a run interrupted in its first epoch "
                          f"({why}): --resume would train from scratch over it; pass a new --out (nothing was "
                          "changed)")


def _check_resume(cfg: Config, out: Path, module: Optional[L.LightningModule] = None,
                  bundle: Optional[DataBundle] = None, recorded: Optional[str] = None
                  ) -> Tuple[Optional[Path], Optional[Path], int]:
    """``(checkpoint, keep, done)`` for a resume of ``out``: the checkpoint it continues from (None: no
    epoch finished yet, so the run starts again from its first epoch in the same folder), for a
    finished run that trains longer, where its previous metrics.json is to be kept
    (``metrics.epochs<N>.json``; the caller renames it once the trainer is built), and the number
    of epochs already trained (the index of the next epoch). Checks, writing
    nothing, that ``cfg`` differs from the run's config.yaml only in :data:`RESUMABLE` settings and
    that there is something left to train, and that ``bundle`` (``cfg``'s data, where given) loaded as the
    dataset the run was trained as (``recorded``: :func:`trained_dataset` of ``out``, its config.yaml's or,
    for one that left it to the path, its metrics.json's)."""
    # an older run interrupted before metrics.json records none: --set data.options.dataset= names it, and
    # its log.csv's protocol is checked against the data's below
    given = cfg.data.options.get("dataset")
    trained_as = recorded or (given if isinstance(given, str) else None)
    diff = config_difference(out / "config.yaml", cfg, _resumable_view, trained_as)
    if diff:
        raise ConfigError(f"{out} was trained with another configuration ({diff}); a resume may change only "
                          f"{', '.join(RESUMABLE)} and where the data lies (data.path, *_path / *_root "
                          "options, model.pretrained_path): pass a new --out to train this configuration")
    if bundle is not None:
        check_trained_as(out, trained_as, cfg, bundle)
        if recorded is None:
            check_logged_protocol(out, cfg, bundle)
    last = out / "checkpoints" / "last.ckpt"
    metrics = out / "metrics.json"
    if not last.is_file():
        if metrics.is_file():  # a finished run whose last.ckpt is gone: training again would overwrite it
            raise RunDirError(f"{out} holds a finished run (metrics.json) but no checkpoints/last.ckpt to continue "
                              "from; pass a new --out to train again (nothing was changed)")
        _check_first_epoch_leftovers(out)
        return None, None, 0
    state = safe_load_checkpoint(last)
    saved = (state.get("hyper_parameters") or {}).get("config")
    if saved is not None:  # config.yaml may have been edited since: the checkpoint's own config decides
        try:
            trained = from_dict(saved)
        except (ConfigError, TypeError, ValueError) as e:
            raise ConfigError(f"{last}: its saved configuration is not one this version reads ({e}); "
                              "pass a new --out (nothing was changed)") from e
        diff = first_difference(*map(_resumable_view, as_trained(trained, cfg, trained_as)))
        if diff:
            raise ConfigError(f"{last} was trained with another configuration than {out / 'config.yaml'} and "
                              f"--set now give ({diff}); a resume may change only {', '.join(RESUMABLE)}: "
                              "restore config.yaml or pass a new --out (nothing was changed)")
    pase_state = state.get("pase_state") or {}
    saved_order = pase_state.get("data_order")
    if pase_state and saved_order != DATA_ORDER and _rank() == 0:
        # the record came after the data-order fix (7f4e1ae): a checkpoint without it may come from either side
        if saved_order is None:
            log.warning("%s records no data order: it was saved by a pase older than this record. A run started "
                        "before commit 7f4e1ae shuffled epoch e with train.seed + e, and its resumed epochs are now "
                        "shuffled otherwise, so it will equal an uninterrupted run of neither version (retrain it in "
                        "a new --out for one that a version reproduces); a run started at or after 7f4e1ae resumes "
                        "exactly", last)
        else:
            log.warning("%s was saved with data order %s, this pase shuffles with order %s: the resumed epochs are "
                        "shuffled otherwise, so the run will equal an uninterrupted run of neither version; retrain "
                        "it in a new --out for one that a version reproduces", last, saved_order, DATA_ORDER)
    if module is not None:
        why = fingerprint_difference(pase_state.get("data"), module.data_fingerprint)
        if why:
            raise ConfigError(f"{last} was trained on other data than {cfg.data.path or cfg.data.source} gives now "
                              f"({why}); point {data_location_keys(cfg)} at the run's data, or pass a new --out "
                              "to train on "
                              f"this data (nothing was changed){READ_CHANGED}")
        module.elapsed_before = float(pase_state.get("elapsed_s") or 0.0)
        if pase_state.get("pretrained_fingerprint") is not None:  # the model the run started from, wherever it lies now
            module.pretrained_fingerprint = pase_state["pretrained_fingerprint"]
        try:  # the same model (data widths, modalities): checked before metrics.json is set aside
            module.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            folder = (f" or model.pretrained_path ({cfg.model.pretrained_path}) now holds another model than the "
                      "run was trained from" if cfg.model.pretrained_path else "")
            raise ConfigError(f"{last} does not fit the model this configuration builds from its data ({first}); "
                              f"has the data changed{folder}? (nothing was changed)") from e
    done = int(state.get("epoch", -1)) + 1  # last.ckpt is saved at the end of an epoch
    best = out / "checkpoints" / "best.ckpt"
    if cfg.train.max_epochs <= done and not metrics.is_file() and best.is_file():
        # best.ckpt is written before last.ckpt: killed between the two, best.ckpt is one epoch ahead; a
        # resume that trains nothing more then tested that epoch's model as this shorter run's (a review)
        try:
            ahead = int(safe_load_checkpoint(best, mmap=True).get("epoch", -1)) + 1
        except Exception:  # noqa: BLE001 - an unreadable best.ckpt: the final test names it
            ahead = done
        if ahead > done:
            raise ConfigError(f"{best} is of epoch {ahead}, after {last}'s {done} (the run was stopped between the two "
                              f"writes): pass train.max_epochs of at least {ahead} to "
                              "train that epoch again (nothing was changed)")
    if cfg.train.max_epochs < done:
        raise ConfigError(f"train.max_epochs={cfg.train.max_epochs}, but {out} has already trained {done} epochs; "
                          f"pass train.max_epochs of at least {done}")
    stopped = any(k.startswith("ResumableEarlyStopping") and isinstance(v, dict)
                  and early_stopped(v, cfg.train.early_stop_patience)
                  for k, v in (state.get("callbacks") or {}).items())
    if metrics.is_file():
        if stopped or cfg.train.max_epochs == done:
            why = (f"early stopping ended it after {cfg.train.early_stop_patience} epochs without improvement; "
                   "raise train.early_stop_patience (and train.max_epochs if needed) with --set to train longer"
                   if stopped else
                   f"train.max_epochs={done} is reached; raise it with --set to train longer")
            raise RunDirError(f"{out} is a finished run ({done} epochs; {why}): nothing to resume "
                              "(nothing was changed)")
        kept = out / f"metrics.epochs{done}.json"
        there = [p for p in (kept, _kept_checkpoint(out, kept)) if p.exists()]
        if there and not _leftover_keep(out, kept):
            raise RunDirError(f"{there[0]} exists; move it aside to train {out} longer (nothing was changed)")
        return last, kept, done
    return last, None, done


def train(cfg: Config, out_dir: str | Path, resume: bool = False, quiet: bool = False,
          bundle: Optional[DataBundle] = None) -> Dict[str, Any]:
    """Train ``cfg`` into ``out_dir``; returns the content of ``metrics.json``. ``bundle``: the
    data of ``cfg`` (``load_bundle(cfg)``) when the caller has loaded it already (``pase compare``
    trains and then diagnoses each run on one load); by default loaded here.

    With ``resume`` the run continues from ``out_dir/checkpoints/last.ckpt``: model, optimiser,
    method buffers (prototype banks, SGM state), random states, callback states, the best value
    so far and the rows of ``log.csv`` come from the checkpoint.

    Raises:
        RunDirError: ``out_dir`` holds files and ``resume`` is False, or another process is
            writing it (nothing is overwritten).
        NonFiniteError: a loss, gradient or weight became NaN / inf (the last checkpoint is kept).
    """
    held: list = []  # the run folder's lock, taken at the first write and released here
    # Lightning expands a `~` in its folders and pase's own writes did not: train(cfg, "~/x") put the
    # checkpoints under $HOME and the rest in ./~/x (a review); expanded once here, as the CLI does
    try:
        return _train(cfg, user_path(out_dir), resume, quiet, held, bundle)
    finally:
        for fd in held:
            os.close(fd)  # closing the descriptor releases its lock


def lock_run(out: Path) -> Optional[int]:
    """An exclusive lock on ``out/.lock`` (the descriptor; None where ``fcntl`` is missing).
    Raises RunDirError when another process holds it. Released when the descriptor is closed or
    the process ends, so a killed run leaves no stale lock."""
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)  # the file marks a run's folder everywhere
    if not can_lock():  # Windows: the file, no lock
        os.close(fd)
        return None
    busy = RunDirError(f"another process is writing {out} (it holds {out / '.lock'}); wait for it to end, or "
                       "pass a new --out (nothing was changed)")
    if not try_lock(fd, out / ".lock", f"the run goes on unlocked: do not write to {out} from another process "
                                       "while it runs", busy):
        return None  # a filesystem without locks: no other process
    return fd


def _train(cfg: Config, out: Path, resume: bool, quiet: bool, held: list,
           bundle: Optional[DataBundle] = None) -> Dict[str, Any]:
    writer = _rank() == 0  # DDP workers of rank > 0 re-run this function in their own process
    if writer:
        _check_out(out, resume)
    t0 = time.time()
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    try:
        bundle = bundle if bundle is not None else load_bundle(cfg)
    except FileNotFoundError as e:
        try:
            run_cfg = load_config(out / "config.yaml") if resume else None
        except (ConfigError, OSError, TypeError, ValueError):  # the resume's own check names it
            run_cfg = None
        if run_cfg is None:
            raise
        raise missing_run_data(e, str(out), run_cfg, cfg) from None
    given = cfg
    recorded = trained_dataset(out) if resume else None  # the dataset the run was trained as, where it records one
    if not resume or recorded is not None:
        # saved with the run: moved data is read as the same dataset. Not over an older run that records none
        # (config.yaml, metrics.json): a path that names another dataset would become its dataset (a review)
        cfg = _with_resolved_dataset(cfg, bundle)
    why = schedule_warning(cfg, bundle.modalities)  # after the load: one modality never trains phase 2 anyway
    if why and writer:
        log.warning(why)
    if cfg.method == "ogm_ge":  # before anything is written (at training, so old checkpoints still load)
        try:
            check_ogm_modalities(bundle.modalities)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    train_dl, valid_dl, test_dl = _loaders(cfg, bundle)
    if writer and len(train_dl) == 1 and len(bundle.splits["train"]) > 1:
        log.warning(f"train.batch_size={cfg.train.batch_size} holds the whole training split "
                    f"({len(bundle.splits['train'])} samples): every epoch is one optimiser step; a smaller "
                    "batch size trains more per epoch")
    # Lightning loads a resumed run's checkpoint before its precision plugin converts the module:
    # converted first (as load_checkpoint does), float64 weights and buffers are not rounded on the way
    module = precision_plugin(cfg.train.precision, token_inputs(cfg)).convert_module(_build(cfg, bundle))
    module.data_fingerprint, module.started = fingerprint(bundle), t0  # saved in every checkpoint
    encoders = getattr(module.model, "encoders", {})
    if cfg.model.pretrained_path and any(hasattr(e, "config_dict") for e in encoders.values()):
        from ..models.bert import pretrained_fingerprint

        module.pretrained_fingerprint = pretrained_fingerprint(cfg.model.pretrained_path)  # a resume keeps its own
    start, keep, done = _check_resume(given, out, module, bundle, recorded) if resume else (None, None, 0)
    checked = _folder_state(out) if resume else None  # what the resume checks saw
    set_loader_epoch(train_dl, done)  # the resumed epoch's order, whenever its iterator is created
    ckpt_dir = out / "checkpoints"
    protocol = get_protocol(bundle.task.protocol)
    monitor = f"valid/{module.monitor}"
    mode = protocol.mode(module.monitor)
    # both save at the end of the training epoch, after EpochCSVLog has added the epoch's row;
    # last.ckpt is its own callback because save_last=True only saves when best.ckpt does
    ckpt = RelocatableCheckpoint(
        dirpath=str(ckpt_dir), filename="best", monitor=monitor, mode=mode, save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False, save_on_train_epoch_end=True)
    last = RelocatableCheckpoint(
        dirpath=str(ckpt_dir), filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
        enable_version_counter=False, save_on_train_epoch_end=True)
    stop = ResumableEarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.early_stop_patience,
                                  check_finite=False)
    interrupt = InterruptRecorder()
    callbacks = [ckpt, last, stop, NonFiniteGuard(ckpt_dir), EpochCSVLog(out / "log.csv"), interrupt]  # guard first
    trainer = _trainer(cfg, out, callbacks, quiet)  # checks accelerator, devices and strategy
    _check_shards(cfg, trainer, {"train": train_dl, "valid": valid_dl, "test": test_dl})  # before anything is written
    if writer:  # the first write of the run, after every check
        out.mkdir(parents=True, exist_ok=True)
        try:
            fd = lock_run(out)
        except OSError as e:  # not writable, though os.access said it was (check_run_folder): one line all the same
            if isinstance(e, RunDirError) or e.errno not in NOT_WRITABLE:
                raise
            if e.errno != errno.EROFS and os.access(out, os.W_OK | os.X_OK):  # the folder is; its lock file is not
                raise RunDirError(f"{out / '.lock'}: the run's lock file cannot be opened for writing ({e.strerror}; "
                                  "another user's, or made immutable?): remove it or give this user write access "
                                  "to it (nothing was changed)") from None
            raise RunDirError(_not_writable(out, resume, e.strerror or "")) from None
        if fd is not None:
            held.append(fd)
        if not resume:
            _check_out(out, resume)  # again under the lock: another process may have got there first
            _clean_partial_writes(out)  # a killed run's, which _check_out let pass; no other write in flight
        elif _folder_state(out) != checked:  # another process wrote it after the checks
            raise RunDirError(f"{out} changed while this resume was starting (another process trained it); run "
                              "the resume again (nothing was changed)")
        else:
            _clean_partial_writes(out)  # under the lock: no other process's write in flight
        if keep is not None:
            _keep_finished(out, keep)
        if resume:
            _keep_config(out, cfg, done)
        save_config(cfg, out / "config.yaml")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming into its own folder
        # every checkpoint load below goes through SafeCheckpointIO: weights-only. Lightning handles
        # SIGTERM inside each trainer call; between them the caller's handler (pase's: an interrupt)
        where = None  # during fit: the epoch

        def stopped(where: Optional[str]) -> Tuple[str, str]:
            """Where training stopped and what it kept, for an interruption's line or a DDP error's advice."""
            if where is None:  # during fit: where in its epochs
                return _where_fit_stopped(trainer, ckpt_dir / "last.ckpt")
            return where, ("the checkpoint of the last finished epoch is kept" if (ckpt_dir / "last.ckpt").is_file()
                           else "no epoch had finished")

        try:
            with _lightning_handles_sigterm(trainer):
                trainer.fit(module, train_dl, valid_dl, ckpt_path=str(start) if start else None)
            where = "during the final evaluation"
            final_state = module.method.summary()  # before the best checkpoint is reloaded
            best = ckpt.best_model_path or str(ckpt_dir / "last.ckpt")
            with _lightning_handles_sigterm(trainer):
                trainer.validate(module, valid_dl, ckpt_path=best, verbose=False)
            selected_state = module.method.summary()  # the selected checkpoint's (its buffers are loaded)
            valid = dict(module.results["valid"])
            with _lightning_handles_sigterm(trainer):
                trainer.test(module, test_dl, ckpt_path=best, verbose=False)
            test = dict(module.results["test"])
        except (KeyboardInterrupt, SystemExit) as e:
            sig = (e.signal if isinstance(e, RunInterrupted) else
                   interrupt.signal or ("SIGINT" if isinstance(e, KeyboardInterrupt) else None))
            if sig is None:
                raise
            where, kept = stopped(where)
            raise RunInterrupted(f"training interrupted by {sig} {where}; {kept}", sig,
                                 f"continue with pase train --resume {out}") from None
        except Exception as e:  # noqa: BLE001 - re-raised, with advice
            if trainer.world_size > 1:  # one process's error stops every rank: what is kept, how to continue
                kept = stopped(where)[1]
                with contextlib.suppress(AttributeError, TypeError):  # an exception type without attributes
                    setattr(e, RESUME_ADVICE, f"{kept}; continue with pase train --resume {out}")
            raise
    best_epoch = _best_epoch(out / "log.csv", monitor, mode)
    selection = None  # recorded only when nothing was selected: absent, the checkpoint is validation-selected
    if best_epoch is None:  # no finite monitor value: the checkpoint saved (Lightning's first epoch) says
        selection = f"none: {monitor} never finite"
        if Path(best).is_file():
            best_epoch = int(safe_load_checkpoint(best, mmap=True).get("epoch", 0))
        if writer:  # the run line, summary.md and crossval said "selected on valid/..." of an epoch nothing chose
            log.warning(f"{monitor} was not finite in any of the {trainer.current_epoch} epochs: no validation "
                        f"selection; the valid and test metrics are those of the checkpoint kept "
                        f"({_relative(Path(best), out)}, epoch {best_epoch}), which nothing selected "
                        f"(metrics.json: \"selection\": \"{selection}\")")
    result = {
        "dataset": bundle.name, "protocol": bundle.task.protocol, "protocol_description": protocol.description,
        "method": cfg.method, "seed": cfg.train.seed, "monitor": module.monitor,
        "best_epoch": best_epoch, "epochs_run": trainer.current_epoch,
        **({"selection": selection} if selection else {}),
        "valid": valid, "test": test, "data_info": _jsonable(bundle.info),
        "diagnostics": _as_trained(final_state, trainer.current_epoch),
        "diagnostics_selected": _as_trained(selected_state, None if best_epoch is None else best_epoch + 1),
        # every process's time up to the last checkpoint it saved, and this process's whole time
        "elapsed_s": round(module.elapsed_before + time.time() - t0, 3),
        "pase_version": __version__, "code_sha256": code_fingerprint(),
        # what ran, which may differ from what was asked (on a CPU Lightning runs 16-mixed as bf16-mixed)
        "precision_effective": str(trainer.precision), "accelerator_effective": type(trainer.accelerator).__name__,
        "checkpoint": _relative(Path(best), out),
        # the data it was trained on (pase compare refuses to average runs of other data into one row)
        "data_fingerprint": _jsonable(module.data_fingerprint),
        # a pretrained encoder's folder it started from (pase compare never averages seeds of two models)
        **({"pretrained_fingerprint": module.pretrained_fingerprint} if module.pretrained_fingerprint else {}),
    }
    if writer:
        atomic_write_json(out / "metrics.json", result)
    return result


def _where_fit_stopped(trainer: L.Trainer, last: Path) -> Tuple[str, str]:
    """Where an interrupted ``fit`` stopped and what it kept, for the interruption line: in an epoch, at its
    end (its log.csv row written, its checkpoint maybe not), or after it. ``trainer.current_epoch`` counts
    finished epochs, so a stop between epochs (Lightning raises SIGTERM there) said "in epoch 3" of a
    3-epoch run (epochs 0 to 2), and a stop after epoch 0's row but before its checkpoint said "no epoch had
    finished" (a review)."""
    progress = trainer.fit_loop.epoch_progress.current
    k = progress.completed  # the epoch under way, or the next one
    if last.is_file():
        kept = "the checkpoint of the last finished epoch is kept"
    else:
        kept = "no epoch had finished" if progress.processed <= k else "no checkpoint had been saved yet"
    if progress.processed > k:  # trained and validated; its end-of-epoch writes (log.csv, checkpoints) under way
        try:
            saved = last.is_file() and int(safe_load_checkpoint(last, mmap=True).get("epoch", -1)) == k
        except (OSError, ValueError, TypeError):
            saved = False
        return f"at the end of epoch {k}, {'after' if saved else 'before'} its checkpoint was saved", kept
    if progress.started > k or k == 0:
        return f"in epoch {k}", kept
    if k >= (trainer.max_epochs or 0) > 0 or trainer.should_stop:
        return f"after epoch {k - 1} (the last) finished, before the final evaluation", kept
    return f"after epoch {k - 1} finished, before epoch {k} started", kept


def _as_trained(state: Any, epochs: Optional[int]) -> Any:
    """A method state as the model of ``epochs`` trained epochs was trained: PaSE decides its switch
    in the validation of the epoch before the first SGM epoch, so a checkpoint of that epoch (the
    last one, or the selected one) holds phase 2 and that switch epoch though no SGM epoch trained
    it. Here ``phase`` is that of its last trained epoch, ``sgm_epochs`` how many used SGM, and
    ``switch_epoch`` the first of them (-1: none)."""
    if not isinstance(state, dict) or epochs is None or not {"phase", "switch_epoch"} <= set(state):
        return state
    first = int(state["switch_epoch"])
    sgm = max(0, epochs - first) if first >= 0 else 0
    return dict(state, phase=2 if sgm else 1, switch_epoch=first if sgm else -1, sgm_epochs=sgm)


def _relative(path: Path, out: Path) -> str:
    """``path`` relative to the run folder ``out`` when inside it (Lightning's paths are absolute,
    ``out`` may be relative), so a moved or copied run folder names its own checkpoint."""
    full, root = path.resolve(), out.resolve()
    return str(full.relative_to(root)) if full.is_relative_to(root) else str(path)


@contextlib.contextmanager
def _lightning_handles_sigterm(trainer: L.Trainer):
    """One trainer call (fit, validate, test) with Lightning's SIGTERM handling alone.

    Lightning's handler stops at the next step (then ``InterruptRecorder``), composed with any
    handler already set; the ``pase`` command sets its own, which raises at once
    (``cli._raise_on_sigterm``), so the default is put back for the call and the caller's restored
    after it, for the time between calls. Lightning's evaluation loop lets a SIGTERM at its last
    batch pass (the call returns normally): that one stops the run here."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
    if trainer.received_sigterm:
        raise RunInterrupted("stopped by SIGTERM", "SIGTERM")


def _best_epoch(log_csv: Path, key: str, mode: str) -> Optional[int]:
    if not log_csv.is_file():
        return None
    with open(log_csv, newline="") as fh:
        # a NaN monitor never wins (Lightning's ModelCheckpoint counts it as the worst value)
        rows = [r for r in csv.DictReader(fh) if r.get(key) and math.isfinite(float(r[key]))]
    if not rows:
        return None
    pick = max if mode == "max" else min
    return int(float(pick(rows, key=lambda r: float(r[key]))["epoch"]))


def no_selection(metrics: Dict[str, Any]) -> Optional[str]:
    """Why a run's checkpoint was not chosen on the validation split (metrics.json's ``selection``:
    "none: valid/<monitor> never finite", the checkpoint kept being that of ``best_epoch``), or None:
    it was. Files written before this record have no ``selection``, and were validation-selected."""
    note = metrics.get("selection") if isinstance(metrics, dict) else None
    return note if isinstance(note, str) and note.startswith("none") else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _what_predicts(cfg: Config) -> Dict[str, Any]:
    """The settings a trained model's predictions depend on (``_check_evaluation_config``): the
    method, the model, the data except where its files lie, and the precision."""
    d = without_locations(to_dict(cfg))
    return {"method": d["method"], "data": d["data"], "model": d["model"], "pase": d["pase"],
            "baselines": d["baselines"], "train.precision": d["train"]["precision"]}


def _check_evaluation_config(path: str | Path, saved: Config, cfg: Config, via_set: bool = False,
                             trained: Optional[str] = None) -> None:
    """A configuration given to evaluate a checkpoint (``--config``, or ``--set`` on its own) may move the data (``data.path``,
    a loader's ``*_path`` / ``*_root`` options) and change how evaluation runs, not what the model
    sees or is: other data settings (standardisation, sizes, modalities), the model or the method
    would score the weights on other inputs, silently (a run trained with standardised features
    scored MAE 1.0051 instead of its 0.8515 under a config without ``data.standardize``). The dataset is
    the one it was trained as (:func:`~pase.config.as_trained`; ``trained``: where its config does not name it)."""
    saved, cfg = as_trained(saved, cfg, trained)
    # the method and the data source first: a config for another dataset differs in many keys, and
    # the sorted first of them (data.options.dims) would hide the one that says so
    diff = (first_difference({"method": saved.method, "data.source": saved.data.source},
                             {"method": cfg.method, "data.source": cfg.data.source})
            or first_difference(_what_predicts(saved), _what_predicts(cfg)))
    if diff:
        given = "--set" if via_set else "--config"
        raise ConfigError(f"{path}: the given {given} changes what the checkpoint was trained with ({diff}); "
                          "drop --config to use the checkpoint's own, and --set only what moved (for example "
                          "--set data.path=NEW/PLACE) or the evaluation batch size (train.batch_size; evaluate, "
                          "predict and diagnose run on the CPU)")


def load_checkpoint(path: str | Path, cfg: Optional[Config] = None, bundle: Optional[DataBundle] = None,
                    overrides: Sequence[str] = (), same_data: bool = False):
    """Rebuild the model of a checkpoint (weights-only loading). Returns (module, cfg, bundle).

    ``cfg``: the configuration to rebuild it with (default: the checkpoint's own), ``overrides``
    ``key=value`` changes applied to the checkpoint's own (for example a moved ``data.path``).
    ``same_data``: refuse data other than the checkpoint was trained on (its fingerprint; a
    checkpoint without one is not checked), as for a run's own diagnosis; evaluating a model on
    other data is otherwise allowed. A leading ``~`` in ``path`` is the home folder, as on the CLI."""
    path = user_path(path)  # the messages below name the file read
    state = safe_load_checkpoint(path)
    saved = ((state.get("hyper_parameters") if isinstance(state, dict) else None) or {}).get("config")
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: not a pase checkpoint (no hyper_parameters.config: written by another program?); "
                          "pass a .ckpt from a pase run's checkpoints/, for example checkpoints/best.ckpt")
    saved = from_dict(saved)
    # the dataset it was trained as: its config's, or a run's metrics.json's where the config left it to the path
    trained = (trained_dataset(path.parent.parent, saved) if path.parent.name == "checkpoints" else
               saved.data.options.get("dataset"))  # a checkpoint outside a run folder: no metrics.json of its own
    own = cfg is None  # the checkpoint's configuration, with --set changes
    if own:
        cfg = apply_overrides(saved, overrides)
        _check_evaluation_config(path, saved, cfg, via_set=True, trained=trained)  # --set data.standardize=false
    else:
        _check_evaluation_config(path, saved, cfg, trained=trained)
    try:
        bundle = bundle or load_bundle(cfg)
    except FileNotFoundError as e:
        if not own:
            raise
        raise missing_run_data(e, str(path), saved, cfg) from None
    check_trained_as(path, trained, cfg, bundle)
    saved_data = (state.get("pase_state") or {}).get("data")
    why = fingerprint_difference(saved_data, fingerprint(bundle)) if same_data else None
    if why:
        raise ValueError(f"{path} was trained on other data than {cfg.data.path or cfg.data.source} gives now "
                         f"({why}); point {data_location_keys(cfg)} at the run's data{READ_CHANGED}")
    warn_path_names_another(path, trained, bundle, saved_data)
    plugin = precision_plugin(cfg.train.precision, token_inputs(cfg))
    # a transformer encoder's position table as trained (its length was the training data's longest
    # sequence): other data, with shorter or longer sequences, is scored by the same model
    steps = {k.split(".")[2]: int(v.shape[1]) for k, v in state["state_dict"].items()
             if k.startswith("model.encoders.") and k.endswith(".pos") and k.count(".") == 3}
    # a pretrained encoder (BERT) is built from the model config kept in the checkpoint: its folder is not
    # needed to score the trained weights (checkpoints written before it was kept read the folder)
    pretrained = (state.get("pase_state") or {}).get("pretrained")
    module = plugin.convert_module(_build(cfg, bundle, steps, pretrained))  # before the weights: float64 ones stay exact
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3])
        folder = (f"; or model.pretrained_path ({cfg.model.pretrained_path}) now holds another model than it was "
                  "trained from" if cfg.model.pretrained_path and not pretrained else "")
        raise ValueError(f"{path}: its weights do not fit the model of this configuration ({detail[:300]}); "
                         f"evaluate it with the configuration it was trained with (drop --config / --set){folder}"
                         ) from None
    module.eval()
    set_inference_precision(module.model, plugin)  # evaluation loops run it as its test loop did
    return module, cfg, bundle


@torch.no_grad()
def _outputs(module: PaseModule, bundle: DataBundle, cfg: Config, split: str,
             prepare: Optional[Callable[[Any], Any]] = None, row_order: bool = True):
    """Ids, logits (host, float32) and targets of ``split`` in the split's row order (``pase
    predict``'s CSV order), or with ``row_order=False`` in the loader's batch order (the training
    loop's test order: context models batch whole videos, and Pearson's r summed in another order can
    differ in its last digit). ``prepare`` maps each loaded batch to the model's input (for example a
    device transfer and precision cast); targets are taken from the loaded batch."""
    loader = make_loader(bundle, split, cfg.train.batch_size, False, 0, by_group=cfg.model.context)
    ids, logits, targets = [], [], []
    with inference(module.model) as convert:
        for batch in loader:
            out = module.model(prepare(batch) if prepare is not None else convert(batch))
            ids += batch.ids
            logits.append(out.logits.float().cpu())
            targets.append(batch.target)
    if not row_order:
        return ids, torch.cat(logits), torch.cat(targets)
    # the split's own row order, whatever the batching (context models batch whole videos)
    row = {sid: i for i, sid in enumerate(bundle.splits[split].ids)}
    order = torch.tensor(sorted(range(len(ids)), key=lambda k: row[ids[k]]), dtype=torch.long)
    return [ids[k] for k in order.tolist()], torch.cat(logits)[order], torch.cat(targets)[order]


def check_split(bundle: DataBundle, split: str) -> None:
    """KeyError naming ``split`` and the splits the data has, unless it has that split."""
    if split not in bundle.splits:
        raise KeyError(f"split {split!r} not in the data; valid: {', '.join(bundle.splits)}")


class Evaluation(dict):
    """split -> metrics, naming what they were computed under: ``.protocol`` (the metric
    protocol of the data) and ``.dataset``."""

    def __init__(self, protocol: str, dataset: str) -> None:
        super().__init__()
        self.protocol, self.dataset = protocol, dataset


def evaluate(checkpoint: str | Path, cfg: Optional[Config] = None,
             splits: Sequence[str] = ("valid", "test"), overrides: Sequence[str] = ()) -> Evaluation:
    """Re-evaluate a saved model: split -> metrics (an :class:`Evaluation`, a dict that names the
    protocol of the checkpoint's data); ``overrides`` change the checkpoint's own configuration
    (see :func:`load_checkpoint`). A leading ``~`` in ``checkpoint`` is the home folder."""
    module, cfg, bundle = load_checkpoint(checkpoint, cfg, overrides=overrides)
    for s in splits:
        check_split(bundle, s)
    result = Evaluation(bundle.task.protocol, bundle.name)
    for s in splits:
        # scored in the training loop's batch order, so that the metrics equal metrics.json to the last digit
        _, logits, target = _outputs(module, bundle, cfg, s, row_order=False)
        acc = MetricAccumulator(bundle.task.protocol)
        acc.update(logits, target)
        result[s] = acc.compute()
    return result


def predict(checkpoint: str | Path, output: str | Path, cfg: Optional[Config] = None, split: str = "test",
            overrides: Sequence[str] = ()) -> int:
    """Write one CSV row per sample of ``split`` in the split's row order (id, prediction(s), label); returns the row count.

    A leading ``~`` in ``checkpoint`` or ``output`` is the home folder, as on the CLI (``output`` was
    written into a folder named ``~`` under the working directory: a review)."""
    output = user_path(output)
    if output.exists():
        raise RunDirError(f"{output} exists; choose another --output (nothing was overwritten)")
    parent = next(p for p in output.absolute().parents if p.exists())  # checked before the model is loaded
    if not parent.is_dir():
        raise RunDirError(f"--output {output}: {parent} is a file, not a folder; choose another --output "
                          "(nothing was overwritten)")
    module, cfg, bundle = load_checkpoint(checkpoint, cfg, overrides=overrides)
    check_split(bundle, split)
    ids, logits, target = _outputs(module, bundle, cfg, split)
    buf = io.StringIO()
    w = csv.writer(buf)
    kind = bundle.task.kind
    if kind == "regression":
        w.writerow(["id", "prediction", "label"])
        rows = zip(ids, logits[:, 0].tolist(), target.tolist())
        # repr: the shortest text that reads back as the same number (float32 values exactly), so metrics
        # recomputed from the file equal metrics.json's; "%.6f" wrote -3e-7 as "-0.000000", a sign lost (a review)
        w.writerows([i, repr(p), repr(t)] for i, p, t in rows)
    elif kind == "classification":
        w.writerow(["id", "prediction", "label"] + [f"logit_{k}" for k in range(logits.shape[1])])
        for i, z, t in zip(ids, logits.tolist(), target.tolist()):
            w.writerow([i, int(torch.tensor(z).argmax()), t] + [repr(v) for v in z])
    else:
        names = bundle.task.class_names or tuple(str(k) for k in range(logits.shape[1]))
        w.writerow(["id"] + [f"pred_{n}" for n in names] + [f"label_{n}" for n in names])
        for i, z, t in zip(ids, logits.tolist(), target.tolist()):
            w.writerow([i] + [int(v > 0) for v in z] + [int(v) for v in t])
    atomic_write_text(output, buf.getvalue())
    return len(ids)
