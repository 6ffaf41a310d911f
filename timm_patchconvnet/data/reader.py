"""What every reader shares: the request it answers, the splits it returns, and the registry of readers by name.

As timm's `create_reader`: one small `Reader` per kind of source, registered by name; a `DatasetSpec` names its
reader, and `loading.create_reader` picks one for a --dataset value.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Type

import datasets

from ..dataset_specs import DatasetSpec

__all__ = ['DataError', 'DataSplits', 'LeftOut', 'READERS', 'ReadRequest', 'Reader', 'register_reader']


class DataError(ValueError):
    """Bad data input: the message says what is wrong and what to do."""


@dataclass(frozen=True, kw_only=True)
class ReadRequest:
    """What a reader is asked for, the same for every reader (each uses what applies to its source)."""
    data_dir: Optional[Path]  # a local copy of a known data set (an existing, non-empty folder)
    hub_id: Optional[str]  # a Hub copy of a known data set to read instead of its default
    seed: int
    val_fraction: float  # of all examples (of all patients when split by patient)
    test_fraction: float
    split_protocol: str  # dataset_specs.SEEDED or the name of a published patient split
    allow_missing_patients: bool  # a published split may list patients the data lacks
    cache_dir: Optional[str]  # datasets' cache_dir; also holds the check of an IDC folder's files


@dataclass(kw_only=True)
class LeftOut:
    """What reading left out of the source (metrics.json records both)."""
    skipped_images: int = 0  # unreadable image files
    ignored_files: int = 0  # files of an IDC folder whose names are not IDC patch names (also said in `protocol`)


@dataclass(kw_only=True)
class DataSplits:
    """Train, validation and test splits, each with an `image` and a `label` ClassLabel column, and how they were
    made."""
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    label_names: List[str]
    dataset: str  # the name of its DatasetSpec ('generic' for any other source): selects size and augmentation
    source: str  # 'sklearn.datasets.load_digits', a folder path or a Hub id
    protocol: str  # one sentence on how the splits were made, for metrics.json
    # 'published split', 'seeded patient split' or 'patch-level' for patient data; 'example-level' otherwise
    protocol_kind: str = 'example-level'
    patient_level: bool = False  # True only when split by patient (no patient in two splits)
    left_out: LeftOut = field(default_factory=LeftOut)
    # what the rows' image paths point to, where the `datasets` fingerprints cannot tell (a Kaggle folder's listing
    # key): part of the decoded cache's key
    source_key: str = ''


class Reader:
    """Reads one kind of source into DataSplits. `spec` is the data set's (`GENERIC` for any other source);
    `location` the source a generic --dataset names itself (a Hub id, a folder), None for a known data set."""

    def __init__(self, spec: DatasetSpec, location: Optional[str] = None):
        self.spec = spec
        self.location = location

    def read(self, request: ReadRequest) -> DataSplits:
        raise NotImplementedError


# DatasetSpec.reader -> its reader; filled as the package imports `readers` and `idc`
READERS: Dict[str, Type[Reader]] = {}


def register_reader(name: str) -> Callable[[Type[Reader]], Type[Reader]]:
    """A class decorator: the reader that a DatasetSpec names `name`."""
    def register(cls: Type[Reader]) -> Type[Reader]:
        READERS[name] = cls
        return cls
    return register
