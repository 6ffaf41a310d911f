"""What every reader shares: the request it answers, the splits it returns, and the registry of readers by name.

As timm's `create_reader`: one small `Reader` per kind of source, registered by name; a `DatasetSpec` names its
reader, and `loading.create_reader` picks one for a --dataset value.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Type

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
    """What reading left out of the source (metrics.json records the counts), each kind with a few of its names, so
    that nothing disappears without a word: `summary` says it all in one line."""
    skipped_images: int = 0  # unreadable image files
    ignored_files: int = 0  # files of an IDC folder whose names are not IDC patch names (also said in `protocol`)
    unreachable: int = 0  # links that loop or lead nowhere, and folders that cannot be listed
    empty_classes: int = 0  # class folders without a readable image: the class is not in the data
    contradictory_patches: int = 0  # patches at one patient's position that also appears under the other label
    examples: Dict[str, List[str]] = field(default_factory=dict)  # a count's field name -> some of its names

    WORDS = dict(skipped_images='unreadable image file(s)', ignored_files='file(s) not named as the data set names '
                 'them', unreachable='link(s) or folder(s) that could not be read', empty_classes='empty class '
                 'folder(s)', contradictory_patches='patch(es) whose position also appears under the other label')

    def add(self, kind: str, names: Sequence[object], count: Optional[int] = None) -> None:
        """Count `names` (paths, ids; `count` of them if given) as left out for `kind`, one of the count fields,
        keeping a few to show."""
        setattr(self, kind, getattr(self, kind) + (len(names) if count is None else count))
        self.examples.setdefault(kind, []).extend(str(n) for n in names[:3 - len(self.examples.get(kind, []))])

    def summary(self, source: str) -> str:
        """One line on everything left out of `source`, with counts and examples; '' when nothing was."""
        parts = [f'{getattr(self, kind)} {words}' + (f' (e.g. {", ".join(self.examples[kind])})'
                                                   if self.examples.get(kind) else '')
                 for kind, words in self.WORDS.items() if getattr(self, kind)]
        return f'Left out of {source}: {"; ".join(parts)}.' if parts else ''


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
