"""The bad-input corpus through the CLI: one error line, non-zero exit, input file untouched.

Every case of ``corpus.CASES`` is built in a fresh folder, then given to ``pase data inspect
FILE`` and to ``pase train --set data.source=... --set data.path=FILE``. Each must print exactly
one line on stderr, ``pase: error: <message>`` (no traceback), exit non-zero, leave every file
under the folder byte for byte as it was, and never run a forbidden global.
"""

from __future__ import annotations

import re

import pytest

from data.writers import tree_digest
from pase.cli import main

from .corpus import CASES, MARKER, build

#: keep the training config tiny, in case a fault slipped through and a run started
_TINY_TRAIN = ["train.max_epochs=1", "train.progress_bar=false", "model.d_model=8", "model.hidden=8",
               "model.head_hidden=0"]


def _command(kind: str, case: str, path, out) -> list:
    if kind == "inspect":
        return ["data", "inspect", str(path)]
    sets = [f"data.source={CASES[case].source}", f"data.path={path}"] + _TINY_TRAIN
    return ["train", "--quiet", "--out", str(out)] + [x for s in sets for x in ("--set", s)]


@pytest.mark.parametrize("kind", ["inspect", "train"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_error_line(tmp_path, capsys, case, kind):
    data = tmp_path / "data"
    path = build(case, data)
    before = tree_digest(data)
    code = main(_command(kind, case, path, tmp_path / "run"))
    out, err = capsys.readouterr()
    assert code != 0, f"{case}: {kind} exited 0"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pase: error: "), f"{case}: stderr was {err!r}"
    assert re.search(CASES[case].message, lines[0]), f"{case}: {lines[0]!r} does not match {CASES[case].message!r}"
    assert "Traceback" not in out + err
    assert tree_digest(data) == before, f"{case}: {kind} changed the files under {data}"
    assert not (data / MARKER).exists(), f"{case}: the pickle's payload ran"
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_debug_shows_the_traceback(tmp_path):
    path = build("NaN feature", tmp_path / "data")
    with pytest.raises(ValueError, match=CASES["NaN feature"].message):
        main(["--debug"] + _command("train", "NaN feature", path, tmp_path / "run"))


def test_a_library_warning_is_one_line_and_the_format_is_restored(tmp_path, capsys, monkeypatch):
    """numpy's and torch's warnings printed with their file, line and source line before the one
    error line (review); the command line formats them as 'pase: warning: ...' (pytest records
    warnings instead of printing them, so the format in force during the command is what is read)."""
    import warnings

    import pase.data.inspect as inspect_mod

    seen = []

    def warns(*args, **kwargs):
        seen.append(warnings.formatwarning("loadtxt: input contained no data", UserWarning, "npyio.py", 1373,
                                           "    warnings.warn("))
        raise ValueError("features/text_train0.csv: no rows")

    monkeypatch.setattr(inspect_mod, "inspect_path", warns)
    before = warnings.formatwarning
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert seen == ["pase: warning: loadtxt: input contained no data\n"]
    assert capsys.readouterr().err == "pase: error: features/text_train0.csv: no rows\n"
    assert warnings.formatwarning is before


def test_overlapping_commands_restore_pythons_warning_format_when_the_last_ends():
    """Two main() calls in threads: the one ending last restored the other's formatter, leaving
    'pase: warning:' installed for the rest of the process (review). The swap is counted now."""
    import warnings

    from pase.cli import _one_line_warnings

    before = warnings.formatwarning
    _one_line_warnings(True)
    _one_line_warnings(True)  # a second command while the first runs
    _one_line_warnings(False)  # the first ends
    assert warnings.formatwarning("m", UserWarning, "f.py", 1) == "pase: warning: m\n"
    # a many-line warning (torch.compile quotes a source line with ^^^ markers) keeps its first line
    assert warnings.formatwarning("Dynamo detected a call to a functools.lru_cache\n\n  x = f(1)\n      ^^^\n",
                                  UserWarning, "f.py", 1) == (
        "pase: warning: Dynamo detected a call to a functools.lru_cache [...]\n")
    _one_line_warnings(False)
    assert warnings.formatwarning is before
