"""Data for training PatchConvNet: seeded train/validation/test splits as Hugging Face `datasets`.

`load_splits` reads scikit-learn's digits, CIFAR-10 (Hub or a local copy of its parquet files), the Kaggle
breast histopathology (IDC) patches split by patient, or any image classification source `datasets` can read:
`create_reader` picks the reader (`readers.py`, `idc.py`) and every reader answers the same `ReadRequest`.
"""
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import datasets
import numpy as np
import torch
from PIL import Image

from ..dataset_specs import DATASETS, GENERIC, SEEDED, SPLIT_NAMES, dataset_spec
from ..images import to_rgb
from .reader import READERS, DataError, DataSplits, ReadRequest, Reader
from .sources import existing_folder, warn_left_out
from .splits import SplitError, column

__all__ = ['ImageClassificationDataset', 'create_reader', 'load_splits']

VALID_DATASETS = f"{', '.join(repr(name) for name in DATASETS)}, 'hub:<repo_id>' or the path to a local folder"


def create_reader(dataset: str) -> Reader:
    """The reader of a --dataset value, as timm's `create_reader`: a known data set's (its spec names it),
    'hub:<repo_id>' (any Hub data set) or a local folder."""
    if dataset in DATASETS:
        spec = DATASETS[dataset]
        return READERS[spec.reader](spec)
    if dataset.startswith('hub:'):
        return READERS['hub'](GENERIC, dataset[len('hub:'):])
    if Path(dataset).expanduser().is_dir():
        return READERS['folder'](GENERIC, dataset)
    raise DataError(f'Unknown --dataset {dataset!r}: use {VALID_DATASETS}.')


def load_splits(
        dataset: str,
        *,
        data_dir: Optional[str] = None,
        hub_id: Optional[str] = None,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_protocol: str = SEEDED,
        allow_missing_patients: bool = False,
        cache_dir: Optional[str] = None,
) -> DataSplits:
    """Train/validation/test splits of `dataset`: 'digits', 'cifar10', 'idc', 'hub:<repo_id>' or a local folder.

    Every split has an `image` column (PIL on access) and a `label` ClassLabel column; IDC also keeps `patient_id`,
    `x`, `y` when known. Carved splits are seeded and stratified; `val_fraction` / `test_fraction` are fractions of
    all examples (of all patients for IDC). `split_protocol` is 'seeded' or a published patient split of the data
    set ('janowczyk' for IDC: see `dataset_specs`). `cache_dir` is handed to `datasets.load_dataset`, and holds the
    check of an IDC folder's files under `cache_dir`/timm_patchconvnet (default: `decode_cache.cache_root()`).
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f'--val-fraction {val_fraction} and --test-fraction {test_fraction} must each lie in (0, 1) and sum to '
            'less than 1, leaving examples to train on.')
    request = ReadRequest(
        data_dir=existing_folder(data_dir, '--data-dir') if data_dir is not None else None, hub_id=hub_id,
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, split_protocol=split_protocol,
        allow_missing_patients=allow_missing_patients, cache_dir=cache_dir)
    if split_protocol != SEEDED and split_protocol not in dataset_spec(dataset).published_splits:
        raise DataError(f'--split {split_protocol} is not a published split of --dataset {dataset}; published '
                        'splits: ' + (', '.join(f'{name} ({spec.name})' for spec in DATASETS.values()
                                                for name in spec.published_splits) or 'none') + '.')
    try:
        splits = create_reader(dataset).read(request)
    except SplitError as err:
        raise DataError(str(err)) from err
    warn_left_out(splits.left_out, splits.source)
    for name in SPLIT_NAMES:
        _check_two_classes(name, getattr(splits, name), splits.label_names)
    return splits


class ImageClassificationDataset(torch.utils.data.Dataset):
    """One split as (image tensor, label) pairs; images are made 8-bit RGB by `images.to_rgb`, so grayscale (16-bit
    too, scaled rather than clipped white), RGBA and palette files work."""

    def __init__(self, split: datasets.Dataset, transform: Callable[[Image.Image], torch.Tensor]):
        self.split = split.select_columns(['image', 'label'])  # don't fetch the IDC metadata with every image
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        example = self.split[index]
        return self.transform(to_rgb(example['image'])), example['label']


def _check_two_classes(split_name: str, split: datasets.Dataset, label_names: Sequence[str]) -> None:
    present = np.unique(column(split, 'label'))
    if len(present) < 2:
        classes = ', '.join(label_names[i] for i in present) or 'none'
        raise DataError(
            f'The {split_name} split has {len(split)} examples of only one class ({classes}): every split needs at '
            'least two classes. Use more data (for IDC, more patients with both classes) or other '
            '--val-fraction/--test-fraction.')
