import numpy as np
import pytest
import torch

from pase.data import Batch, DataBundle, MultimodalDataset, TaskSpec, collate_batches
from pase.data.contract import select_modalities, sort_modalities


def _ds(n=6, split="train"):
    rng = np.random.default_rng(0)
    return MultimodalDataset(
        {"vision": rng.normal(size=(n, 4, 3)), "text": rng.normal(size=(n, 5)), "audio": rng.normal(size=(n, 2, 2))},
        rng.normal(size=n), [f"{split}{i}" for i in range(n)],
        lengths={"vision": np.array([1, 2, 3, 4, 4, 2][:n]), "audio": np.full(n, 2)},
        groups=np.arange(n) // 2, positions=np.arange(n) % 2, split=split)


def test_dataset_layout_and_batched_indexing():
    ds = _ds()
    assert ds.modalities == ["text", "audio", "vision"]  # canonical order
    assert ds.dims() == {"text": 5, "audio": 2, "vision": 3}
    b = ds.__getitems__([4, 1])
    assert isinstance(b, Batch) and len(b) == 2 and b.ids == ["train4", "train1"]
    assert b.inputs["text"].shape == (2, 1, 5)  # utterance-level: T = 1
    torch.testing.assert_close(b.lengths["vision"], torch.tensor([4, 2]))
    torch.testing.assert_close(b.mask("vision")[1], torch.tensor([True, True, False, False]))
    torch.testing.assert_close(b.groups, torch.tensor([2, 0]))


def test_collate_pads_to_longest():
    short = MultimodalDataset({"a": np.ones((2, 2, 3))}, np.zeros(2), ["x", "y"])
    long = MultimodalDataset({"a": np.ones((1, 4, 3))}, np.zeros(1), ["z"])
    b = collate_batches([short.__getitems__([0, 1]), long.__getitems__([0])])
    assert b.inputs["a"].shape == (3, 4, 3)
    assert b.inputs["a"][0, 2:].abs().sum() == 0
    torch.testing.assert_close(b.lengths["a"], torch.tensor([2, 2, 4]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(features={"a": np.ones((3, 2))}, target=np.zeros(4), ids=list("abcd")),
     r"modality 'a' has shape \(3, 1, 2\) but the target has 4 samples"),
    (dict(features={"a": np.ones((2, 2))}, target=np.zeros(2), ids=["x", "x"]), "sample id 'x' occurs more than once"),
    (dict(features={"a": np.ones((2, 3, 2))}, target=np.zeros(2), ids=["x", "y"], lengths={"a": np.array([0, 3])}),
     r"lengths of 'a' must be \(N=2,\) within \[1, 3\]"),
    (dict(features={"a": np.ones((0, 2))}, target=np.zeros(0), ids=[]), "is empty"),
    (dict(features={"a": np.ones((2, 3, 2))}, target=np.zeros(2), ids=["x", "y"], lengths={"a": np.array([1, 4])}),
     r"lengths of 'a' must be \(N=2,\) within \[1, 3\], got shape \(2,\) range \[1, 4\]"),
    (dict(features={"a": np.ones((2, 3, 2))}, target=np.zeros(2), ids=["x", "y"], lengths={"a": np.array([1, 2, 3])}),
     r"lengths of 'a' must be \(N=2,\) within \[1, 3\], got shape \(3,\)"),
    (dict(features={"a": np.ones((2, 2))}, target=np.zeros(2), ids=["x", "y"], groups=np.zeros((2, 2))),
     r"groups must have shape \(2,\), got \(2, 2\)"),
])
def test_dataset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultimodalDataset(**kwargs)


def test_bundle_checks_and_selection():
    task = TaskSpec("regression", 1, "mosi")
    bundle = DataBundle("t", task, {s: _ds(split=s) for s in ("train", "valid", "test")})
    bundle.splits["valid"].extra = {"raw_text": np.array(["a"] * 6)}  # a source's extras (SIMS labels, effects)
    sub = select_modalities(bundle, ["audio", "text"])
    assert sub.modalities == ["text", "audio"] and sub.dims() == {"text": 5, "audio": 2}
    assert sub.splits["valid"].extra is bundle.splits["valid"].extra
    with pytest.raises(ValueError, match="has no modality 'video'"):
        select_modalities(bundle, ["video"])
    with pytest.raises(ValueError, match=r"missing split\(s\) \['test'\]"):
        DataBundle("t", task, {s: _ds(split=s) for s in ("train", "valid")})
    wide = _ds(split="valid")
    wide.features["audio"] = torch.zeros(6, 2, 3)  # another extraction: 3 features where train has 2
    with pytest.raises(ValueError, match=r"dataset 't': splits disagree on feature widths: .*'valid': \{'text': 5, "
                                         r"'audio': 3, 'vision': 3\}"):
        DataBundle("t", task, {"train": _ds(split="train"), "valid": wide, "test": _ds(split="test")})


def test_sort_modalities_and_taskspec():
    assert sort_modalities(["vision", "zeta", "audio", "text", "alpha"]) == ["text", "audio", "vision", "alpha", "zeta"]
    with pytest.raises(ValueError, match="kind='ordinal' is not one of"):
        TaskSpec("ordinal", 3, "mosi")
    assert TaskSpec("classification", 4, "multiclass").output_dim == 4


def test_the_data_fingerprint_ignores_last_bit_differences_but_not_other_data():
    """A resume on another machine was refused: the built-in benchmark's labels differ in the last
    bits with the CPU's kernels (ATEN_CPU_CAPABILITY=default against avx2), and the targets were
    hashed byte for byte (review). Ids stay exact; targets and features compare by statistics."""
    from pase.data import create_data
    from pase.data.contract import fingerprint, fingerprint_difference

    bundle = create_data("synthetic", sizes=[40, 16, 16])
    base = fingerprint(bundle)
    test = bundle.splits["test"]
    test.target = test.target * (1 + 1e-7)  # last-bit noise
    test.features["audio"] = test.features["audio"] * (1 + 1e-7)
    assert fingerprint_difference(base, fingerprint(bundle)) is None
    test.target = -test.target
    assert fingerprint_difference(base, fingerprint(bundle)) == "split 'test' has other targets"
    test.target = -test.target * (1 + 1e-3)  # rescaled labels: far beyond rounding
    assert fingerprint_difference(base, fingerprint(bundle)) == "split 'test' has other targets"
    test.target = -test.target / (1 + 1e-3)  # back to the negated labels, restored below
    test.target = -test.target
    test.features["audio"] = test.features["audio"].flip(0)  # the same values, other samples
    assert fingerprint_difference(base, fingerprint(bundle)) == "split 'test': modality 'audio' has other feature values"
    test.ids = list(reversed(test.ids))
    assert fingerprint_difference(base, fingerprint(bundle)) == "split 'test' has other sample ids"
    assert fingerprint_difference({"test": {"n": 16, "ids_targets": "x"}}, base) is None  # another layout: not compared
