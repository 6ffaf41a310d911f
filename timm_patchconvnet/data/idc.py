"""The Breast Histopathology Images (IDC): the Kaggle folder read once and checked (the check cached by the folder's
listing), parquet or Hub copies with patient ids, and their reader, which splits by patient (seeded or a published
patient split) where the source has patient ids and by patch, with a warning, where it has none."""
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import datasets
import numpy as np
import pyarrow as pa
from datasets.table import InMemoryTable

from ..dataset_specs import DATASETS, IDC_PATCH_NAME, SEEDED, DatasetSpec, published_split
from ..model_folder import atomic_write_json
from ..pretrained import HUB_NAMESPACE
from ..safe_paths import UnsafePathError, link_target, plain_name
from .decode_cache import CACHE_VERSION, ImageReadError, cache_root, readable_files
from .reader import DataError, DataSplits, LeftOut, ReadRequest, Reader, register_reader
from .sources import (
    complete_splits, existing_folder, has_parquet, label_names_of, load_hub, load_local_folder, pool, standardise,
    warn_left_out, without_unreadable_images)
from .splits import column, published_patient_split, split_by_patient

__all__ = ['IDC_LABEL_NAMES', 'IdcReader', 'load_idc_patches', 'read_idc_kaggle_folder']

_logger = logging.getLogger(__name__)

IDC_LABEL_NAMES = list(DATASETS['idc'].label_names)
IDC_DUPLICATE_COPY = 'IDC_regular_ps50_idx5'  # the Kaggle archive repeats every patient folder under this name
IDC_EXTRA_FEATURES = dict(patient_id=datasets.Value('string'), x=datasets.Value('int32'), y=datasets.Value('int32'))
MAX_COORDINATE = 2 ** 31 - 1  # x and y are int32 columns
IDC_LOCAL_LAYOUT = ('the Kaggle folder <patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png, or parquet '
                    'files with patient_id, x and y')  # what a --data-dir holds, for messages


@register_reader('idc')
class IdcReader(Reader):
    """The Kaggle folder (--data-dir), a parquet copy (--data-dir) or a Hub copy (--hub-id, else this project's once
    published): split by patient where the source has patient ids, else by patch (a warning: patients may leak)."""

    def read(self, request: ReadRequest) -> DataSplits:
        source, source_name, kaggle = _read_idc_source(self.spec, request.data_dir, request.hub_id, request.cache_dir)
        if 'patient_id' in source['train'].column_names:
            return self._by_patient(source, source_name, kaggle, request)
        if request.split_protocol != SEEDED:
            raise DataError(f'--split {request.split_protocol} splits by patient, and {source_name} has no patient_id '
                            'column: use the Kaggle folder or a copy with patient ids.')
        (train, validation, test), protocol = complete_splits(
            source, request.seed, request.val_fraction, request.test_fraction)
        warning = (f'PATCH-LEVEL split: {source_name} has no patient ids, so patches of the same patient may leak '
                   'between train and test, inflating scores.')
        _logger.warning(warning)
        return DataSplits(train=train, validation=validation, test=test, label_names=list(self.spec.label_names),
                          dataset=self.spec.name, source=source_name, protocol=f'{warning} {protocol}',
                          protocol_kind='patch-level', left_out=kaggle.left_out, source_key=kaggle.listing_key)

    def _by_patient(self, source: datasets.DatasetDict, source_name: str, kaggle: '_IdcFolder',
                    request: ReadRequest) -> DataSplits:
        seeded = request.split_protocol == SEEDED
        if seeded:
            train, validation, test, protocol = split_by_patient(
                pool(source), request.seed, request.val_fraction, request.test_fraction)
        else:
            train, validation, test, protocol = published_patient_split(
                pool(source), published_split(self.spec, request.split_protocol), request.split_protocol,
                request.allow_missing_patients)
        if len(source) > 1:
            protocol += f" The source's own {'/'.join(source)} splits were pooled first."
        if kaggle.left_out.ignored_files:  # in the protocol too, so that metrics.json says what was left out
            protocol += f' {_ignored_note(kaggle.left_out.ignored_files)}'
        return DataSplits(train=train, validation=validation, test=test, label_names=list(self.spec.label_names),
                          dataset=self.spec.name, source=source_name, protocol=protocol,
                          protocol_kind='seeded patient split' if seeded else 'published split', patient_level=True,
                          left_out=kaggle.left_out, source_key=kaggle.listing_key)


def load_idc_patches(data_dir: Optional[str] = None, hub_id: Optional[str] = None,
                     cache_dir: Optional[str] = None) -> datasets.Dataset:
    """Every IDC patch of a source, unsplit: `image`, `label`, and `patient_id`, `x`, `y` where the source has them
    (the Kaggle folder always does). For whole-slide maps (`slides/`) and the Hub export."""
    root = existing_folder(data_dir, '--data-dir') if data_dir is not None else None
    source, source_name, kaggle = _read_idc_source(DATASETS['idc'], root, hub_id, cache_dir)
    warn_left_out(kaggle.left_out, source_name)
    return pool(source)


def _read_idc_source(
        spec: DatasetSpec, root: Optional[Path], hub_id: Optional[str], cache_dir: Optional[str],
) -> Tuple[datasets.DatasetDict, str, '_IdcFolder']:
    """The IDC source as read (its own splits, standardised columns and labels, without contradictory patches), its
    name, and what reading left out (`kaggle.left_out`)."""
    kaggle = _IdcFolder(None, LeftOut())
    if root is not None and not has_parquet(root):
        kaggle = _read_idc_kaggle_folder(root, cache_root(cache_dir))
        source, source_name = datasets.DatasetDict(train=kaggle.data), str(root)
    elif root is not None:
        source, source_name = load_local_folder(root, cache_dir), str(root)
    elif hub_id is not None or spec.project_hub_copy_published:
        source_name = hub_id or f'{HUB_NAMESPACE}/{spec.project_hub_copy}'
        source = load_hub(source_name, None, cache_dir)
    else:
        raise DataError(
            f"--dataset {spec.name} reads this project's Hub copy {HUB_NAMESPACE}/{spec.project_hub_copy} by default, "
            f'which is not published yet: pass --data-dir ({IDC_LOCAL_LAYOUT}) or --hub-id (a Hub copy with '
            "patient_id, e.g. one pushed with patchconvnet-push-idc; 'dbzadnen/breast-histopathology-images' has "
            'none, so its split is patch-level).')
    source = standardise(source, extra_features=IDC_EXTRA_FEATURES)
    if kaggle.data is None:  # parquet or Hub: image bytes checked here, as the Kaggle folder's files were
        source, left_out = without_unreadable_images(source, source_name)
        kaggle = _IdcFolder(None, left_out)
    if {'patient_id', 'x', 'y'} <= set(source['train'].column_names):
        _check_patient_ids(source, source_name)
        source = _without_contradictions(source, kaggle.left_out)
    found = label_names_of(source['train'])
    if found != IDC_LABEL_NAMES:
        if len(found) != 2:
            raise DataError(f'IDC labels must be 2 classes (negative, positive), got {found}.')
        source = source.cast_column('label', datasets.ClassLabel(names=IDC_LABEL_NAMES))
    return source, source_name, kaggle


def _check_patient_ids(source: datasets.DatasetDict, source_name: str) -> None:
    """Patient ids name the files of whole-slide maps (`slides/<patient_id>.png`): one that is a path (`../../x`,
    `/abs/x`) would write outside the run, so the data is refused up front."""
    for split in source.values():
        for patient in split.unique('patient_id'):
            try:
                plain_name(patient, 'The patient_id')
            except UnsafePathError as err:
                raise DataError(f'{source_name}: {err} Patient ids name files (whole-slide maps).') from err


def _without_contradictions(source: datasets.DatasetDict, left_out: LeftOut) -> datasets.DatasetDict:
    """The source without the patches whose patient and position also appear under the other label: both are
    dropped (neither can be trusted) and counted in `left_out`; training on both teaches nothing, and a slide cannot
    hold two patches in one place."""
    rows = pool(source).with_format('arrow')
    patients = rows['patient_id'].dictionary_encode().combine_chunks()  # numbers, not 277,524 Python strings
    positions = np.stack([patients.indices.to_numpy(zero_copy_only=False), column(rows, 'x'), column(rows, 'y')])
    order = np.lexsort(positions[::-1])  # the rows of one position next to each other
    starts = np.r_[True, np.any(positions[:, order[1:]] != positions[:, order[:-1]], axis=0)]
    where = np.empty(len(order), dtype=np.int64)
    where[order] = np.cumsum(starts) - 1  # each row's position number
    positives, patches = np.bincount(where, weights=column(rows, 'label') == 1), np.bincount(where)
    contradictory = ((positives > 0) & (positives < patches))[where]  # two classes: IDC's labels are cast to two
    if not contradictory.any():
        return source
    firsts = order[starts]
    shown = [f'{patients.dictionary[positions[0, i]]} x{positions[1, i]} y{positions[2, i]}'
             for i in firsts[contradictory[firsts]][:3]]
    left_out.add('contradictory_patches', shown, count=int(contradictory.sum()))
    ends = np.cumsum([len(split) for split in source.values()])[:-1]
    return datasets.DatasetDict({name: split.select(np.flatnonzero(~part)) for (name, split), part in zip(
        source.items(), np.split(contradictory, ends))})


def read_idc_kaggle_folder(folder: str) -> Tuple[datasets.Dataset, int]:
    """Every patch of the Kaggle IDC folder once (`image` as a file path, `label`, `patient_id`, `x`, `y`), unsplit,
    and the number of unreadable files left out: the reading `load_splits('idc', data_dir=folder)` starts from."""
    source, source_name, kaggle = _read_idc_source(DATASETS['idc'], existing_folder(folder, 'the IDC folder'),
                                                   None, None)
    warn_left_out(kaggle.left_out, source_name)
    return source['train'], kaggle.left_out.skipped_images


class _IdcFolder(NamedTuple):
    data: Optional[datasets.Dataset]
    left_out: LeftOut  # unreadable patch files, files whose names are not IDC patch names, links that lead nowhere
    listing_key: str = ''  # a hash of the folder's listing (names, sizes, modification times, inodes)


def _read_idc_kaggle_folder(root: Path, cache: Optional[Path] = None) -> _IdcFolder:
    """The Kaggle folder `<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png`, each file name once.

    Every patch is decoded once to find the unreadable ones; the result is kept in `cache` (default `cache_root()`)
    under the folder's listing key, so a later run over the unchanged folder only lists it."""
    listing, unreachable = _listing(root)
    left_out = LeftOut()
    left_out.add('unreachable', unreachable)
    patches: Dict[str, str] = {}  # file name -> path relative to root (strings: Path objects cost seconds here)
    ignored: List[str] = []
    duplicates = 0
    # the original patient folders before the archive's duplicate copy, so that the original is the one kept
    copy = IDC_DUPLICATE_COPY + os.sep
    for path in sorted(listing, key=lambda p: (p.startswith(copy) or f'{os.sep}{copy}' in p, p)):
        name = os.path.basename(path)
        match = IDC_PATCH_NAME.fullmatch(name)
        if match is None:
            ignored.append(path)
            continue
        if name in patches:
            duplicates += 1
            continue
        _check_patch_name(root, path, match)
        patches[name] = path
    if not patches:
        raise DataError(f'No IDC patches in {root}: expected the Kaggle layout '
                        '<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<0|1>.png.')
    if duplicates:
        _logger.warning('%d IDC files appear twice (e.g. the archive\'s copy under %s/); each is used once.',
                        duplicates, IDC_DUPLICATE_COPY)

    left_out.add('ignored_files', ignored)  # a renamed (.PNG, class2) or stray file: data the user may think is used
    listing_key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:20]
    paths = list(patches.values())
    unreadable = set(_unreadable(root, paths, listing_key, cache_root() if cache is None else cache))
    left_out.add('skipped_images', sorted(unreadable))
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
    return _IdcFolder(data, left_out, listing_key)


def _check_patch_name(root: Path, path: str, match: re.Match) -> None:
    """A patch's name agrees with its class folder and holds a slide position (x and y are int32 columns)."""
    folder = os.path.basename(os.path.dirname(path))
    if folder != match['label']:
        raise DataError(f'{root / path} says class{match["label"]} but lies in folder {folder!r}: the class folder '
                        '(0 or 1) and the file name must agree.')
    if max(int(match['x']), int(match['y'])) > MAX_COORDINATE:
        raise DataError(f'{root / path}: x={match["x"]}, y={match["y"]} is no slide position (at most '
                        f'{MAX_COORDINATE}): rename or remove the file.')


def _listing(root: Path) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
    """Every file under `root` (its path relative to `root`), sorted, with its size, modification and change times
    (ns) and inode: what says that a folder changed (a file replaced by one of the same size and mtime too). And
    what could not be listed: links that loop or lead nowhere, unreadable folders. Links are followed inside
    `root` (each real folder once) and refused where they lead out of it (`safe_paths.link_target`)."""
    files: Dict[str, Tuple[int, ...]] = {}
    unreachable: List[str] = []
    skip = len(str(root)) + 1
    folders, seen = [str(root)], {os.path.realpath(root)}
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError:
            unreachable.append(folder[skip:] or '.')
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    link_target(Path(entry.path), root)
                stat = entry.stat()
            except UnsafePathError as err:
                raise DataError(str(err)) from err
            except OSError:  # a link that loops or leads nowhere: this entry only, the folder's others are read
                unreachable.append(entry.path[skip:])
                continue
            if entry.is_dir():
                if os.path.realpath(entry.path) not in seen:
                    seen.add(os.path.realpath(entry.path))
                    folders.append(entry.path)
            elif entry.is_file():
                files[entry.path[skip:]] = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    return dict(sorted(files.items())), sorted(unreachable)


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
