"""Tiny configurations shared by tests (imported as ``tiny``; tests/ is on sys.path via conftest)."""

#: a synthetic problem small enough to train for a few epochs in a couple of seconds
TINY = ["data.options.sizes=[192,64,64]", "train.max_epochs=3", "train.progress_bar=false",
        "model.d_model=16", "model.hidden=32", "model.head_hidden=16"]
