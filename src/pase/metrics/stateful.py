"""``MetricAccumulator``: collect a split's outputs batch by batch, score them once.

The protocols' metrics (F1, Non0 selection, Pearson) are not means of per-batch values, so the
accumulator keeps the validated outputs and targets (host memory, numpy) and calls the
protocol's functional ``compute`` on their concatenation; the math lives only in
``pase.metrics.functional``. Use one instance per split. Instances pickle.
"""

from __future__ import annotations

from typing import Dict, List, Union

import numpy as np

from .functional import ArrayLike, check_inputs
from .protocols import Protocol, get_protocol

__all__ = ["MetricAccumulator"]


class MetricAccumulator:
    """Accumulates (outputs, target) pairs over batches for one protocol.

    Args:
        protocol: a protocol name ("mosi", "sims", "iemocap_mult", "multiclass", ...) or a
            ``Protocol``.

    >>> acc = MetricAccumulator("multiclass")
    >>> acc.update([[2.0, 0.0]], [0])
    >>> acc.update([[0.0, 1.0], [3.0, 1.0]], [1, 1])
    >>> len(acc), round(acc.compute()["WA"], 4)
    (3, 0.6667)
    """

    def __init__(self, protocol: Union[str, Protocol]) -> None:
        self.protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
        self._preds: List[np.ndarray] = []
        self._target: List[np.ndarray] = []

    @property
    def monitor(self) -> str:
        """The protocol's default validation metric."""
        return self.protocol.monitor

    @property
    def higher_is_better(self) -> Dict[str, bool]:
        return self.protocol.higher_is_better

    def update(self, outputs: ArrayLike, target: ArrayLike) -> None:
        """Validate one batch and keep a host copy of it.

        Args:
            outputs: the batch's model outputs, shaped as the protocol's ``task_kind`` requires
                (regression (B,) or (B, 1); classification (B, K); multilabel (B, E) or (B, E, 2)).
            target: the batch's targets ((B,) or (B, E)).

        Raises:
            ValueError: as ``check_inputs``, or when the trailing shape differs from earlier batches.
        """
        p, t = check_inputs(self.protocol.task_kind, outputs, target)
        if self._preds and p.shape[1:] != self._preds[0].shape[1:]:
            raise ValueError(
                f"outputs of this batch have shape {tuple(p.shape)} but earlier batches had "
                f"{('B',) + tuple(self._preds[0].shape[1:])}; call reset() between splits or tasks"
            )
        self._preds.append(np.array(p, copy=True))  # copy: the caller may reuse the tensor's memory
        self._target.append(np.array(t, copy=True))

    def compute(self) -> Dict[str, float]:
        """Score everything seen since the last ``reset()`` with the protocol's ``compute``.

        Raises:
            RuntimeError: when no batch has been added.
        """
        if not self._preds:
            raise RuntimeError(f"MetricAccumulator({self.protocol.name!r}).compute() called before any update()")
        return self.protocol.compute(np.concatenate(self._preds), np.concatenate(self._target))

    def reset(self) -> None:
        """Forget every batch."""
        self._preds, self._target = [], []

    def __len__(self) -> int:
        """Number of samples accumulated."""
        return int(sum(p.shape[0] for p in self._preds))

    def __repr__(self) -> str:
        return f"MetricAccumulator(protocol={self.protocol.name!r}, samples={len(self)})"
