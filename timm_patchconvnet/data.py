"""Data for training PatchConvNet: seeded train/validation/test splits as Hugging Face `datasets`, and transforms.

`load_splits` reads scikit-learn's digits, CIFAR-10 (Hub or a local copy of its parquet files), the Kaggle
breast histopathology (IDC) patches split by patient, or any image classification source `datasets` can read.
"""
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms

from .config import CIFAR10_HUB_ID
from .images import to_rgb

__all__ = ['DataError', 'DataSplits', 'ImageClassificationDataset', 'build_transform', 'load_splits',
           'read_idc_kaggle_folder']

_logger = logging.getLogger(__name__)

VALID_DATASETS = "'digits', 'cifar10', 'idc', 'hub:<repo_id>' or the path to a local folder"
KINDS = ('digits', 'cifar10', 'idc', 'generic')
IDC_LABEL_NAMES = ['idc_negative', 'idc_positive']
IDC_PATCH_NAME = re.compile(r'(?P<patient>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png')
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
    kind: str  # 'digits' | 'cifar10' | 'idc' | 'generic': selects the augmentation
    source: str  # 'sklearn.datasets.load_digits', a folder path or a Hub id
    protocol: str  # one sentence on how the splits were made, for metrics.json
    patient_level: bool = False  # True only when split by patient (no patient in two splits)
    skipped_images: int = 0  # unreadable image files left out
    ignored_files: int = 0  # files of an IDC folder whose names are not IDC patch names (also said in `protocol`)


def load_splits(
        dataset: str,
        *,
        data_dir: Optional[str] = None,
        hub_id: Optional[str] = None,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        cache_dir: Optional[str] = None,
) -> DataSplits:
    """Train/validation/test splits of `dataset`: 'digits', 'cifar10', 'idc', 'hub:<repo_id>' or a local folder.

    Every split has an `image` column (PIL on access) and a `label` ClassLabel column; IDC also keeps `patient_id`,
    `x`, `y` when known. Carved splits are seeded and stratified; `val_fraction` / `test_fraction` are fractions of
    all examples (of all patients for IDC). `cache_dir` is handed to `datasets.load_dataset`.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f'val_fraction={val_fraction} and test_fraction={test_fraction} must each lie in (0, 1) and sum to '
            'less than 1, leaving examples to train on.')
    root = _existing_folder(data_dir) if data_dir is not None else None
    if dataset == 'digits':
        splits = _load_digits(seed, val_fraction, test_fraction)
    elif dataset == 'cifar10':
        splits = _load_cifar10(root, hub_id, seed, val_fraction, cache_dir)
    elif dataset == 'idc':
        splits = _load_idc(root, hub_id, seed, val_fraction, test_fraction, cache_dir)
    elif dataset.startswith('hub:'):
        repo_id = dataset[len('hub:'):]
        splits = _load_generic(_load_hub(repo_id, None, cache_dir), repo_id, seed, val_fraction, test_fraction)
    elif Path(dataset).expanduser().is_dir():
        splits = _load_folder(_existing_folder(dataset), seed, val_fraction, test_fraction, cache_dir)
    else:
        raise DataError(f'Unknown dataset {dataset!r}: use {VALID_DATASETS}.')
    for name in SPLIT_NAMES:
        _check_two_classes(name, getattr(splits, name), splits.label_names)
    return splits


def build_transform(kind: str, data_config: Dict[str, Any], train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The model's preprocessing (exact resize to `input_size`, normalisation), after the seed paper's
    augmentation for `kind` when training. `data_config` is timm's resolved data config of the model."""
    if kind not in KINDS:
        raise DataError(f'Unknown data kind {kind!r}: use one of {", ".join(KINDS)}.')
    _, height, width = data_config['input_size']
    return transforms.Compose([
        *(_train_augmentations(kind) if train else []),
        # an exact size, not timm's resize-and-crop: IDC edge patches are not square and digits are tiny
        transforms.Resize((height, width), interpolation=str_to_interp_mode(data_config['interpolation'])),
        transforms.ToTensor(),
        transforms.Normalize(data_config['mean'], data_config['std']),
    ])


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


def _train_augmentations(kind: str) -> List[Callable]:
    if kind == 'cifar10':
        return [
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(10),
            transforms.RandomAffine(degrees=0, scale=(0.9, 1.1), shear=10),
            transforms.ColorJitter(0.2, 0.2, 0.2),
        ]
    if kind == 'idc':  # tissue has no orientation; stain colour carries the diagnosis, so colours stay untouched
        return [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip(), transforms.RandomRotation(10)]
    if kind == 'digits':  # no flips: digits are not mirror-symmetric
        return [transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))]
    return [transforms.RandomHorizontalFlip()]


def _load_digits(seed: int, val_fraction: float, test_fraction: float) -> DataSplits:
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # the bundled values are 0..16
    images = [Image.fromarray(p).resize((32, 32), Image.Resampling.BILINEAR).convert('RGB') for p in pixels]
    label_names = [str(d) for d in range(10)]
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=label_names))
    data = datasets.Dataset.from_dict({'image': images, 'label': digits.target.tolist()}, features=features)
    train, validation, test, protocol = _carve_three_ways(data, seed, val_fraction, test_fraction)
    return DataSplits(train, validation, test, label_names, 'digits', 'sklearn.datasets.load_digits', protocol)


def _load_cifar10(
        root: Optional[Path], hub_id: Optional[str], seed: int, val_fraction: float, cache_dir: Optional[str],
) -> DataSplits:
    if root is None:
        source_name = hub_id or CIFAR10_HUB_ID
        source = _load_hub(source_name, 'plain_text', cache_dir)
    else:
        source_name = str(root)
        data_files = {split: sorted(str(p) for p in (root / 'plain_text').glob(f'{split}-*.parquet'))
                      for split in ('train', 'test')}
        if not all(data_files.values()):
            raise DataError(
                f'{root} does not have the Hub layout of CIFAR-10: expected plain_text/train-*.parquet and '
                f'plain_text/test-*.parquet (e.g. `hf download {CIFAR10_HUB_ID} --repo-type dataset '
                f'--local-dir {root}`).')
        source = datasets.load_dataset('parquet', data_files=data_files, cache_dir=cache_dir)
    source = _standardise(source)
    train, validation, stratified = _carve(source['train'], val_fraction, seed)
    protocol = (f"The source's own train/test splits; validation is a seeded (seed={seed}) {val_fraction:.0%} of "
                f'train, {_stratification(stratified)} (test_fraction unused).')
    return DataSplits(train, validation, source['test'], _label_names(train), 'cifar10', source_name, protocol)


def _load_idc(
        root: Optional[Path], hub_id: Optional[str], seed: int, val_fraction: float, test_fraction: float,
        cache_dir: Optional[str],
) -> DataSplits:
    kaggle = _IdcFolder(None, 0, 0)
    if root is not None and not _has_parquet(root):
        kaggle = _read_idc_kaggle_folder(root)
        source, source_name = datasets.DatasetDict(train=kaggle.data), str(root)
    elif root is not None:
        source, source_name = _load_local_folder(root, cache_dir), str(root)
    elif hub_id is not None:
        source, source_name = _load_hub(hub_id, None, cache_dir), hub_id
    else:
        raise DataError(
            "'idc' needs data_dir (the Kaggle 'Breast Histopathology Images' folder, or a folder of parquet files) "
            "or hub_id (e.g. 'dbzadnen/breast-histopathology-images').")
    source = _standardise(source, extra_features=IDC_EXTRA_FEATURES)
    if _label_names(source['train']) != IDC_LABEL_NAMES:
        if len(_label_names(source['train'])) != 2:
            raise DataError(f'IDC labels must be 2 classes (negative, positive), got {_label_names(source["train"])}.')
        source = source.cast_column('label', datasets.ClassLabel(names=IDC_LABEL_NAMES))

    if 'patient_id' in source['train'].column_names:
        train, validation, test, protocol = _split_by_patient(_pool(source), seed, val_fraction, test_fraction)
        if len(source) > 1:
            protocol += f" The source's own {'/'.join(source)} splits were pooled first."
        if kaggle.ignored:  # in the protocol too, so that metrics.json says what was left out
            protocol += f' {_ignored_note(kaggle.ignored)}'
        return DataSplits(train, validation, test, IDC_LABEL_NAMES, 'idc', source_name, protocol, True,
                          kaggle.skipped, kaggle.ignored)

    (train, validation, test), protocol = _complete_splits(source, seed, val_fraction, test_fraction)
    warning = (f'PATCH-LEVEL split: {source_name} has no patient ids, so patches of the same patient may leak '
               'between train and test, inflating scores.')
    _logger.warning(warning)
    return DataSplits(train, validation, test, IDC_LABEL_NAMES, 'idc', source_name, f'{warning} {protocol}', False,
                      kaggle.skipped)


def read_idc_kaggle_folder(folder: str) -> Tuple[datasets.Dataset, int]:
    """Every patch of the Kaggle IDC folder once (`image` as a file path, `label`, `patient_id`, `x`, `y`), unsplit,
    and the number of unreadable files left out: the reading `load_splits('idc', data_dir=folder)` starts from."""
    kaggle = _read_idc_kaggle_folder(_existing_folder(folder))
    return kaggle.data, kaggle.skipped


class _IdcFolder(NamedTuple):
    data: Optional[datasets.Dataset]
    skipped: int  # unreadable patch files
    ignored: int  # files whose names are not IDC patch names


def _read_idc_kaggle_folder(root: Path) -> _IdcFolder:
    """The Kaggle folder `<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png`, each file name once."""
    patches: Dict[str, Path] = {}
    ignored: List[Path] = []
    duplicates = 0
    # the original patient folders before the archive's duplicate copy, so that the original is the one kept
    for path in sorted(_files_under(root), key=lambda p: (IDC_DUPLICATE_COPY in p.parts, p)):
        match = IDC_PATCH_NAME.fullmatch(path.name)
        if match is None:
            ignored.append(path)
            continue
        if path.name in patches:
            duplicates += 1
            continue
        if path.parent.name != match['label']:
            raise DataError(f'{path} says class{match["label"]} but lies in folder {path.parent.name!r}: the class '
                            'folder (0 or 1) and the file name must agree.')
        patches[path.name] = path
    if not patches:
        raise DataError(f'No IDC patches in {root}: expected the Kaggle layout '
                        '<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png.')
    if duplicates:
        _logger.warning('%d IDC files appear twice (e.g. the archive\'s copy under %s/); each is used once.',
                        duplicates, IDC_DUPLICATE_COPY)

    if ignored:  # a renamed (.PNG, class2) or stray file is data the user may think is used: say so
        _logger.warning('%s E.g. %s.', _ignored_note(len(ignored)), ignored[0])
    decodes = {path: _decodes(path) for path in patches.values()}
    readable = [path for path, ok in decodes.items() if ok]
    _warn_unreadable([path for path, ok in decodes.items() if not ok], root)
    matches = [IDC_PATCH_NAME.fullmatch(path.name) for path in readable]
    features = datasets.Features(
        image=datasets.Image(), label=datasets.ClassLabel(names=IDC_LABEL_NAMES), **IDC_EXTRA_FEATURES)
    data = datasets.Dataset.from_dict({
        'image': [str(path) for path in readable],  # stored as paths: decoded lazily, nothing copied
        'label': [int(m['label']) for m in matches],
        'patient_id': [m['patient'] for m in matches],
        'x': [int(m['x']) for m in matches],
        'y': [int(m['y']) for m in matches],
    }, features=features)
    return _IdcFolder(data, len(patches) - len(readable), len(ignored))


def _files_under(root: Path) -> List[Path]:
    return [Path(folder, name) for folder, _, names in os.walk(root) for name in names]


def _ignored_note(count: int) -> str:
    return (f'{count} file(s) whose names are not IDC patch names (<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png, '
            'lower case) were ignored.')


def _warn_unreadable(unreadable: Sequence[Union[Path, str]], root: Path) -> None:
    if unreadable:
        _logger.warning('Skipped %d unreadable image file(s) in %s (e.g. %s): each file is decoded once before '
                        'training, and these failed; metrics.json counts them as skipped_images.',
                        len(unreadable), root, unreadable[0])


def _decodes(file: Union[Path, str, BinaryIO]) -> bool:
    """Whether PIL decodes the image file to a non-empty image that `to_rgb` can convert, as training will."""
    try:
        with Image.open(file) as image:
            image.load()
            to_rgb(image)  # what training does to it: raises for NaN pixels, which would train on an arbitrary gray
            return image.width > 0 and image.height > 0
    # PIL reports broken files with any of these; a header declaring a huge image is a DecompressionBombError
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _split_by_patient(
        data: datasets.Dataset, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, str]:
    patients, patient_of_row = np.unique(np.asarray(data['patient_id']), return_inverse=True)
    if len(patients) < 3:
        raise DataError(f'A patient-level split needs at least 3 patients, found {len(patients)}: use more data.')
    labels = np.asarray(data['label'])
    positive_share = np.bincount(patient_of_row, weights=labels) / np.bincount(patient_of_row)
    # quantile bins of the positive share: each split gets patients with few and with many positive patches
    share_bins = np.digitize(positive_share, np.unique(np.quantile(positive_share, [0.25, 0.5, 0.75])))
    train, validation, test, stratified = _three_way_indices(share_bins, seed, val_fraction, test_fraction)
    rows = [np.flatnonzero(np.isin(patient_of_row, part)) for part in (train, validation, test)]
    stratification = ("stratified by each patient's share of positive patches" if stratified
                      else 'unstratified (too few patients per positive-share bin)')
    protocol = (f'Patient-level split (seed={seed}) of {len(patients)} patients: {test_fraction:.0%} of patients '
                f'test, {val_fraction:.0%} validation, the rest train, {stratification}; no patient is in two '
                'splits.')
    return (*(data.select(r) for r in rows), protocol)


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
        readable = [_decodes(f['path'] if f['bytes'] is None else io.BytesIO(f['bytes'])) for f in files]
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
    return DataSplits(train, validation, test, _label_names(train), 'generic', source_name, protocol)


def _complete_splits(
        source: datasets.DatasetDict, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset], str]:
    """The source's own splits, with a missing validation or test split carved from train."""
    if all(name in source for name in SPLIT_NAMES):
        return tuple(source[name] for name in SPLIT_NAMES), "The source's own train/validation/test splits."
    if 'train' in source and 'test' in source:
        train, validation, stratified = _carve(source['train'], val_fraction, seed)
        return (train, validation, source['test']), (
            f"The source's own train/test splits; validation is a seeded (seed={seed}) {val_fraction:.0%} of train, "
            f'{_stratification(stratified)}.')
    if 'train' in source and 'validation' in source:
        train, test, stratified = _carve(source['train'], test_fraction, seed)
        return (train, source['validation'], test), (
            f"The source's own train/validation splits; test is a seeded (seed={seed}) {test_fraction:.0%} of train, "
            f'{_stratification(stratified)}.')
    train, validation, test, protocol = _carve_three_ways(_pool(source), seed, val_fraction, test_fraction)
    return (train, validation, test), protocol


def _carve_three_ways(
        data: datasets.Dataset, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, str]:
    train, validation, test, stratified = _three_way_indices(
        np.asarray(data['label']), seed, val_fraction, test_fraction)
    protocol = (f'Seeded (seed={seed}) split of all {len(data)} examples, {_stratification(stratified)}: '
                f'{test_fraction:.0%} test, {val_fraction:.0%} validation, the rest train.')
    return data.select(train), data.select(validation), data.select(test), protocol


def _carve(data: datasets.Dataset, fraction: float, seed: int) -> Tuple[datasets.Dataset, datasets.Dataset, bool]:
    kept, carved, stratified = _carve_indices(np.asarray(data['label']), fraction, seed)
    return data.select(kept), data.select(carved), stratified


def _three_way_indices(
        strata: np.ndarray, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Indices of train, validation (val_fraction of all) and test (test_fraction of all), and if stratified."""
    rest, test, test_stratified = _carve_indices(strata, test_fraction, seed)
    train, validation, val_stratified = _carve_indices(strata[rest], val_fraction / (1 - test_fraction), seed)
    return rest[train], rest[validation], test, test_stratified and val_stratified


def _carve_indices(strata: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Seeded split of range(len(strata)) into kept and carved (`fraction` of them) indices, stratified by
    `strata` where scikit-learn can (every stratum twice, each side big enough to hold one of each)."""
    n = len(strata)
    if n < 2:
        raise DataError(f'Only {n} example(s) or patient(s) to split: use more data.')
    n_carved = min(max(round(fraction * n), 1), n - 1)
    counts = np.unique(strata, return_counts=True)[1]
    stratified = bool(counts.min() >= 2 and len(counts) <= min(n_carved, n - n_carved))
    kept, carved = train_test_split(
        np.arange(n), test_size=n_carved, random_state=seed, stratify=strata if stratified else None)
    return np.sort(kept), np.sort(carved), stratified


def _stratification(stratified: bool) -> str:
    return 'stratified by label' if stratified else 'unstratified (a class is too small to stratify)'


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
    present = np.unique(np.asarray(split['label']))
    if len(present) < 2:
        classes = ', '.join(label_names[i] for i in present) or 'none'
        raise DataError(
            f'The {split_name} split has {len(split)} examples of only one class ({classes}): every split needs at '
            'least two classes. Use more data (for IDC, more patients with both classes) or other '
            'val_fraction/test_fraction.')


def _label_names(split: datasets.Dataset) -> List[str]:
    return list(split.features['label'].names)


def _pool(source: datasets.DatasetDict) -> datasets.Dataset:
    return datasets.concatenate_datasets(list(source.values()))


def _has_parquet(folder: Path) -> bool:
    return next(folder.rglob('*.parquet'), None) is not None


def _existing_folder(path: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f'Data folder {folder} does not exist (or is not a folder).')
    if next(folder.iterdir(), None) is None:
        raise DataError(f'Data folder {folder} is empty.')
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
                        'network, or pass data_dir= with a local copy.') from error
