"""Data for training PatchConvNet: seeded train/validation/test splits as Hugging Face `datasets`, and transforms.

`load_splits` reads scikit-learn's digits, CIFAR-10 (Hub or a local copy of its parquet files), the Kaggle
breast histopathology (IDC) patches split by patient, or any image classification source `datasets` can read.
"""
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.table import InMemoryTable
from PIL import Image
from sklearn.datasets import load_digits
from torchvision import transforms

from .decode_cache import CACHE_VERSION, ImageReadError, cache_root, open_rgb, readable_files
from ..dataset_specs import DATASETS, GENERIC, SEEDED, DatasetSpec, dataset_spec, published_split
from ..images import exact_size_transform, to_rgb
from ..model_folder import atomic_write_json
from ..pretrained import HUB_NAMESPACE
from ..dataset_specs import IDC_PATCH_NAME
from .splits import (
    SplitError, column, hold_out, published_patient_split, split_by_patient, stratification, three_way_split)

__all__ = ['DataError', 'DataSplits', 'ImageClassificationDataset', 'build_transform', 'load_idc_patches',
           'load_splits', 'read_idc_kaggle_folder']

_logger = logging.getLogger(__name__)

VALID_DATASETS = f"{', '.join(repr(name) for name in DATASETS)}, 'hub:<repo_id>' or the path to a local folder"
IDC_LABEL_NAMES = list(DATASETS['idc'].label_names)
IDC_DUPLICATE_COPY = 'IDC_regular_ps50_idx5'  # the Kaggle archive repeats every patient folder under this name
IDC_EXTRA_FEATURES = dict(patient_id=datasets.Value('string'), x=datasets.Value('int32'), y=datasets.Value('int32'))
SPLIT_NAMES = ('train', 'validation', 'test')


class DataError(ValueError):
    """Bad data input: the message says what is wrong and what to do."""


@dataclass
class DataSplits:
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    label_names: List[str]
    kind: str  # the name of its DatasetSpec ('generic' for any other source): selects size and augmentation
    source: str  # 'sklearn.datasets.load_digits', a folder path or a Hub id
    protocol: str  # one sentence on how the splits were made, for metrics.json
    patient_level: bool = False  # True only when split by patient (no patient in two splits)
    skipped_images: int = 0  # unreadable image files left out
    ignored_files: int = 0  # files of an IDC folder whose names are not IDC patch names (also said in `protocol`)
    # 'published split', 'seeded patient split' or 'patch-level' for patient data; 'example-level' otherwise
    protocol_kind: str = 'example-level'
    # what the rows' image paths point to, where the `datasets` fingerprints cannot tell (a Kaggle folder's listing
    # key): part of the decoded cache's key
    source_key: str = ''


def load_splits(
        dataset: str,
        *,
        data_dir: Optional[str] = None,
        hub_id: Optional[str] = None,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split: str = SEEDED,
        allow_missing_patients: bool = False,
        cache_dir: Optional[str] = None,
) -> DataSplits:
    """Train/validation/test splits of `dataset`: 'digits', 'cifar10', 'idc', 'hub:<repo_id>' or a local folder.

    Every split has an `image` column (PIL on access) and a `label` ClassLabel column; IDC also keeps `patient_id`,
    `x`, `y` when known. Carved splits are seeded and stratified; `val_fraction` / `test_fraction` are fractions of
    all examples (of all patients for IDC). `split` is 'seeded' or a published patient split of the data set
    ('janowczyk' for IDC: see `dataset_specs`). `cache_dir` is handed to `datasets.load_dataset`, and holds the
    check of an IDC folder's files under `cache_dir`/timm_patchconvnet (default: `decode_cache.cache_root()`).
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f'--val-fraction {val_fraction} and --test-fraction {test_fraction} must each lie in (0, 1) and sum to '
            'less than 1, leaving examples to train on.')
    root = _existing_folder(data_dir, '--data-dir') if data_dir is not None else None
    try:
        if split != SEEDED and (dataset not in DATASETS or split not in DATASETS[dataset].published_splits):
            raise DataError(f'--split {split} is not a published split of --dataset {dataset}; published splits: '
                            + (', '.join(f'{name} ({spec.name})' for spec in DATASETS.values()
                                         for name in spec.published_splits) or 'none') + '.')
        if dataset in DATASETS:
            spec = DATASETS[dataset]
            if spec.reader == 'idc':
                splits = _load_idc(spec, root, hub_id, seed, val_fraction, test_fraction, cache_dir, split,
                                   allow_missing_patients)
            else:
                reader = {'digits': _load_digits, 'hub': _load_hub_layout}[spec.reader]
                splits = reader(spec, root, hub_id, seed, val_fraction, test_fraction, cache_dir)
        elif dataset.startswith('hub:'):
            repo_id = dataset[len('hub:'):]
            splits = _load_generic(_load_hub(repo_id, None, cache_dir), repo_id, seed, val_fraction, test_fraction)
        elif Path(dataset).expanduser().is_dir():
            splits = _load_folder(_existing_folder(dataset, '--dataset'), seed, val_fraction, test_fraction,
                                  cache_dir)
        else:
            raise DataError(f'Unknown --dataset {dataset!r}: use {VALID_DATASETS}.')
    except SplitError as err:
        raise DataError(str(err)) from err
    for name in SPLIT_NAMES:
        _check_two_classes(name, getattr(splits, name), splits.label_names)
    return splits


def build_transform(kind: str, data_config: Dict[str, Any], train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The model's preprocessing (exact resize to `input_size`, normalisation), after the augmentation of the data
    set `kind` (its DatasetSpec's; 'generic' for any other source) when training. `data_config` is timm's resolved
    data config of the model."""
    if kind not in DATASETS and kind != GENERIC.name:
        raise DataError(f'Unknown data kind {kind!r}: use one of {", ".join([*DATASETS, GENERIC.name])}.')
    augmentation = dataset_spec(kind).augmentation.pil_transforms() if train else []
    return transforms.Compose([*augmentation, *exact_size_transform(data_config).transforms])


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


def _load_digits(
        spec: DatasetSpec, root: Optional[Path], hub_id: Optional[str], seed: int, val_fraction: float,
        test_fraction: float, cache_dir: Optional[str],
) -> DataSplits:
    if root is not None or hub_id is not None:
        raise DataError(f"--dataset {spec.name} is bundled with scikit-learn: it takes no --data-dir or --hub-id.")
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # the bundled values are 0..16
    size = (spec.img_size, spec.img_size)
    images = [Image.fromarray(p).resize(size, Image.Resampling.BILINEAR).convert('RGB') for p in pixels]
    label_names = list(spec.label_names)
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=label_names))
    data = datasets.Dataset.from_dict({'image': images, 'label': digits.target.tolist()}, features=features)
    train, validation, test, protocol = three_way_split(data, seed, val_fraction, test_fraction)
    return DataSplits(train, validation, test, label_names, spec.name, 'sklearn.datasets.load_digits', protocol)


def _load_hub_layout(
        spec: DatasetSpec, root: Optional[Path], hub_id: Optional[str], seed: int, val_fraction: float,
        test_fraction: float, cache_dir: Optional[str],
) -> DataSplits:
    """A data set from the Hub (`hub_id`, else the spec's), or a local copy of its Hub parquet files (`root`)."""
    if root is None:
        source_name = hub_id or spec.hub_id
        source = _load_hub(source_name, spec.hub_config, cache_dir)
    else:
        source_name = str(root)
        subfolder = root / spec.hub_config if spec.hub_config else root
        data_files = {split: sorted(str(p) for p in subfolder.glob(f'{split}-*.parquet'))
                      for split in ('train', 'test')}
        if not all(data_files.values()):
            raise DataError(
                f'--data-dir {root} does not have the Hub layout of {spec.title}: expected {spec.local_layout} (e.g. '
                f'`hf download {spec.hub_id} --repo-type dataset --local-dir {root}`).')
        source = datasets.load_dataset('parquet', data_files=data_files, cache_dir=cache_dir)
    source = _standardise(source)
    if spec.label_names is not None and _label_names(source['train']) != list(spec.label_names):
        raise DataError(f'{source_name} is not {spec.title}: its labels are {_label_names(source["train"])}, not '
                        f'{list(spec.label_names)}.')
    train, validation, stratified = hold_out(source['train'], val_fraction, seed)
    protocol = (f"The source's own train/test splits; validation is a seeded (seed={seed}) {val_fraction:.0%} of "
                f'train, {stratification(stratified)} (test_fraction unused).')
    return DataSplits(train, validation, source['test'], _label_names(train), spec.name, source_name, protocol)


def load_idc_patches(data_dir: Optional[str] = None, hub_id: Optional[str] = None,
                     cache_dir: Optional[str] = None) -> datasets.Dataset:
    """Every IDC patch of a source, unsplit: `image`, `label`, and `patient_id`, `x`, `y` where the source has them
    (the Kaggle folder always does). For whole-slide maps (`slides.py`) and the Hub export."""
    root = _existing_folder(data_dir, '--data-dir') if data_dir is not None else None
    source, _, _ = _read_idc_source(DATASETS['idc'], root, hub_id, cache_dir)
    return _pool(source)


def _read_idc_source(
        spec: DatasetSpec, root: Optional[Path], hub_id: Optional[str], cache_dir: Optional[str],
) -> Tuple[datasets.DatasetDict, str, '_IdcFolder']:
    """The IDC source as read (its own splits, standardised columns and labels), its name, and what reading the
    Kaggle folder skipped and ignored."""
    kaggle = _IdcFolder(None, 0, 0)
    label_names = list(spec.label_names)
    if root is not None and not _has_parquet(root):
        kaggle = _read_idc_kaggle_folder(root, cache_root(cache_dir))
        source, source_name = datasets.DatasetDict(train=kaggle.data), str(root)
    elif root is not None:
        source, source_name = _load_local_folder(root, cache_dir), str(root)
    elif hub_id is not None or spec.project_hub_copy_published:
        source_name = hub_id or f'{HUB_NAMESPACE}/{spec.project_hub_copy}'
        source = _load_hub(source_name, None, cache_dir)
    else:
        raise DataError(
            f"--dataset {spec.name} reads this project's Hub copy {HUB_NAMESPACE}/{spec.project_hub_copy} by default, "
            f'which is not published yet: pass --data-dir ({spec.local_layout}) or --hub-id (a Hub copy with '
            "patient_id, e.g. one pushed with patchconvnet-push-idc; 'dbzadnen/breast-histopathology-images' has "
            'none, so its split is patch-level).')
    source = _standardise(source, extra_features=IDC_EXTRA_FEATURES)
    if _label_names(source['train']) != label_names:
        if len(_label_names(source['train'])) != 2:
            raise DataError(f'IDC labels must be 2 classes (negative, positive), got {_label_names(source["train"])}.')
        source = source.cast_column('label', datasets.ClassLabel(names=label_names))
    return source, source_name, kaggle


def _load_idc(
        spec: DatasetSpec, root: Optional[Path], hub_id: Optional[str], seed: int, val_fraction: float,
        test_fraction: float, cache_dir: Optional[str], split: str, allow_missing_patients: bool,
) -> DataSplits:
    source, source_name, kaggle = _read_idc_source(spec, root, hub_id, cache_dir)
    label_names = list(spec.label_names)
    if 'patient_id' in source['train'].column_names:
        if split == SEEDED:
            train, validation, test, protocol = split_by_patient(_pool(source), seed, val_fraction, test_fraction)
        else:
            train, validation, test, protocol = published_patient_split(
                _pool(source), published_split(spec, split), split, allow_missing_patients)
        if len(source) > 1:
            protocol += f" The source's own {'/'.join(source)} splits were pooled first."
        if kaggle.ignored:  # in the protocol too, so that metrics.json says what was left out
            protocol += f' {_ignored_note(kaggle.ignored)}'
        return DataSplits(train, validation, test, label_names, spec.name, source_name, protocol, True,
                          kaggle.skipped, kaggle.ignored,
                          'seeded patient split' if split == SEEDED else 'published split', kaggle.listing_key)
    if split != SEEDED:
        raise DataError(f'--split {split} splits by patient, and {source_name} has no patient_id column: use the '
                        'Kaggle folder or a copy with patient ids.')

    (train, validation, test), protocol = _complete_splits(source, seed, val_fraction, test_fraction)
    warning = (f'PATCH-LEVEL split: {source_name} has no patient ids, so patches of the same patient may leak '
               'between train and test, inflating scores.')
    _logger.warning(warning)
    return DataSplits(train, validation, test, label_names, spec.name, source_name, f'{warning} {protocol}', False,
                      kaggle.skipped, protocol_kind='patch-level', source_key=kaggle.listing_key)


def read_idc_kaggle_folder(folder: str) -> Tuple[datasets.Dataset, int]:
    """Every patch of the Kaggle IDC folder once (`image` as a file path, `label`, `patient_id`, `x`, `y`), unsplit,
    and the number of unreadable files left out: the reading `load_splits('idc', data_dir=folder)` starts from."""
    kaggle = _read_idc_kaggle_folder(_existing_folder(folder, 'the IDC folder'))
    return kaggle.data, kaggle.skipped


class _IdcFolder(NamedTuple):
    data: Optional[datasets.Dataset]
    skipped: int  # unreadable patch files
    ignored: int  # files whose names are not IDC patch names
    listing_key: str = ''  # a hash of the folder's listing (names, sizes, modification times)


def _read_idc_kaggle_folder(root: Path, cache: Optional[Path] = None) -> _IdcFolder:
    """The Kaggle folder `<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png`, each file name once.

    Every patch is decoded once to find the unreadable ones; the result is kept in `cache` (default `cache_root()`)
    under the folder's listing key, so a later run over the unchanged folder only lists it."""
    listing = _listing(root)
    patches: Dict[str, str] = {}  # file name -> path relative to root (strings: Path objects cost seconds here)
    ignored: List[str] = []
    duplicates = 0
    # the original patient folders before the archive's duplicate copy, so that the original is the one kept
    copy = IDC_DUPLICATE_COPY + os.sep
    for path in sorted(listing, key=lambda p: (p.startswith(copy) or f'{os.sep}{copy}' in p, p)):
        folder, name = os.path.split(path)
        match = IDC_PATCH_NAME.fullmatch(name)
        if match is None:
            ignored.append(path)
            continue
        if name in patches:
            duplicates += 1
            continue
        if os.path.basename(folder) != match['label']:
            raise DataError(f'{root / path} says class{match["label"]} but lies in folder '
                            f'{os.path.basename(folder)!r}: the class folder (0 or 1) and the file name must agree.')
        patches[name] = path
    if not patches:
        raise DataError(f'No IDC patches in {root}: expected the Kaggle layout '
                        '<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png.')
    if duplicates:
        _logger.warning('%d IDC files appear twice (e.g. the archive\'s copy under %s/); each is used once.',
                        duplicates, IDC_DUPLICATE_COPY)

    if ignored:  # a renamed (.PNG, class2) or stray file is data the user may think is used: say so
        _logger.warning('%s E.g. %s.', _ignored_note(len(ignored)), root / ignored[0])
    listing_key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:20]
    paths = list(patches.values())
    unreadable = set(_unreadable(root, paths, listing_key, cache_root() if cache is None else cache))
    _warn_unreadable([root / path for path in sorted(unreadable)], root)
    readable = [path for path in paths if path not in unreadable]
    matches = [IDC_PATCH_NAME.fullmatch(os.path.basename(path)) for path in readable]
    features = datasets.Features(
        image=datasets.Image(), label=datasets.ClassLabel(names=IDC_LABEL_NAMES), **IDC_EXTRA_FEATURES)
    prefix = str(root) + os.sep
    table = pa.table({  # Arrow columns as `features` stores them: from_dict would encode row by row (seconds)
        'image': pa.StructArray.from_arrays(  # paths: decoded lazily, nothing copied
            [pa.nulls(len(readable), pa.binary()), pa.array([prefix + path for path in readable])], ['bytes', 'path']),
        'label': pa.array([int(m['label']) for m in matches], pa.int64()),
        'patient_id': pa.array([m['patient'] for m in matches], pa.string()),
        'x': pa.array([int(m['x']) for m in matches], pa.int32()),
        'y': pa.array([int(m['y']) for m in matches], pa.int32()),
    })
    data = datasets.Dataset(InMemoryTable(table.cast(features.arrow_schema)),
                            info=datasets.DatasetInfo(features=features))
    return _IdcFolder(data, len(unreadable), len(ignored), listing_key)


def _listing(root: Path) -> Dict[str, Tuple[int, int]]:
    """Every file under `root` (its path relative to `root`), sorted, with its size and modification time (ns):
    what says that a folder changed."""
    files: Dict[str, Tuple[int, int]] = {}
    skip = len(str(root)) + 1
    folders = [str(root)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):  # as os.walk: linked folders are not followed
                        folders.append(entry.path)
                    elif entry.is_file():
                        stat = entry.stat()
                        files[entry.path[skip:]] = (stat.st_size, stat.st_mtime_ns)
        except OSError as err:
            _logger.warning('Skipped %s: %s.', folder, err.strerror or err)
    return dict(sorted(files.items()))


def _unreadable(root: Path, paths: Sequence[str], listing_key: str, cache: Path) -> List[str]:
    """The patches (paths relative to `root`) that do not decode: from the cache when this listing was checked
    before, else by decoding each once (then cached; a cache that cannot be written is only a warning)."""
    record = cache / 'idc-folders' / f'{listing_key}.json'
    try:
        saved = json.loads(record.read_text())
        if saved.get('version') == CACHE_VERSION and saved.get('folder') == str(root):
            return saved['unreadable']
    except (OSError, ValueError, KeyError, AttributeError):  # none yet, or damaged: check again
        pass
    _logger.info('Checking that the %d IDC patches of %s decode (once: the result is cached in %s).', len(paths),
                 root, record.parent)
    try:
        ok = readable_files([root / path for path in paths])
    except ImageReadError as err:
        raise DataError(str(err)) from err
    unreadable = [path for path, good in zip(paths, ok) if not good]
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, {'version': CACHE_VERSION, 'folder': str(root), 'unreadable': unreadable})
    except OSError as err:
        _logger.warning('Could not cache the check of %s in %s (%s): the next run checks the files again.', root,
                        record, err)
    return unreadable


def _ignored_note(count: int) -> str:
    return (f'{count} file(s) whose names are not IDC patch names (<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png, '
            'lower case) were ignored.')


def _warn_unreadable(unreadable: Sequence[Union[Path, str]], root: Path) -> None:
    if unreadable:
        _logger.warning('Skipped %d unreadable image file(s) in %s (e.g. %s): each file is decoded once before '
                        'training, and these failed; metrics.json counts them as skipped_images.',
                        len(unreadable), root, unreadable[0])


def _load_folder(
        folder: Path, seed: int, val_fraction: float, test_fraction: float, cache_dir: Optional[str],
) -> DataSplits:
    source = _load_local_folder(folder, cache_dir)
    skipped = 0
    if not _has_parquet(folder):  # image files: a broken one would stop training at its batch, maybe after all epochs
        source, skipped = _without_unreadable_images(source, folder)
    splits = _load_generic(source, str(folder), seed, val_fraction, test_fraction)
    splits.skipped_images = skipped
    return splits


def _without_unreadable_images(source: datasets.DatasetDict, folder: Path) -> Tuple[datasets.DatasetDict, int]:
    """Each split of an imagefolder without the files PIL cannot decode (each decoded once, here), and their count."""
    kept, unreadable = {}, []
    for name, split in source.items():
        files = split.cast_column('image', datasets.Image(decode=False))['image']  # {'path', 'bytes'}, not decoded
        try:
            readable = [open_rgb(f['path'] if f['bytes'] is None else io.BytesIO(f['bytes'])) is not None
                        for f in files]
        except ImageReadError as err:
            raise DataError(str(err)) from err
        unreadable += [f['path'] for f, ok in zip(files, readable) if not ok]
        kept[name] = split if all(readable) else split.select(np.flatnonzero(readable))
    if all(len(split) == 0 for split in kept.values()):
        raise DataError(f'No readable images in {folder}: all {len(unreadable)} image files failed to decode.')
    _warn_unreadable(unreadable, folder)
    return datasets.DatasetDict(kept), len(unreadable)


def _load_generic(
        source: datasets.DatasetDict, source_name: str, seed: int, val_fraction: float, test_fraction: float,
) -> DataSplits:
    source = _standardise(source)
    (train, validation, test), protocol = _complete_splits(source, seed, val_fraction, test_fraction)
    return DataSplits(train, validation, test, _label_names(train), GENERIC.name, source_name, protocol)


def _complete_splits(
        source: datasets.DatasetDict, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset], str]:
    """The source's own splits, with a missing validation or test split carved from train."""
    if all(name in source for name in SPLIT_NAMES):
        return tuple(source[name] for name in SPLIT_NAMES), "The source's own train/validation/test splits."
    if 'train' in source and 'test' in source:
        train, validation, stratified = hold_out(source['train'], val_fraction, seed)
        return (train, validation, source['test']), (
            f"The source's own train/test splits; validation is a seeded (seed={seed}) {val_fraction:.0%} of train, "
            f'{stratification(stratified)}.')
    if 'train' in source and 'validation' in source:
        train, test, stratified = hold_out(source['train'], test_fraction, seed)
        return (train, source['validation'], test), (
            f"The source's own train/validation splits; test is a seeded (seed={seed}) {test_fraction:.0%} of train, "
            f'{stratification(stratified)}.')
    train, validation, test, protocol = three_way_split(_pool(source), seed, val_fraction, test_fraction)
    return (train, validation, test), protocol


def _standardise(
        source: datasets.DatasetDict, extra_features: Optional[Dict[str, datasets.Value]] = None,
) -> datasets.DatasetDict:
    """Columns renamed to `image` and `label` (a ClassLabel shared by all splits), plus the extra ones present."""
    features = next(iter(source.values())).features
    image_column = next((name for name, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None:
        raise DataError(f'No image column (a datasets Image feature) among {dict(features)}.')
    label_column = next((name for name, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    label_column = label_column or next((name for name in ('label', 'labels') if name in features), None)
    if label_column is None:
        raise DataError(f'No label column (a ClassLabel, or a column named label/labels) among {list(features)}: '
                        'a folder of images needs one subfolder per class.')
    source = source.rename_columns({old: new for old, new in ((image_column, 'image'), (label_column, 'label'))
                                    if old != new})
    if not isinstance(features[label_column], datasets.ClassLabel):
        # one ClassLabel over all splits, so that an index means the same class everywhere
        values = sorted(set().union(*(split.unique('label') for split in source.values())))
        source = source.cast_column('label', datasets.Value('string'))
        source = source.cast_column('label', datasets.ClassLabel(names=[str(v) for v in values]))
    extras = {name: f for name, f in (extra_features or {}).items() if name in features}
    for name, feature in extras.items():
        if features[name] != feature:
            source = source.cast_column(name, feature)
    return source.select_columns(['image', 'label', *extras])


def _check_two_classes(split_name: str, split: datasets.Dataset, label_names: Sequence[str]) -> None:
    present = np.unique(column(split, 'label'))
    if len(present) < 2:
        classes = ', '.join(label_names[i] for i in present) or 'none'
        raise DataError(
            f'The {split_name} split has {len(split)} examples of only one class ({classes}): every split needs at '
            'least two classes. Use more data (for IDC, more patients with both classes) or other '
            '--val-fraction/--test-fraction.')


def _label_names(split: datasets.Dataset) -> List[str]:
    return list(split.features['label'].names)


def _pool(source: datasets.DatasetDict) -> datasets.Dataset:
    return datasets.concatenate_datasets(list(source.values()))


def _has_parquet(folder: Path) -> bool:
    return next(folder.rglob('*.parquet'), None) is not None


def _existing_folder(path: str, flag: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f'{flag} {folder} does not exist (or is not a folder).')
    if next(folder.iterdir(), None) is None:
        raise DataError(f'{flag} {folder} is empty.')
    return folder


def _load_local_folder(folder: Path, cache_dir: Optional[str]) -> datasets.DatasetDict:
    """Parquet files, or else images in one subfolder per class (datasets' imagefolder)."""
    builder = 'parquet' if _has_parquet(folder) else 'imagefolder'
    try:
        return datasets.load_dataset(builder, data_dir=str(folder), cache_dir=cache_dir)
    except (ValueError, FileNotFoundError) as error:
        raise DataError(f'Could not read {folder} as {builder} data ({error}): expected parquet files, or images '
                        'in one subfolder per class.') from error


def _load_hub(repo_id: str, config: Optional[str], cache_dir: Optional[str]) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(repo_id, config, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError) as error:
        raise DataError(f'Could not load {repo_id!r} from the Hugging Face Hub ({error}): check the id and the '
                        'network, or pass --data-dir with a local copy.') from error
