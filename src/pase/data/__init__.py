"""Data sources of ``pase``: the contract, the built-in benchmark and the field's on-disk formats."""

from .contract import Batch, DataBundle, MultimodalDataset, TaskSpec, collate_batches, sort_modalities
from .registry import DATA_SOURCES, create_data, register_data
from . import gcnet, mmsa, mosi_bclstm, mult, synthetic  # importing them registers the sources

__all__ = ["Batch", "DataBundle", "MultimodalDataset", "TaskSpec", "collate_batches", "sort_modalities",
           "DATA_SOURCES", "create_data", "register_data", "gcnet", "mmsa", "mosi_bclstm", "mult", "synthetic"]
