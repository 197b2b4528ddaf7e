"""Defaults of the evaluation commands, importable without torch: ``pase --help`` and the argument
parser read them before any command runs (``compare`` and ``robustness`` re-export them)."""

#: the methods ``pase compare`` trains when ``--methods`` is not given
DEFAULT_METHODS = ("late_fusion", "ogm_ge", "agm", "pmr", "pase")

#: noise levels in units of each feature's train-split standard deviation
DEFAULT_NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0)
