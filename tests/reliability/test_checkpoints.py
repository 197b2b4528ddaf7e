"""Safe loading and atomic writing of checkpoints and run files.

* every checkpoint load (``pase evaluate``, ``pase predict``, ``pase train --resume``) is
  weights-only: a checkpoint that names a global is refused with one line naming it, and the
  global is never called;
* ``SafeCheckpointIO`` (the trainer's checkpoint writer) and ``pase.io`` write through a
  temporary file in the same folder and a rename: a failing write leaves the previous file
  intact and no temporary file behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from data.writers import sha256
from pase.cli import main
from pase.config import Config, apply_overrides, save_config
from pase.io import atomic_write_json, atomic_write_text
from pase.training.checkpoint import SafeCheckpointIO, UnsafeCheckpointError, safe_load_checkpoint
from tiny import TINY


class _Payload:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def malicious(tmp_path):
    """(checkpoint path, marker path): a Lightning-shaped checkpoint with a payload in it."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"config": _Payload(marker)}}, path)
    return path, marker


def test_safe_load_names_the_forbidden_global(malicious):
    path, marker = malicious
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt: refused: the checkpoint names the global "
                                                    r"'(os|posix)\.system'") as err:
        safe_load_checkpoint(path)
    assert "\n" not in str(err.value) and not marker.exists()


@pytest.mark.parametrize("command", [["evaluate", "--checkpoint"],
                                     ["predict", "--output", "p.csv", "--checkpoint"]])
def test_cli_refuses_a_malicious_checkpoint(malicious, capsys, command):
    path, marker = malicious
    before = sha256(path)
    assert main(command + [str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused: the checkpoint names the global" in err[0] and "system" in err[0]
    assert not marker.exists() and sha256(path) == before


def test_resume_refuses_a_malicious_last_checkpoint(tmp_path, malicious, capsys):
    """``trainer.fit(ckpt_path=...)`` loads through ``SafeCheckpointIO``: weights-only."""
    path, marker = malicious
    run = tmp_path / "run"
    save_config(apply_overrides(Config(), TINY), run / "config.yaml")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
    before = sha256(run / "checkpoints" / "last.ckpt")
    assert main(["train", "--quiet", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(r"last\.ckpt: refused: the checkpoint names the global '\w+\.system'", err[0]), err[0]
    assert not marker.exists() and sha256(run / "checkpoints" / "last.ckpt") == before
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_damaged_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(UnsafeCheckpointError, match=r"bad\.ckpt: (truncated or not a checkpoint|refused|not a PyTorch "
                                                   r"checkpoint)") as err:
        safe_load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_a_run_folder_or_its_config_as_checkpoint_names_the_file_to_pass(tmp_path):
    """The two likely slips: the run's folder, and its config.yaml. Neither is called a security
    refusal; the message names a checkpoint file to pass instead."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, run / "checkpoints" / "best.ckpt")
    (run / "config.yaml").write_text("method: pase\n")
    with pytest.raises(FileNotFoundError, match=r"'.*run' is a folder; pass a checkpoint file, for example "
                                                r".*run/checkpoints/best\.ckpt$"):
        safe_load_checkpoint(run)
    with pytest.raises(UnsafeCheckpointError, match=r"config\.yaml: not a PyTorch checkpoint \(it starts with "
                                                   r"b'meth'; .*pass a \.ckpt file from a run's checkpoints/"):
        safe_load_checkpoint(run / "config.yaml")


def test_not_a_pase_checkpoint(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"not a pase checkpoint \(no 'state_dict'; found list\)"):
        safe_load_checkpoint(tmp_path / "list.ckpt")


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "--output", "p.csv"], ["diagnose", "--out", "d"]])
def test_a_checkpoint_of_another_program_is_one_line(tmp_path, capsys, monkeypatch, command):
    """A Lightning checkpoint without pase's saved configuration (another program's, or a bare
    state_dict) was reported as 'pase: error: hyper_parameters' (a KeyError's key)."""
    monkeypatch.chdir(tmp_path)
    for name, state in (("bare", {"state_dict": {}}), ("other", {"state_dict": {}, "hyper_parameters": {"lr": 1}})):
        torch.save(state, tmp_path / f"{name}.ckpt")
        assert main([command[0], "--checkpoint", f"{name}.ckpt", *command[1:]]) == 2
        assert capsys.readouterr().err == (
            f"pase: error: {name}.ckpt: not a pase checkpoint (no hyper_parameters.config: written by another "
            "program?); pass a .ckpt from a pase run's checkpoints/, for example checkpoints/best.ckpt\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.ckpt", "other.ckpt"]


def test_checkpoint_io_writes_atomically(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    before = sha256(path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))

    def crash(obj, f, *args, **kwargs):  # a write that dies half way (disk full, kill)
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match=r"last\.ckpt: the checkpoint could not be written \(\d+ MiB free on its disk; "
                                      r"OSError: No space left on device\); the previous one is kept: free space, then "
                                      r"continue with pase train --resume "):  # was torch's "unexpected pos ..."
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert sha256(path) == before, "the previous checkpoint was damaged"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], "a temporary file was left behind"

    def too_large(obj, f, *args, **kwargs):  # ulimit -f: not a full disk, so not "free space" (a review)
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(torch, "save", too_large)
    with pytest.raises(OSError, match=r"the previous one is kept: raise the file-size limit \(ulimit -f\), then "
                                      r"continue with pase train --resume "):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)


def test_checkpoint_io_names_a_real_file_size_limit(tmp_path, monkeypatch):
    """Under a real ``ulimit -f`` torch's writer fails with RuntimeError "unexpected pos ..." (no errno; Python
    ignores SIGXFSZ), so the EFBIG test above, on a mocked OSError, never fired: the user was told to "free
    space" on a disk with room (a review). A real limit (RLIMIT_FSIZE, the soft one, lowered in this process
    for the one save: a subprocess under ``bash -c 'ulimit -f ...'`` spends 8 s importing Lightning here)."""
    resource = pytest.importorskip("resource")
    import signal

    if getattr(signal, "SIGXFSZ", None) is None or signal.getsignal(signal.SIGXFSZ) != signal.SIG_IGN:
        pytest.skip("SIGXFSZ is not ignored in this process (Python ignores it at start-up)")
    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limits[1] != resource.RLIM_INFINITY and limits[1] < 400_000:
        pytest.skip(f"the hard file-size limit ({limits[1]} bytes) is below this test's checkpoint")
    resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, limits[1]))  # ulimit -f 200: the 400 kB one does not fit
    try:
        with pytest.raises(OSError) as caught:
            io.save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert re.fullmatch(rf"{re.escape(str(path))}: the checkpoint could not be written \(\d+ MiB free on its disk; "
                        r"RuntimeError: [^\n]+\); the previous one is kept: raise the file-size limit \(ulimit -f\), "
                        rf"then continue with pase train --resume {re.escape(str(tmp_path))}", str(caught.value)), \
        str(caught.value)
    assert torch.equal(safe_load_checkpoint(path)["state_dict"]["w"], torch.ones(3)), "the previous one was damaged"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], "a temporary file was left behind"
    # under a limit, a write that fails far below it (a full disk) is not the limit's: "free space", as before

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 17 vs 9")

    monkeypatch.setattr(torch, "save", full_disk)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, limits[1]))
    try:
        with pytest.raises(OSError, match=r"the previous one is kept: free space, then continue"):
            io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)


def test_atomic_text_keeps_old_file_on_failure_and_plain_permissions(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"a": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic_write_json(path, {"a": object()})
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["metrics.json"]
    atomic_write_text(tmp_path / "log.csv", "epoch\n0\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "log.csv").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path):
    """A full disk while writing log.csv or metrics.json ended in a bare '[Errno 28] No space left
    on device': no file named, no advice. The error now names the file and the free space."""
    import errno

    from pase.io import FileWriteError, atomic_save

    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"a": 1})
    before = path.read_bytes()

    def full(tmp):
        Path(tmp).write_bytes(b"{\"a\": ")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(FileWriteError, match=rf"^{re.escape(str(path))}: could not be written \(No space left on "
                                             r"device; \d+ MiB free on its disk\); its previous version, if any, "
                                             r"is intact$") as err:
        atomic_save(path, full)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["metrics.json"]
    import pickle  # a pase compare --jobs worker's error reaches the CLI pickled: errno and message survive

    again = pickle.loads(pickle.dumps(err.value))
    assert (type(again), again.errno, str(again)) == (FileWriteError, errno.ENOSPC, str(err.value))


def test_a_run_folder_gets_its_lock_file_without_fcntl(tmp_path, monkeypatch):
    """Where fcntl is missing (Windows) no .lock was written, so a run killed in its first epoch
    could not restart in place (the restart needs the run's .lock)."""
    import sys

    from pase.training.run import lock_run

    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError
    assert lock_run(tmp_path) is None and (tmp_path / ".lock").is_file()


def test_a_filesystem_without_locks_runs_unlocked_and_a_held_lock_refuses(tmp_path, flock_unsupported, caplog):
    """Every flock failure read as 'another process is writing': on a filesystem without locks (ENOLCK) no
    run could start there. Only a lock another process holds refuses; otherwise a warning, and no lock."""
    from pase.training.run import RunDirError, lock_run

    monkeypatch = flock_unsupported
    with caplog.at_level("WARNING", logger="pase"):
        assert lock_run(tmp_path) is None
    assert "cannot lock it (No locks available); the run goes on unlocked" in caplog.text
    monkeypatch.undo()
    held = lock_run(tmp_path)  # a real lock, then a second taker is refused
    try:
        with pytest.raises(RunDirError, match="another process is writing"):
            lock_run(tmp_path)
    finally:
        os.close(held)


def test_a_full_disk_during_training_says_what_to_run(tmp_path, monkeypatch, capsys):
    """pase train whose log.csv write hits a full disk: one line naming the file, and how to continue."""
    import errno

    import pase.training.callbacks as callbacks
    from pase.io import atomic_save

    calls = []

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    def second_fails(path, text):  # log.csv after the second epoch
        calls.append(path)
        atomic_save(path, full) if len(calls) == 2 else atomic_write_text(path, text)

    monkeypatch.setattr(callbacks, "atomic_write_text", second_fails)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--quiet"] + [x for s in TINY + ["train.max_epochs=3"]
                                                         for x in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pase: error: {out / 'log.csv'}: could not be written (No space left on device; "), err
    assert err.endswith(f"; free space; finished epochs are kept: continue with pase train --resume {out}"), err


def test_every_trainer_loads_and_saves_through_safe_checkpoint_io(tmp_path):
    """``trainer.fit(ckpt_path=...)``, ``validate`` / ``test(ckpt_path="best")`` all go through it."""
    from pase.training.run import _trainer

    trainer = _trainer(apply_overrides(Config(), TINY), tmp_path, [], quiet=True)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_free_space_is_in_mebibytes_of_the_nearest_existing_folder(tmp_path, monkeypatch):
    """The free space a write error names is the disk's free bytes / 2**20 ('MiB'), measured at the
    nearest folder that exists (the file's own folder may not exist yet)."""
    import shutil
    from collections import namedtuple

    from pase.io import free_space

    seen = []
    usage = namedtuple("usage", "total used free")

    def disk_usage(folder):
        seen.append(Path(folder))
        return usage(0, 0, 3 * 2**30)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    assert free_space(tmp_path / "new" / "deeper" / "metrics.json") == "3072 MiB free on its disk"
    assert seen == [tmp_path]


def test_only_the_named_files_partial_writes_are_removed(tmp_path):
    """remove_partial_writes removes the hidden .<file>.<random>.tmp of the files it names; a user's
    own hidden .tmp file and a visible *.tmp stay. Without names, any hidden .*.tmp is a partial write."""
    from pase.io import is_partial_write, remove_partial_writes

    for name in (".config.yaml.a1b2.tmp", ".notes.x9.tmp", "config.yaml.tmp", "config.yaml"):
        (tmp_path / name).write_text("x")
    remove_partial_writes(tmp_path, ("config.yaml",))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.x9.tmp", "config.yaml", "config.yaml.tmp"]
    assert is_partial_write(".notes.x9.tmp") and not is_partial_write("config.yaml.tmp")
    assert not is_partial_write(".notes.x9.tmp", ("config.yaml",))


def test_a_legacy_format_checkpoint_loads_and_a_dict_without_weights_is_refused(tmp_path):
    """torch.save's legacy (non-zip) format starts with the pickle protocol byte 0x80 and loads
    weights-only like a zip archive; a dict that holds no state_dict is not a pase checkpoint."""
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "old.ckpt").read_bytes()[:1] == b"\x80"
    assert torch.equal(safe_load_checkpoint(tmp_path / "old.ckpt")["state_dict"]["w"], torch.ones(2))
    torch.save({"weights": {"w": torch.ones(2)}}, tmp_path / "dict.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"not a pase checkpoint \(no 'state_dict'; found dict\)"):
        safe_load_checkpoint(tmp_path / "dict.ckpt")


def test_a_metadata_read_maps_the_weights_instead_of_reading_them(tmp_path):
    """``mmap=True`` (the callers that read only ``epoch`` / ``pase_state``: compare's checks of an
    interrupted run, a resume's checks of best.ckpt) maps a zip checkpoint's storage: the file is in
    this process's memory map while the state lives, the values are the saved ones; a plain load
    reads them (not mapped); a legacy-format file cannot be mapped and is read whole."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("no /proc/self/maps on this system to see the mapping")
    path = tmp_path / "mapped.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}, "epoch": 3, "pase_state": {"data": {"n": 7}}}, path)
    state = safe_load_checkpoint(path, mmap=True)
    assert str(path) in maps.read_text()
    assert state["epoch"] == 3 and state["pase_state"] == {"data": {"n": 7}}
    assert torch.equal(state["state_dict"]["w"], torch.arange(4096.0))
    del state
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}, "epoch": 3}, plain)
    state = safe_load_checkpoint(plain)
    assert str(plain) not in maps.read_text() and state["epoch"] == 3
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "old.ckpt",
               _use_new_zipfile_serialization=False)
    assert safe_load_checkpoint(tmp_path / "old.ckpt", mmap=True)["epoch"] == 1


def test_a_run_folder_given_as_checkpoint_suggests_its_best_checkpoint(tmp_path):
    """With best.ckpt and last.ckpt both there, the message points at best.ckpt (the selected epoch,
    what evaluate and diagnose mean), not last.ckpt."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.ckpt", "last.ckpt"):
        torch.save({"state_dict": {}}, run / "checkpoints" / name)
    with pytest.raises(FileNotFoundError, match=r"for example .*run/checkpoints/best\.ckpt$"):
        safe_load_checkpoint(run)


def test_a_write_stopped_within_a_page_of_the_file_size_limit_met_it(monkeypatch):
    """The kernel fills a file up to the limit in whole pages: a write stopped within 4096 bytes below
    the soft RLIMIT_FSIZE met the limit, one further below did not."""
    resource = pytest.importorskip("resource")
    from pase.training.checkpoint import _at_file_size_limit

    monkeypatch.setattr(resource, "getrlimit", lambda which: (100_000, resource.RLIM_INFINITY))
    assert _at_file_size_limit(100_000 - 4096) and _at_file_size_limit(99_000)
    assert not _at_file_size_limit(100_000 - 4097) and not _at_file_size_limit(None)


def test_json_writes_sets_and_tuples_as_lists(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"s": {3}, "t": (1, 2)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"s": [3], "t": [1, 2]}


def test_a_full_disk_checkpoint_error_keeps_only_what_there_was_and_leaves_torchs_detail_out(tmp_path, monkeypatch):
    """A comparison's run whose first last.ckpt did not fit on a full disk was told 'the previous one is kept',
    though it had none, after torch's '[enforce fail at inline_container.cc:672] . unexpected pos ...' (review m2,
    D3). A full disk (no free space while the write failed) is said in words; what is kept only if it exists."""
    import shutil
    from collections import namedtuple

    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(2**30, 2**30, 0))  # a full disk

    def full_disk(obj, f, *args, **kwargs):  # what torch's writer raises on a real full disk (no errno)
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2509760 vs 2509652")

    real_save = torch.save
    monkeypatch.setattr(torch, "save", full_disk)
    then = f"free space, then continue with pase train --resume {tmp_path}"
    with pytest.raises(OSError) as first:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert str(first.value) == (f"{path}: the checkpoint could not be written (0 MiB free on its disk: the disk is "
                                f"full); there was no earlier one to keep: {then}")
    assert list(path.parent.iterdir()) == []
    monkeypatch.setattr(torch, "save", real_save)
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    before = sha256(path)
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as second:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert str(second.value) == (f"{path}: the checkpoint could not be written (0 MiB free on its disk: the disk is "
                                 f"full); the previous one is kept: {then}")
    assert sha256(path) == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
