"""One reader per kind of source, each registered under the name a `DatasetSpec.reader` (or the --dataset value of
any other source) gives it. The IDC reader, with its Kaggle folder, is in `idc.py`."""
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from ..dataset_specs import DatasetSpec
from .reader import DataError, DataSplits, ReadRequest, Reader, register_reader
from .sources import (
    complete_splits, existing_folder, has_parquet, label_names_of, load_hub, load_local_folder, standardise,
    without_unreadable_images)
from .splits import hold_out, stratification, three_way_split

__all__ = ['DigitsReader', 'FolderReader', 'HubLayoutReader', 'HubReader']


@register_reader('digits')
class DigitsReader(Reader):
    """scikit-learn's bundled digits, upscaled to the spec's size, in a seeded three-way split."""

    def read(self, request: ReadRequest) -> DataSplits:
        spec = self.spec
        if request.data_dir is not None or request.hub_id is not None:
            raise DataError(f'--dataset {spec.name} is bundled with scikit-learn: it takes no --data-dir or --hub-id.')
        digits = load_digits()
        pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # the bundled values are 0..16
        size = (spec.img_size, spec.img_size)
        images = [Image.fromarray(p).resize(size, Image.Resampling.BILINEAR).convert('RGB') for p in pixels]
        label_names = list(spec.label_names)
        features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=label_names))
        data = datasets.Dataset.from_dict({'image': images, 'label': digits.target.tolist()}, features=features)
        train, validation, test, protocol = three_way_split(
            data, request.seed, request.val_fraction, request.test_fraction)
        return DataSplits(train=train, validation=validation, test=test, label_names=label_names,
                          dataset=spec.name, source='sklearn.datasets.load_digits', protocol=protocol)


@register_reader('hub_layout')
class HubLayoutReader(Reader):
    """A data set from the Hub (--hub-id, else the spec's), or a local copy of its Hub parquet files (--data-dir),
    with its own train and test splits; validation is held out of train."""

    def read(self, request: ReadRequest) -> DataSplits:
        spec, seed, val_fraction = self.spec, request.seed, request.val_fraction
        if request.data_dir is None:
            source_name = request.hub_id or spec.hub_id
            source = load_hub(source_name, spec.hub_config, request.cache_dir)
        else:
            source_name = str(request.data_dir)
            source = self._local_copy(request.data_dir, request.cache_dir)
        source, left_out = without_unreadable_images(standardise(source), source_name)
        if spec.label_names is not None and label_names_of(source['train']) != list(spec.label_names):
            raise DataError(f'{source_name} is not {spec.title}: its labels are {label_names_of(source["train"])}, '
                            f'not {list(spec.label_names)}.')
        train, validation, stratified = hold_out(source['train'], val_fraction, seed)
        protocol = (f"The source's own train/test splits; validation is a seeded (seed={seed}) {val_fraction:.0%} "
                    f'of train, {stratification(stratified)} (test_fraction unused).')
        return DataSplits(train=train, validation=validation, test=source['test'], label_names=label_names_of(train),
                          dataset=spec.name, source=source_name, protocol=protocol,
                          left_out=left_out)

    def _local_copy(self, root: Path, cache_dir: Optional[str]) -> datasets.DatasetDict:
        spec = self.spec
        subfolder = root / spec.hub_config if spec.hub_config else root
        data_files = {name: sorted(str(p) for p in subfolder.glob(f'{name}-*.parquet')) for name in ('train', 'test')}
        if not all(data_files.values()):
            prefix = f'{spec.hub_config}/' if spec.hub_config else ''
            raise DataError(
                f'--data-dir {root} does not have the Hub layout of {spec.title}: expected {prefix}train-*.parquet '
                f'and {prefix}test-*.parquet (e.g. `hf download {spec.hub_id} --repo-type dataset --local-dir '
                f'{root}`).')
        return datasets.load_dataset('parquet', data_files=data_files, cache_dir=cache_dir)


def _generic_splits(source: datasets.DatasetDict, source_name: str, request: ReadRequest, spec: DatasetSpec,
                    folder: Optional[Path] = None) -> DataSplits:
    """Any image classification source: its own splits, a missing validation or test split carved from train;
    unreadable images left out and counted (a broken one would stop training at its batch, maybe after all
    epochs), and for an image `folder` its empty class folders."""
    source, left_out = without_unreadable_images(standardise(source), source_name, folder)
    (train, validation, test), protocol = complete_splits(
        source, request.seed, request.val_fraction, request.test_fraction)
    return DataSplits(train=train, validation=validation, test=test, label_names=label_names_of(train),
                      dataset=spec.name, source=source_name, protocol=protocol,
                      left_out=left_out)


@register_reader('hub')
class HubReader(Reader):
    """`hub:<repo_id>`: any Hub data set in datasets' image-classification layout."""

    def read(self, request: ReadRequest) -> DataSplits:
        return _generic_splits(load_hub(self.location, None, request.cache_dir), self.location, request, self.spec)


@register_reader('folder')
class FolderReader(Reader):
    """A local folder of parquet files, or of images in one subfolder per class."""

    def read(self, request: ReadRequest) -> DataSplits:
        folder = existing_folder(self.location, '--dataset')
        source = load_local_folder(folder, request.cache_dir)
        return _generic_splits(source, str(folder), request, self.spec, None if has_parquet(folder) else folder)
