"""The IDC breast-histopathology patches as a Hugging Face data set *with* patient ids, ready for the Hub.

`export_idc_dataset` turns the Kaggle folder into parquet shards (`image`, `label`, `patient_id`, `x`, `y`),
optionally pre-split by patient exactly as `train.py --dataset idc` splits it, with a data set card
(`templates/dataset_card.md`); `push_idc_dataset` uploads that folder (`upload.publish`). Reading and splitting
are `timm_patchconvnet.data`'s, not repeated here.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from ..data import IDC_LABEL_NAMES, load_splits, read_idc_kaggle_folder
from ..dataset_specs import SEEDED, SPLIT_NAMES
from ..data.splits import column
from .cards import Verbatim, render_card
from .upload import CARD_FILE, HubError, UploadOptions, check_repo_id, new_export_folder, publish

__all__ = ['DatasetExport', 'build_idc_dataset_card', 'export_idc_dataset', 'push_idc_dataset']

IDC_KAGGLE_ID = 'paultimothymooney/breast-histopathology-images'
PRETTY_NAME = 'Breast Histopathology Images (IDC) with patient ids'

@dataclass
class DatasetExport:
    """What `export_idc_dataset` wrote: the folder, rows per split, files and the split protocol."""
    folder: Path
    num_rows: Dict[str, int]
    files: List[str] = field(default_factory=list)
    skipped_images: int = 0
    protocol: str = ''


def export_idc_dataset(
        kaggle_dir: str, out_dir: str, *, repo_id: Optional[str] = None, split_by_patient: bool = True,
        split: str = SEEDED, allow_missing_patients: bool = False, seed: int = 0, val_fraction: float = 0.1,
        test_fraction: float = 0.2, shard_size: int = 10_000,
) -> DatasetExport:
    """Convert the Kaggle IDC folder into a Hub-layout parquet data set in `out_dir` (new or empty): columns
    `image` (the PNG bytes, embedded), `label`, `patient_id`, `x`, `y`; shards of at most `shard_size` rows named
    `data/<split>-NNNNN-of-NNNNN.parquet`; a data set card README.md whose `configs` make
    `datasets.load_dataset(<folder or repo>)` find the splits. `repo_id`: the data set's Hub id, for the card.

    With `split_by_patient`, the splits are train.py's patient-level ones (`load_splits('idc', ...)` with the same
    `split`, seed and fractions: 'seeded', or 'janowczyk' for the published patient lists); otherwise all patches
    form a single `train` split, to be split by `patient_id` by the user (train.py does). Reading and splitting are
    `timm_patchconvnet.data`'s, not repeated here."""
    if repo_id is not None:
        check_repo_id(repo_id)
    if shard_size < 1:
        raise HubError(f'shard_size must be at least 1 row, got {shard_size}.')
    splits, skipped, protocol = _idc_splits(kaggle_dir, split_by_patient, split, allow_missing_patients, seed,
                                            val_fraction, test_fraction)
    out = new_export_folder(out_dir)
    files, num_bytes, download_size = [], {}, 0
    for name, split in splits.items():
        split_files, num_bytes[name] = _write_parquet_shards(split, out, name, shard_size)
        files += split_files
        download_size += sum((out / f).stat().st_size for f in split_files)
    card = build_idc_dataset_card(splits, num_bytes=num_bytes, download_size=download_size, skipped_images=skipped,
                                  protocol=protocol, split_by_patient=split_by_patient, repo_id=repo_id,
                                  published=split_by_patient and split != SEEDED)
    card.save(out / CARD_FILE)
    return DatasetExport(out, {name: len(split) for name, split in splits.items()}, [*files, CARD_FILE], skipped,
                         protocol)


def _idc_splits(
        kaggle_dir: str, split_by_patient: bool, split: str, allow_missing_patients: bool, seed: int,
        val_fraction: float, test_fraction: float,
) -> Tuple[Dict[str, datasets.Dataset], int, str]:
    if not split_by_patient:
        data, skipped = read_idc_kaggle_folder(kaggle_dir)
        protocol = Verbatim('Not pre-split: every patch is in the single `train` split. Split by `patient_id` '
                            'before training (train.py does), never by patch.')
        return {'train': data}, skipped, protocol
    splits = load_splits('idc', data_dir=kaggle_dir, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                         split_protocol=split, allow_missing_patients=allow_missing_patients)
    if not splits.patient_level:  # a source without patient ids, e.g. a folder of parquet files lacking them
        raise HubError(f'{kaggle_dir} has no patient ids, so it cannot be split by patient: pass the Kaggle folder.')
    return {name: getattr(splits, name) for name in SPLIT_NAMES}, splits.left_out.skipped_images, splits.protocol


def _write_parquet_shards(split: datasets.Dataset, out: Path, name: str, shard_size: int) -> Tuple[List[str], int]:
    """Parquet shards of `split` with the image files' bytes embedded, as `Dataset.push_to_hub` writes them.
    Returns the files (relative to `out`) and the Arrow size of the data."""
    num_shards = max(1, math.ceil(len(split) / shard_size))
    files, num_bytes = [], 0
    for index in range(num_shards):
        shard = split.shard(num_shards=num_shards, index=index, contiguous=True)
        # the Kaggle images are file paths: embed their bytes so that the parquet files stand alone
        shard = shard.with_format('arrow').map(embed_table_storage, batched=True, keep_in_memory=True)
        relative = f'data/{name}-{index:05d}-of-{num_shards:05d}.parquet'
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        num_bytes += shard.to_parquet(out / relative)
        files.append(relative)
    return files, num_bytes


def _size_category(num_rows: int) -> str:
    for limit, name in ((1_000, 'n<1K'), (10_000, '1K<n<10K'), (100_000, '10K<n<100K'), (1_000_000, '100K<n<1M')):
        if num_rows < limit:
            return name
    return '1M<n<10M'


def build_idc_dataset_card(
        splits: Dict[str, datasets.Dataset],
        *,
        num_bytes: Dict[str, int],
        download_size: int,
        skipped_images: int,
        protocol: str,
        split_by_patient: bool,
        repo_id: Optional[str] = None,
        published: bool = False,
) -> DatasetCard:
    """The data set card: YAML (licence, task, size, `dataset_info` features and splits, `configs` data files, as
    `Dataset.push_to_hub` writes them) and a body on the source, columns, splits, loading and limits."""
    total = sum(len(split) for split in splits.values())
    card_data = DatasetCardData(
        license='cc0-1.0',
        task_categories=['image-classification'],
        tags=['medical', 'histopathology', 'breast-cancer', 'patient-ids'],
        size_categories=[_size_category(total)],
        source_datasets=[f'kaggle:{IDC_KAGGLE_ID}'],
        pretty_name=PRETTY_NAME,
    )
    features = next(iter(splits.values())).features
    info = DatasetInfo(
        features=features, download_size=download_size, dataset_size=sum(num_bytes.values()),
        splits=SplitDict({name: SplitInfo(name, num_bytes=num_bytes[name], num_examples=len(split))
                          for name, split in splits.items()}))
    DatasetInfosDict({'default': info}).to_dataset_card_data(card_data)
    MetadataConfigs({'default': {'data_files': [{'split': name, 'path': f'data/{name}-*'} for name in splits]}}
                    ).to_dataset_card_data(card_data)
    patient_ids = [set(column(split, 'patient_id').tolist()) for split in splits.values()]
    positives = [int(column(split, 'label').sum()) for split in splits.values()]
    return render_card(
        DatasetCard, 'dataset_card.md', card_data, total=total, patients=len(set().union(*patient_ids)),
        positives=sum(positives), kaggle_id=IDC_KAGGLE_ID, skipped_images=skipped_images,
        label_names=IDC_LABEL_NAMES, split_by_patient=split_by_patient, published=published, protocol=protocol,
        split_rows=[(name, len(split), len(ids), positive)
                    for (name, split), ids, positive in zip(splits.items(), patient_ids, positives)],
        repo_id=repo_id or 'ORG/NAME')


def push_idc_dataset(kaggle_dir: str, repo_id: str, *, split_by_patient: bool = True, split: str = SEEDED,
                     allow_missing_patients: bool = False, seed: int = 0, val_fraction: float = 0.1,
                     test_fraction: float = 0.2, shard_size: int = 10_000, api: Optional[HfApi] = None,
                     **upload: Any) -> str:
    """Export the Kaggle IDC folder (`export_idc_dataset`) and upload it to the data set repo `repo_id`; `upload`
    are the fields of `UploadOptions` (export_dir, token, private, revision, commit_message). Returns the URL."""
    options = UploadOptions(**upload)
    return publish(repo_id, 'dataset', lambda out: export_idc_dataset(
        kaggle_dir, out, repo_id=repo_id, split_by_patient=split_by_patient, split=split,
        allow_missing_patients=allow_missing_patients, seed=seed, val_fraction=val_fraction,
        test_fraction=test_fraction, shard_size=shard_size).folder, options,
        commit_message='Upload the IDC patches with patient ids', api=api)
