"""Training methods (registry): late fusion, PaSE and the balancing baselines."""

from .base import METHODS, LateFusion, Method, create_method, register_method, task_loss
from .agm import AGM
from .ogm_ge import OGMGE
from .pase import PaSE
from .pmr import PMR

__all__ = ["METHODS", "Method", "LateFusion", "create_method", "register_method", "task_loss", "PaSE", "AGM", "OGMGE", "PMR"]
