"""Seeded train/validation/test splits: of examples stratified by label, or of patients (no patient in two splits).

Two levels: `split_indices` / `three_way_indices` split positions given their strata (labels, or the positive-share
bins of patients); `hold_out`, `three_way_split` and `split_by_patient` apply them to a `datasets.Dataset` and
return the sentence that `metrics.json` and the model card use to describe the protocol.
"""
import logging
from typing import Any, Dict, Tuple

import datasets
import numpy as np
from sklearn.model_selection import train_test_split

from ..dataset_specs import SPLIT_NAMES

__all__ = ['SplitError', 'column', 'hold_out', 'published_patient_split', 'split_by_patient', 'split_indices',
           'stratification', 'three_way_indices', 'three_way_split']

_logger = logging.getLogger(__name__)


class SplitError(ValueError):
    """Too little data to split as asked."""


def column(data: datasets.Dataset, name: str) -> np.ndarray:
    """One column of `data` as a numpy array, read through Arrow: `data[name]` decodes row by row (seconds for the
    277,524 IDC patches)."""
    return data.with_format('arrow')[name].to_numpy(zero_copy_only=False)


def split_indices(strata: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Seeded split of range(len(strata)) into kept and held-out (`fraction` of them) indices, stratified by
    `strata` where scikit-learn can (every stratum twice, each side big enough to hold one of each)."""
    n = len(strata)
    if n < 2:
        raise SplitError(f'Only {n} example(s) or patient(s) to split: use more data.')
    n_held_out = min(max(round(fraction * n), 1), n - 1)
    counts = np.unique(strata, return_counts=True)[1]
    stratified = bool(counts.min() >= 2 and len(counts) <= min(n_held_out, n - n_held_out))
    kept, held_out = train_test_split(
        np.arange(n), test_size=n_held_out, random_state=seed, stratify=strata if stratified else None)
    return np.sort(kept), np.sort(held_out), stratified


def three_way_indices(
        strata: np.ndarray, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Indices of train, validation (val_fraction of all) and test (test_fraction of all), and if stratified."""
    rest, test, test_stratified = split_indices(strata, test_fraction, seed)
    train, validation, val_stratified = split_indices(strata[rest], val_fraction / (1 - test_fraction), seed)
    return rest[train], rest[validation], test, test_stratified and val_stratified


def stratification(stratified: bool) -> str:
    return 'stratified by label' if stratified else 'unstratified (a class is too small to stratify)'


def hold_out(data: datasets.Dataset, fraction: float, seed: int) -> Tuple[datasets.Dataset, datasets.Dataset, bool]:
    """`data` split into the kept examples and a seeded `fraction` held out, stratified by label if possible."""
    kept, held_out, stratified = split_indices(column(data, 'label'), fraction, seed)
    return data.select(kept), data.select(held_out), stratified


def three_way_split(
        data: datasets.Dataset, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, str]:
    """Train, validation and test examples of `data` and the protocol sentence."""
    train, validation, test, stratified = three_way_indices(
        column(data, 'label'), seed, val_fraction, test_fraction)
    protocol = (f'Seeded (seed={seed}) split of all {len(data)} examples, {stratification(stratified)}: '
                f'{test_fraction:.0%} test, {val_fraction:.0%} validation, the rest train.')
    return data.select(train), data.select(validation), data.select(test), protocol


def split_by_patient(
        data: datasets.Dataset, seed: int, val_fraction: float, test_fraction: float,
) -> Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, str]:
    """Train, validation and test rows of `data` (with a `patient_id` column) such that no patient is in two, and
    the protocol sentence; stratified by each patient's share of positive rows."""
    patients, patient_of_row = np.unique(column(data, 'patient_id').astype(str), return_inverse=True)
    if len(patients) < 3:
        raise SplitError(f'A patient-level split needs at least 3 patients, found {len(patients)}: use more data.')
    labels = column(data, 'label')
    positive_share = np.bincount(patient_of_row, weights=labels) / np.bincount(patient_of_row)
    # quantile bins of the positive share: each split gets patients with few and with many positive patches
    share_bins = np.digitize(positive_share, np.unique(np.quantile(positive_share, [0.25, 0.5, 0.75])))
    train, validation, test, stratified = three_way_indices(share_bins, seed, val_fraction, test_fraction)
    rows = [np.flatnonzero(np.isin(patient_of_row, part)) for part in (train, validation, test)]
    how = ("stratified by each patient's share of positive patches" if stratified
           else 'unstratified (too few patients per positive-share bin)')
    protocol = (f'Patient-level split (seed={seed}) of {len(patients)} patients: {test_fraction:.0%} of patients '
                f'test, {val_fraction:.0%} validation, the rest train, {how}; no patient is in two splits.')
    return (*(data.select(r) for r in rows), protocol)


def published_patient_split(
        data: datasets.Dataset, published: Dict[str, Any], name: str, allow_missing: bool,
) -> Tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, str]:
    """Train, validation and test rows of `data` for the patient lists of a published split (`published`: its
    `train`, `validation` and `test` ids and its `source`), and the protocol sentence. Patients of `data` in no list
    are left out and counted; listed patients missing from `data` are an error, or with `allow_missing` a warning
    counted in the protocol."""
    patient_of_row = column(data, 'patient_id').astype(str)
    present = set(patient_of_row.tolist())
    lists = {split: [str(p) for p in published[split]] for split in SPLIT_NAMES}
    listed = set().union(*map(set, lists.values()))
    missing = sorted(listed - present)
    if missing and not allow_missing:
        raise SplitError(f'{len(missing)} of the {len(listed)} patients of the published split {name!r} are not in the '
                         f'data (e.g. {", ".join(missing[:5])}): use the complete data set, or pass '
                         '--allow-missing-patients to train on the others.')
    if missing:
        _logger.warning('%d listed patients of the %s split are not in the data (e.g. %s); going on without them.',
                        len(missing), name, ', '.join(missing[:5]))
    parts = [data.select(np.flatnonzero(np.isin(patient_of_row, lists[split]))) for split in lists]
    left_out = sorted(present - listed)
    counts = '/'.join(str(len(set(lists[split]) & present)) for split in lists)
    protocol = (f'Published patient split {name!r} ({published["source"]}): {counts} train/validation/test patients '
                f'of the lists; no patient is in two splits. {len(left_out)} patient(s) of the data in no list were '
                'left out' + (f', and {len(missing)} listed patient(s) are missing from the data' if missing else '')
                + '.')
    return (*parts, protocol)
