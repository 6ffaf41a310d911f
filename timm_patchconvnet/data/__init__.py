"""Data for training (the `train` extra: `datasets`, scikit-learn, kornia): the sources read into train,
validation and test splits (`loading`), the split protocols (`splits`), the decoded cache (`decode_cache`) and
the augmentation of decoded batches on the device (`device_transforms`)."""
from .loading import (
    IDC_LABEL_NAMES, SPLIT_NAMES, DataError, DataSplits, ImageClassificationDataset, build_transform, load_idc_patches,
    load_splits, read_idc_kaggle_folder)

__all__ = ['DataError', 'DataSplits', 'IDC_LABEL_NAMES', 'ImageClassificationDataset', 'SPLIT_NAMES', 'build_transform',
           'load_idc_patches', 'load_splits', 'read_idc_kaggle_folder']
