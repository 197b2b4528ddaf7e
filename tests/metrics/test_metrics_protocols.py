"""pase.metrics.protocols: the registry, its metadata, and the convenience entry point."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from oracles.sklearn_metrics import reference_mosi

from pase.metrics import PROTOCOLS, Protocol, compute_metrics, get_protocol

MONITORS = {"mosi": "MAE", "mosei": "MAE", "sims": "MAE", "iemocap_mult": "Mean_F1", "multiclass": "WF1"}


def test_exactly_the_five_protocols_with_their_monitors():
    assert {name: p.monitor for name, p in PROTOCOLS.items()} == MONITORS
    assert all(name == p.name for name, p in PROTOCOLS.items())


@pytest.mark.parametrize("name", list(MONITORS))
def test_metadata_names_what_compute_returns(name, gen, inputs):
    proto = get_protocol(name)
    outputs, target = inputs(name, 80, gen)
    got = proto.compute(outputs, target)
    assert tuple(got) == proto.metric_names  # same names, same order
    assert proto.mode() == ("min" if proto.monitor == "MAE" else "max")
    assert all(proto.higher_is_better[k] == (k != "MAE") for k in got)
    assert compute_metrics(name, outputs, target) == got


def test_the_multiclass_description_names_every_metric_it_reports():
    """Results carry protocol_description; the multiclass one named WA, UA and "weighted F1" but not
    Macro_F1, which every result reports too (review)."""
    proto = get_protocol("multiclass")
    assert all(name in proto.description for name in proto.metric_names), proto.description


def test_mosi_and_mosei_share_the_mmsa_set(gen, inputs):
    outputs, target = inputs("mosi", 120, gen)
    a, b = compute_metrics("mosi", outputs, target), compute_metrics("mosei", outputs, target)
    assert a == b and list(a) == list(reference_mosi(outputs, target))
    assert "MMSA" in PROTOCOLS["mosi"].description and "MMSA" in PROTOCOLS["mosei"].description


def test_lookup_is_case_insensitive_and_unknown_names_list_the_valid_ones():
    assert get_protocol("MOSI") is PROTOCOLS["mosi"]
    with pytest.raises(KeyError, match=r"unknown metric protocol 'mosie'; did you mean 'mosi'\? "
                                       r"valid: iemocap_mult, mosei, mosi, multiclass, sims"):
        get_protocol("mosie")
    with pytest.raises(KeyError, match="unknown metric protocol 'iemocap'; did you mean 'iemocap_mult'"):
        compute_metrics("iemocap", torch.zeros(2, 4), torch.zeros(2, 4))


def test_mode_of_unknown_metric_and_bad_monitor():
    with pytest.raises(KeyError, match=r"'Mult_acc7'; did you mean 'Mult_acc_7'\?"):
        get_protocol("mosi").mode("Mult_acc7")
    with pytest.raises(ValueError, match="monitor metric of protocol 'x'"):
        Protocol("x", "regression", lambda p, t: {}, "Accuracy", {"MAE": False})
    with pytest.raises(ValueError, match="task_kind='regresion'"):
        Protocol("x", "regresion", lambda p, t: {}, "MAE", {"MAE": False})


def test_protocol_is_frozen_and_pickles():
    proto = get_protocol("sims")
    with pytest.raises(dataclasses.FrozenInstanceError):
        proto.monitor = "Corr"
    clone = pickle.loads(pickle.dumps(proto))
    assert clone == proto and clone.compute is proto.compute
