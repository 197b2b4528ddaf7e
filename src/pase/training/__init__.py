"""The Lightning layer: module, loaders, callbacks and the train / evaluate / predict API."""

from .run import RunDirError, evaluate, load_bundle, load_checkpoint, predict, train

__all__ = ["train", "evaluate", "predict", "load_bundle", "load_checkpoint", "RunDirError"]
