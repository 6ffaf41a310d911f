"""Data for training (the `train` extra: `datasets`, scikit-learn): the sources read into train,
validation and test splits (`loading.load_splits`, through one reader per kind of source: `reader`, `readers`,
`idc`, `sources`), the split protocols (`splits`), the decoded cache (`decode_cache`), and the augmentation recipe
per image (`transforms`, torchvision) and on decoded batches on the device (`device_transforms`)."""
from ..dataset_specs import SPLIT_NAMES
# importing a reader's module registers it; the package is imported before any of its modules, so every reader
# is registered before `create_reader` looks one up
from .idc import IDC_LABEL_NAMES, IdcReader, load_idc_patches, read_idc_kaggle_folder
from .loading import ImageClassificationDataset, create_reader, load_splits
from .reader import DataError, DataSplits, LeftOut, ReadRequest, Reader, register_reader
from .readers import DigitsReader, FolderReader, HubLayoutReader, HubReader
from .transforms import build_transform

__all__ = ['DataError', 'DataSplits', 'DigitsReader', 'FolderReader', 'HubLayoutReader', 'HubReader',
           'IDC_LABEL_NAMES', 'IdcReader', 'ImageClassificationDataset', 'LeftOut', 'ReadRequest', 'Reader',
           'SPLIT_NAMES', 'build_transform', 'create_reader', 'load_idc_patches', 'load_splits',
           'read_idc_kaggle_folder', 'register_reader']
