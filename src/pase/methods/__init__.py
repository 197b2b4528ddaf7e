"""Training methods (registry): late fusion, PaSE and the balancing baselines."""

from .base import METHODS, LateFusion, Method, create_method, register_method, task_loss
from .pase import PaSE

__all__ = ["METHODS", "Method", "LateFusion", "create_method", "register_method", "task_loss", "PaSE"]
