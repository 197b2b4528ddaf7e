"""Evaluation suite: probes, Shapley diagnostics, robustness, multi-seed comparison, reports."""
