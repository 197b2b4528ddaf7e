"""Metrics of ``pase``: the field's protocols as pure functions, a registry, and an accumulator.

Protocols (``PROTOCOLS``): "mosi", "mosei" (MMSA regression set), "sims" (MMSA CH-SIMS set),
"iemocap_mult" (MulT per-emotion binary), "multiclass" (GCNet WA / UA / WF1).
"""

from .functional import (
    IEMOCAP_EMOTIONS,
    check_inputs,
    iemocap_mult_metrics,
    mean_absolute_error,
    mosi_metrics,
    multiclass_metrics,
    pearson_corr,
    sims_metrics,
)
from .protocols import PROTOCOLS, Protocol, compute_metrics, get_protocol
from .stateful import MetricAccumulator

__all__ = [
    "IEMOCAP_EMOTIONS",
    "check_inputs",
    "iemocap_mult_metrics",
    "mean_absolute_error",
    "mosi_metrics",
    "multiclass_metrics",
    "pearson_corr",
    "sims_metrics",
    "PROTOCOLS",
    "Protocol",
    "compute_metrics",
    "get_protocol",
    "MetricAccumulator",
]
