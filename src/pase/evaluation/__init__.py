"""Evaluation suite: probes, Shapley diagnostics, robustness, multi-seed comparison, reports.

Import the submodules (``pase.evaluation.compare``, ``.report``, ``.shapley_report``,
``.robustness``, ``.probes``, ``.competition``); this layer may use numpy, scikit-learn and
matplotlib, while the core stays pure PyTorch.
"""
