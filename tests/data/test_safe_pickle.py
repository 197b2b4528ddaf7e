"""The restricted unpickler: loads numpy pickles of numpy 1.x and 2.x, refuses code, names the file."""

from __future__ import annotations

import collections
import os
import pickle
import re
import subprocess

import numpy as np
import pytest

from pase.data.safe_pickle import ALLOWED_GLOBALS, UnsafePickleError, safe_load_pickle
from pase.data.validate import DataFormatError

from .writers import numpy1_pickle, sha256


def _payload() -> dict:
    return {"train": {"x": np.arange(12, dtype=np.float32).reshape(2, 3, 2),
                      "ids": np.array(["a$_$1", "b$_$2"]),
                      "obj": np.array([b"a", "bc"], dtype=object),
                      "lengths": [1, 2]},
            "scalar": np.float64(0.5), "int": np.int64(3), "set": {1, 2}, "frozen": frozenset("ab"),
            "ordered": collections.OrderedDict(a=1), "complex": 1 + 2j, "bytes": b"\x00\xff",
            "bytearray": bytearray(b"xy"), "tuple": (None, True, 1.5), "range": range(3)}


def _assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["train"]["x"], b["train"]["x"])
    np.testing.assert_array_equal(a["train"]["ids"], b["train"]["ids"])
    assert list(a["train"]["obj"]) == list(b["train"]["obj"])
    for k in ("scalar", "int", "set", "frozen", "ordered", "complex", "bytes", "bytearray", "tuple", "range"):
        assert a[k] == b[k], k


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_loads_numpy_and_builtins_at_every_protocol(tmp_path, protocol):
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(_payload(), protocol=protocol))
    _assert_same(safe_load_pickle(path), _payload())


def test_loads_numpy1_module_names(tmp_path):
    """MMSA's files were written by numpy 1.x: ``numpy.core.multiarray._reconstruct``."""
    data = numpy1_pickle(_payload())
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(data)
    _assert_same(safe_load_pickle(path), _payload())


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": _Shell(marker)}))
    digest = sha256(path)
    with pytest.raises(UnsafePickleError, match=r"^evil\.pkl: refused to load global '(posix|os|nt)\.system'"):
        safe_load_pickle(path)
    assert not marker.exists()
    assert sha256(path) == digest


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("fn, args, name", [
    (eval, ("1 + 1",), "builtins.eval"),
    (exec, ("x = 1",), "builtins.exec"),
    (getattr, ("abc", "upper"), "builtins.getattr"),
    (__import__, ("os",), "builtins.__import__"),
    (subprocess.Popen, (["true"],), "subprocess.Popen"),
])
def test_refuses_code_globals(tmp_path, fn, args, name):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(_Reduce(fn, args)))
    with pytest.raises(UnsafePickleError, match=rf"refused to load global '{name}'") as err:
        safe_load_pickle(path)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, DataFormatError)


def test_refuses_python2_spelling(tmp_path):
    """``__builtin__.eval`` (protocol 0, Python 2) maps to builtins.eval and is refused too."""
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"c__builtin__\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match="refused to load global 'builtins.eval'"):
        safe_load_pickle(path)


def test_allow_list_has_no_callables_that_run_code():
    names = {f"{m}.{n}" for m, n in ALLOWED_GLOBALS}
    for bad in ("builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__",
                "builtins.open", "os.system", "posix.system", "subprocess.Popen", "copyreg._reconstructor"):
        assert bad not in names


def test_truncated_pickle_is_one_line(tmp_path):
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps(_payload(), protocol=4)[:200])
    digest = sha256(path)
    message = r"^mosi_data\.pkl: truncated or not a pickle .*download it again"
    with pytest.raises(DataFormatError, match=message) as err:
        safe_load_pickle(path)
    assert not isinstance(err.value, UnsafePickleError)
    assert "\n" not in str(err.value)
    assert sha256(path) == digest


def test_a_file_of_another_type_is_named_not_sent_for_download(tmp_path):
    """A text, .npy or zip (torch.save) file passed as the pickle: say what it is (a re-download
    would not help); an unrecognised binary file keeps the truncated-or-foreign message."""
    import torch

    cases = {"notes.pkl": (lambda p: p.write_text("this is a text file\n"), "a text file"),
             "feats.pkl": (lambda p: p.write_text("a,b,c\n1,2,3\n"), r"a text file \(comma-separated\)"),
             # a first 'c' is protocol 0's GLOBAL opcode: not a refused global, but a text file
             "clips.pkl": (lambda p: p.write_text("clip_id,label\n1,0.5\n"), r"a text file \(comma-separated\)"),
             "cues.pkl": (lambda p: p.write_text("cue sheet\nline two\n"), "a text file"),
             "ids.pkl": (lambda p: p.write_text("clip_id\nvid_a\n"), "a text file"),  # two dotted names
             "arr.pkl": (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"a NumPy \.npy array"),
             # a multi-byte character cut by the 512-byte sniff (a SIMS raw-text CSV)
             "zh.pkl": (lambda p: p.write_bytes(("id,text\n" + "a" * 503 + "情感,1\n").encode()),
                        r"a text file \(comma-separated\)"),
             "model.pkl": (lambda p: torch.save({"w": torch.zeros(2)}, p), r"a zip archive \(a torch\.save file")}
    for name, (write, kind) in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(DataFormatError, match=rf"^{re.escape(name)}: is {kind}.*, not a pickle .*pass the pickle"):
            safe_load_pickle(path)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(bytes([0xff, 0xfe, 0x00, 0x81]) * 8)
    with pytest.raises(DataFormatError, match=r"^junk\.pkl: truncated or not a pickle .*download it again"):
        safe_load_pickle(junk)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        safe_load_pickle(tmp_path / "absent.pkl")


def test_a_folder_is_named_as_a_folder(tmp_path):
    (tmp_path / "Processed").mkdir()
    (tmp_path / "Processed" / "aligned_50.pkl").write_bytes(pickle.dumps({}))
    with pytest.raises(IsADirectoryError, match=rf"^{re.escape(str(tmp_path))}: is a folder, but a pickle file is expected here "
                                                r"\(pass one of the pickles in it: Processed/aligned_50\.pkl\)$"):
        safe_load_pickle(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IsADirectoryError, match=r"empty: is a folder, .*it holds no \.pkl file; pass the "
                                                r"pickle's own path"):
        safe_load_pickle(tmp_path / "empty")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_bytes_after_the_pickle_are_reported(tmp_path, caplog, protocol):
    """Bytes after the pickle's end (a damaged or concatenated file) were ignored without a word; a
    whole file gives no warning at any protocol (the unpickler's read-ahead is not counted)."""
    big = {"x": np.arange(300_000, dtype=np.float32), "y": list(range(1000))}
    whole, damaged = tmp_path / "whole.pkl", tmp_path / "damaged.pkl"
    whole.write_bytes(pickle.dumps(big, protocol=protocol))
    damaged.write_bytes(whole.read_bytes() + b"\x00" * 4096)
    with caplog.at_level("WARNING", logger="pase.data"):
        np.testing.assert_array_equal(safe_load_pickle(whole)["x"], big["x"])
        assert not caplog.records
        np.testing.assert_array_equal(safe_load_pickle(damaged)["x"], big["x"])
    size = whole.stat().st_size
    assert [r.getMessage() for r in caplog.records] == [
        f"damaged.pkl: 4096 bytes follow the end of the pickle (read {size} of {size + 4096} bytes): the file may be "
        "damaged or two files concatenated; compare its size and SHA-256 with the published ones (docs/data.md)"]
