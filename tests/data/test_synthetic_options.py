"""``SyntheticSpec`` refuses option values that would give NaN features or a raw traceback."""

from __future__ import annotations

import math

import pytest
import torch

from pase.data import create_data


@pytest.mark.parametrize("options, message", [
    (dict(sizes=(1, 5, 5)), r"^synthetic option 'sizes' must be 3 positive counts \(train, valid, test\) with at "
                            r"least 2 training samples .*got \(1, 5, 5\)$"),
    (dict(scales=(0.0, 0.1, 0.1)), r"^synthetic option 'scales' must be positive factors, got \[0\.0, 0\.1, 0\.1\]$"),
    (dict(scales=(1.0, -0.1, 0.1)), r"^synthetic option 'scales' must be positive factors"),
    (dict(scales=(1.0, math.nan, 0.1)), r"^synthetic option 'scales' must be positive factors"),
    (dict(dims=(100, 1, 100)), r"^synthetic option 'dims': modality 'audio' has observed width 1, below its latent "
                               r"width 2 \(option 'latent'\); raise dims\[1\] or lower latent\[1\]$"),
    (dict(dims=(45, 73, 100)), r"^synthetic option 'dims': modality 'text' has observed width 45 - memorize_dim 40 = "
                               r"5, below its latent width 8 \(option 'latent'\); raise dims\[0\] or lower latent\[0\]$"),
])
def test_options_that_would_break_the_generator_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        create_data("synthetic", **dict(dict(sizes=(20, 5, 5)), **options))


def test_the_smallest_accepted_options_give_finite_data():
    """Two training samples, latent width equal to the observed width: finite features and labels."""
    bundle = create_data("synthetic", sizes=(2, 1, 1), dims=(48, 2, 2), scales=(1e-3, 1.0, 1.0))
    for ds in bundle.splits.values():
        assert all(torch.isfinite(x).all() for x in ds.features.values()) and torch.isfinite(ds.target).all()
