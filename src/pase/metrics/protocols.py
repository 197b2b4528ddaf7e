"""Named metric protocols: which metrics score a task, which one selects checkpoints, and which way.

Every result the toolkit writes names its protocol (PASE_SPEC section 6). A ``Protocol`` bundles
the functional ``compute`` with its metadata, so that the training code reads the checkpoint
``mode`` from ``higher_is_better`` instead of typing "min"/"max" by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from pase.registry import unknown_name_message

from .functional import (
    IEMOCAP_EMOTIONS,
    TASK_KINDS,
    ArrayLike,
    iemocap_mult_metrics,
    mosi_metrics,
    multiclass_metrics,
    sims_metrics,
)

__all__ = ["Protocol", "PROTOCOLS", "get_protocol", "compute_metrics"]


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes:
        name: registry key, recorded with every result ("mosi", "sims", ...).
        task_kind: "regression", "classification" or "multilabel" (as ``pase.data.TaskSpec.kind``).
        compute: ``fn(outputs, target) -> Dict[str, float]``, a function of ``pase.metrics.functional``.
        monitor: the default validation metric for checkpoint selection and early stopping.
        higher_is_better: metric name -> True if larger is better; its keys are exactly the
            names ``compute`` returns, in order.
        description: one line naming the source of the definitions.
    """

    name: str
    task_kind: str
    compute: Callable[[ArrayLike, ArrayLike], Dict[str, float]] = field(repr=False)
    monitor: str
    higher_is_better: Dict[str, bool] = field(hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        if self.task_kind not in TASK_KINDS:
            raise ValueError(f"Protocol {self.name!r}: task_kind={self.task_kind!r} is not one of {TASK_KINDS}")
        if self.monitor not in self.higher_is_better:
            raise ValueError(unknown_name_message(f"monitor metric of protocol {self.name!r}:", self.monitor,
                                                  list(self.higher_is_better)))

    @property
    def metric_names(self) -> Tuple[str, ...]:
        """The names ``compute`` returns, in order."""
        return tuple(self.higher_is_better)

    def mode(self, metric: Optional[str] = None) -> str:
        """"max" or "min" for ``metric`` (default: ``monitor``), for checkpointing and early stopping.

        >>> get_protocol("mosi").mode(), get_protocol("mosi").mode("Has0_acc_2")
        ('min', 'max')
        """
        metric = self.monitor if metric is None else metric
        if metric not in self.higher_is_better:
            kind = f"metric of protocol {self.name!r}:"
            raise KeyError(unknown_name_message(kind, metric, list(self.higher_is_better)))
        return "max" if self.higher_is_better[metric] else "min"


def _higher(names: Tuple[str, ...]) -> Dict[str, bool]:
    return {n: n != "MAE" for n in names}


_MOSI_NAMES = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")
_SIMS_NAMES = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")
_IEMOCAP_NAMES = tuple(f"{e}_{m}" for e in IEMOCAP_EMOTIONS for m in ("acc", "F1")) + ("Mean_acc", "Mean_F1")
_MULTICLASS_NAMES = ("WA", "UA", "WF1", "Macro_F1")

_MMSA = ("MMSA metricsTop regression (Has0/Non0 Acc-2 and weighted F1, Acc-5/Acc-7 on clipped "
         "scores rounded half to even, unclipped MAE, Pearson Corr)")

#: every protocol by name; ``get_protocol`` is the way in
PROTOCOLS: Dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("mosi", "regression", mosi_metrics, "MAE", _higher(_MOSI_NAMES), f"CMU-MOSI, {_MMSA}"),
        Protocol("mosei", "regression", mosi_metrics, "MAE", _higher(_MOSI_NAMES), f"CMU-MOSEI, {_MMSA}"),
        Protocol("sims", "regression", sims_metrics, "MAE", _higher(_SIMS_NAMES),
                 "CH-SIMS, MMSA metricsTop (clip to [-1, 1]; Acc-2/3/5 at 0, +-0.1, +-0.7; weighted F1; MAE, Corr)"),
        Protocol("iemocap_mult", "multilabel", iemocap_mult_metrics, "Mean_F1", _higher(_IEMOCAP_NAMES),
                 "IEMOCAP, MulT eval_iemocap (per emotion binary accuracy and weighted F1; logit > 0)"),
        Protocol("multiclass", "classification", multiclass_metrics, "WF1", _higher(_MULTICLASS_NAMES),
                 "single-label classification, GCNet protocol (WA accuracy, UA macro recall, WF1 weighted F1, "
                 "Macro_F1 macro F1)"),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (case-insensitive).

    Raises:
        KeyError: for an unknown name; the message lists the valid names and the closest match.

    >>> get_protocol("MOSI").monitor
    'MAE'
    """
    key = name.strip().lower()
    if key not in PROTOCOLS:
        raise KeyError(unknown_name_message("metric protocol", name, list(PROTOCOLS)))
    return PROTOCOLS[key]


def compute_metrics(protocol_name: str, outputs: ArrayLike, target: ArrayLike) -> Dict[str, float]:
    """Score ``outputs`` against ``target`` with the protocol called ``protocol_name``.

    >>> compute_metrics("multiclass", [[2.0, 0.0], [0.0, 1.0]], [0, 1])["WA"]
    1.0
    """
    return get_protocol(protocol_name).compute(outputs, target)
