"""Shared fixtures of the evaluation-suite tests: one tiny comparison, trained once per session."""

import shutil

import pytest

from eval_setup import METHODS, OVERRIDES, one_thread
from pase.config import Config, apply_overrides
from pase.evaluation.compare import compare


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def comparison(tmp_path_factory):
    """(folder, summary) of late_fusion, agm and a failing method over 2 seeds, with diagnostics."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    with one_thread():
        summary = compare(apply_overrides(Config(), OVERRIDES), ",".join(METHODS), "2", out)
    return out, summary


@pytest.fixture
def comparison_copy(comparison, tmp_path):
    """A private copy of the comparison folder (tests that re-run ``compare`` write into it)."""
    dest = tmp_path / "copy"
    shutil.copytree(comparison[0], dest)
    return dest
