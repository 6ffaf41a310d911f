"""What the readers share: sources read as `datasets` (the Hub, local parquet or image folders), their columns made
`image` and `label`, unreadable images left out, and a source's own splits completed into three."""
import io
import logging
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple, Union

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..dataset_specs import SPLIT_NAMES
from ..errors import one_line
from .decode_cache import ImageReadError, readable_files
from .reader import DataError, LeftOut
from .splits import hold_out, stratification, three_way_split

__all__ = ['complete_splits', 'existing_folder', 'has_parquet', 'label_names_of', 'load_hub', 'load_local_folder',
           'pool', 'standardise', 'warn_left_out', 'without_unreadable_images']

_logger = logging.getLogger(__name__)

ThreeSplits = Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]
CHECK_BATCH = 4096  # images decoded per batch when a source is checked up front


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
    _refuse_nulls(source, 'label')
    if not isinstance(features[label_column], datasets.ClassLabel):
        # one ClassLabel over all splits, so that an index means the same class everywhere
        values = sorted(set().union(*(split.unique('label') for split in source.values())))
        source = source.cast_column('label', datasets.Value('string'))
        source = source.cast_column('label', datasets.ClassLabel(names=[str(v) for v in values]))
    _check_label_range(source)
    extras = {name: f for name, f in (extra_features or {}).items() if name in features}
    for name, feature in extras.items():
        _refuse_nulls(source, name)
        if features[name] != feature:
            try:
                source = source.cast_column(name, feature)
            except (pa.ArrowInvalid, ValueError, TypeError) as err:  # 'abc' as a coordinate, 10^12 as an int32
                raise DataError(f'The {name} column cannot be read as {feature.dtype}: {one_line(err, 200)}') from err
    return source.select_columns(['image', 'label', *extras])


def _refuse_nulls(source: datasets.DatasetDict, column_name: str) -> None:
    for split_name, split in source.items():
        missing = split.data.column(column_name).null_count
        if missing:
            raise DataError(f'{missing} of the {len(split)} rows of the {split_name} split have no {column_name} '
                            '(null): every row needs one. Fill or drop those rows.')


def _check_label_range(source: datasets.DatasetDict) -> None:
    """Every label a class index of the ClassLabel: a parquet file can hold -1 (datasets' 'no label') or 99, which
    would fail at the first training step, or be named after the last class (-1 indexes from the end)."""
    names = label_names_of(next(iter(source.values())))
    for split_name, split in source.items():
        labels = split.data.column('label')
        outside = pc.or_(pc.less(labels, 0), pc.greater_equal(labels, len(names)))
        count = pc.sum(outside).as_py() or 0
        if count:
            shown = sorted(set(pc.filter(labels, outside).to_pylist()))[:5]
            no_label = "; -1 is datasets' 'no label'" if -1 in shown else ''
            raise DataError(f'{count} of the {len(split)} rows of the {split_name} split have labels outside the '
                            f'{len(names)} classes 0..{len(names) - 1} ({", ".join(map(str, shown))}{no_label}): fix '
                            'or drop those rows.')


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


def without_unreadable_images(source: datasets.DatasetDict, where: Union[Path, str], folder: Optional[Path] = None,
                              ) -> Tuple[datasets.DatasetDict, LeftOut]:
    """Each split without the images PIL cannot decode (each decoded once, here, on a thread per core), and what was
    left out: image files of a folder and image bytes of parquet or Hub data alike, so that a broken one is found
    before training, not at its batch; for an image `folder` of class folders, also the class folders without an
    image (their class would vanish from the data unsaid). `where`: the source, for messages."""
    kept, unreadable, class_folders = {}, [], set()
    for name, split in source.items():
        readable, broken = _readable_rows(split, name)
        unreadable += broken
        kept[name] = split if readable.all() else split.select(np.flatnonzero(readable))
        if folder is not None:
            files = kept[name].select_columns(['image']).cast_column('image', datasets.Image(decode=False))['image']
            class_folders |= {Path(f['path']).parent for f in files if f['path']}
    if all(len(split) == 0 for split in kept.values()):
        raise DataError(f'No readable images in {where}: all {len(unreadable)} image files failed to decode.')
    left_out = LeftOut()
    left_out.add('skipped_images', unreadable)
    if folder is not None:
        left_out.add('empty_classes', _empty_class_folders(folder, class_folders))
    return datasets.DatasetDict(kept), left_out


def _empty_class_folders(folder: Path, class_folders: Set[Path]) -> List[str]:
    """A class folder is any sibling of one that holds images: those without any are empty classes."""
    parents = {c.parent for c in class_folders if c.parent.is_relative_to(folder)}
    return sorted({str(d.relative_to(folder)) for parent in parents for d in parent.iterdir()
                   if d.is_dir() and not d.name.startswith('.')} -
                  {str(c.relative_to(folder)) for c in class_folders if c.is_relative_to(folder)})


def _readable_rows(split: datasets.Dataset, split_name: str) -> Tuple[np.ndarray, List[str]]:
    """Whether each row's image decodes, read in batches (a Hub split's bytes never all in memory at once), and the
    names of those that do not (their paths, else their rows)."""
    raw = split.select_columns(['image']).cast_column('image', datasets.Image(decode=False))  # {'path', 'bytes'}
    readable, broken = [], []
    for start, batch in zip(range(0, len(raw), CHECK_BATCH), raw.iter(batch_size=CHECK_BATCH)):
        files = batch['image']
        present = [i for i, f in enumerate(files) if f is not None and (f['bytes'] is not None or f['path'])]
        ok = np.zeros(len(files), bool)  # an empty (null) image cell is unreadable too
        try:
            ok[present] = readable_files([files[i]['path'] if files[i]['bytes'] is None else
                                          io.BytesIO(files[i]['bytes']) for i in present])
        except ImageReadError as err:
            raise DataError(str(err)) from err
        broken += [(f and f['path']) or f'{split_name} row {start + i}' for i, (f, good) in enumerate(zip(files, ok))
                   if not good]
        readable.append(ok)
    return (np.concatenate(readable) if readable else np.ones(0, bool)), broken


def warn_left_out(left_out: LeftOut, source: str) -> None:
    """The one line on what reading left out of `source` (metrics.json records the counts)."""
    summary = left_out.summary(source)
    if summary:
        _logger.warning(summary)
