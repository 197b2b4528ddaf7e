"""Models: encoders (registry), the fusion model and its builder."""

from .build import build_model
from .encoders import ENCODERS, create_encoder
from .fusion_model import FusionModel, FusionOutput

__all__ = ["ENCODERS", "create_encoder", "FusionModel", "FusionOutput", "build_model"]
