"""The Lightning layer: module, loaders, callbacks and the train / evaluate / predict API."""

from .checkpoint import UnsafeCheckpointError, safe_load_checkpoint
from .run import RunDirError, evaluate, load_bundle, load_checkpoint, predict, train

__all__ = ["train", "evaluate", "predict", "load_bundle", "load_checkpoint", "RunDirError",
           "safe_load_checkpoint", "UnsafeCheckpointError"]
