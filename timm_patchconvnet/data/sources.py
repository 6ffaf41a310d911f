"""What the readers share: sources read as `datasets` (the Hub, local parquet or image folders), their columns made
`image` and `label`, unreadable images left out, and a source's own splits completed into three."""
import io
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import datasets
import numpy as np

from ..dataset_specs import SPLIT_NAMES
from .decode_cache import ImageReadError, open_rgb
from .reader import DataError, LeftOut
from .splits import hold_out, stratification, three_way_split

__all__ = ['complete_splits', 'existing_folder', 'has_parquet', 'label_names_of', 'load_hub', 'load_local_folder',
           'pool', 'standardise', 'warn_left_out', 'without_unreadable_images']

_logger = logging.getLogger(__name__)

ThreeSplits = Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]


def existing_folder(path: str, flag: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f'{flag} {folder} does not exist (or is not a folder).')
    if next(folder.iterdir(), None) is None:
        raise DataError(f'{flag} {folder} is empty.')
    return folder


def has_parquet(folder: Path) -> bool:
    return next(folder.rglob('*.parquet'), None) is not None


def load_local_folder(folder: Path, cache_dir: Optional[str]) -> datasets.DatasetDict:
    """Parquet files, or else images in one subfolder per class (datasets' imagefolder)."""
    builder = 'parquet' if has_parquet(folder) else 'imagefolder'
    try:
        return datasets.load_dataset(builder, data_dir=str(folder), cache_dir=cache_dir)
    except (ValueError, FileNotFoundError) as error:
        raise DataError(f'Could not read {folder} as {builder} data ({error}): expected parquet files, or images '
                        'in one subfolder per class.') from error


def load_hub(repo_id: str, config: Optional[str], cache_dir: Optional[str]) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(repo_id, config, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError) as error:
        raise DataError(f'Could not load {repo_id!r} from the Hugging Face Hub ({error}): check the id and the '
                        'network, or pass --data-dir with a local copy.') from error


def standardise(
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


def label_names_of(split: datasets.Dataset) -> List[str]:
    return list(split.features['label'].names)


def pool(source: datasets.DatasetDict) -> datasets.Dataset:
    return datasets.concatenate_datasets(list(source.values()))


def complete_splits(
        source: datasets.DatasetDict, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[ThreeSplits, str]:
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
    train, validation, test, protocol = three_way_split(pool(source), seed, val_fraction, test_fraction)
    return (train, validation, test), protocol


def without_unreadable_images(source: datasets.DatasetDict, folder: Path) -> Tuple[datasets.DatasetDict, LeftOut]:
    """Each split of an imagefolder without the files PIL cannot decode (each decoded once, here), and what was left
    out: those files, and class folders without an image (their class would vanish from the data unsaid)."""
    kept, unreadable, class_folders = {}, [], set()
    for name, split in source.items():
        files = split.cast_column('image', datasets.Image(decode=False))['image']  # {'path', 'bytes'}, not decoded
        try:
            readable = [open_rgb(f['path'] if f['bytes'] is None else io.BytesIO(f['bytes'])) is not None
                        for f in files]
        except ImageReadError as err:
            raise DataError(str(err)) from err
        unreadable += [f['path'] for f, ok in zip(files, readable) if not ok]
        class_folders |= {Path(f['path']).parent for f, ok in zip(files, readable) if ok and f['path']}
        kept[name] = split if all(readable) else split.select(np.flatnonzero(readable))
    if all(len(split) == 0 for split in kept.values()):
        raise DataError(f'No readable images in {folder}: all {len(unreadable)} image files failed to decode.')
    left_out = LeftOut()
    left_out.add('skipped_images', unreadable)
    # a class folder is any sibling of one that holds images: those without any are empty classes
    parents = {c.parent for c in class_folders if c.parent.is_relative_to(folder)}
    empty = sorted({str(d.relative_to(folder)) for parent in parents for d in parent.iterdir()
                    if d.is_dir() and not d.name.startswith('.')} -
                   {str(c.relative_to(folder)) for c in class_folders if c.is_relative_to(folder)})
    left_out.add('empty_classes', empty)
    return datasets.DatasetDict(kept), left_out


def warn_left_out(left_out: LeftOut, source: str) -> None:
    """The one line on what reading left out of `source` (metrics.json records the counts)."""
    summary = left_out.summary(source)
    if summary:
        _logger.warning(summary)
