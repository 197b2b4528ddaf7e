"""Evaluation suite: probes, Shapley diagnostics, robustness, multi-seed comparison, reports.

This layer may use numpy, scikit-learn and matplotlib (the core stays pure PyTorch).
"""

from .compare import compare, summarize
from .report import report
from .shapley_report import diagnose

__all__ = ["compare", "summarize", "report", "diagnose"]
