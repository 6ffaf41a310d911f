"""The data sets this project knows, one `DatasetSpec` each: the one place that names a data set.

Data loading (`data/`: each spec names its reader), training (image size, normalisation, augmentation), the model
cards (`hub/`) and the pretrained cfgs of the registered models (`patchconvnet.py`, a `cifar10` or `idc` tag per data
set that publishes one) all read this table. Adding a data set is adding an entry to `DATASETS`: a Hub data set in
the standard `image`/`label` layout needs no other change, a new kind of source one reader (`data/readers.py`).
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ['Augmentation', 'DATASETS', 'DatasetSpec', 'GENERIC', 'IDC_PATCH_NAME', 'IMAGENET_MEAN_STD',
           'PUBLISHED_SPLITS', 'SEEDED', 'SPLIT_NAMES', 'dataset_spec', 'published_split']

MeanStd = Tuple[Tuple[float, float, float], Tuple[float, float, float]]
IMAGENET_MEAN_STD: MeanStd = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


@dataclass(frozen=True)
class Augmentation:
    """A training augmentation recipe, applied in this order: flips, rotation, affine, colour jitter. Plain data:
    `data.transforms.pil_transforms` runs it on PIL images (torchvision), `data.device_transforms.batch_transforms` on
    decoded batches."""
    hflip: bool = False
    vflip: bool = False
    rotation: float = 0.  # degrees, either way
    affine: Optional[Dict[str, object]] = None  # torchvision RandomAffine's arguments
    color_jitter: Optional[Tuple[float, float, float]] = None  # brightness, contrast, saturation


@dataclass(frozen=True)
class DatasetSpec:
    """What the project knows of one data set. `reader` names its registered reader (`data.reader.READERS`):
    'digits' (bundled with scikit-learn), 'hub_layout' (a Hub data set in its Hub layout, or a local copy of its
    parquet files), 'idc' (the Kaggle IDC folder, or parquet/Hub copies with patient ids)."""
    name: str  # the --dataset value, and the pretrained tag of models trained on it
    title: str  # for cards and messages
    reader: str
    label_names: Optional[Tuple[str, ...]] = None  # None: read from the source
    img_size: Optional[int] = None  # None: the model's
    mean_std: MeanStd = IMAGENET_MEAN_STD  # normalisation of a model trained from scratch on it
    augmentation: Augmentation = Augmentation(hflip=True)
    hub_id: Optional[str] = None  # the default source on the Hugging Face Hub
    hub_config: Optional[str] = None
    has_patients: bool = False  # its examples belong to patients: split by patient, never by example
    origin: str = ''  # a sentence on where the data comes from, for cards
    card_tags: Tuple[str, ...] = ()
    medical: bool = False  # cards then say the model is not validated clinically
    preset: Optional[str] = None  # the preset that trains the model behind this data set's pretrained tag
    short_title: str = ''
    # published patient splits: --split NAME -> a JSON file of this package with train/validation/test patient ids
    # and its `source`
    published_splits: Dict[str, str] = field(default_factory=dict)
    # this project's own Hub copy (HUB_NAMESPACE/<name>), the default source when no other is given, once published
    project_hub_copy: Optional[str] = None
    project_hub_copy_published: bool = False
    # microns per pixel of its images, for histology: whole-slide inference (`slides.wsi`) reads slides at this scale
    mpp: Optional[float] = None

    @property
    def bundled(self) -> bool:
        """Whether it ships with a package (nothing to download, no Hub id to cite)."""
        return self.reader == 'digits'

    @property
    def publishes_tag(self) -> bool:
        """Whether registered models carry a pretrained tag named after this data set (e.g. `.cifar10`)."""
        return self.preset is not None


DATASETS: Dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        name='digits', title="scikit-learn's digits", short_title='digits', reader='digits',
        label_names=tuple(str(d) for d in range(10)), img_size=32,
        augmentation=Augmentation(affine=dict(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))),  # no flips
        origin="the 1,797 8x8 handwritten digits bundled with scikit-learn, upscaled to 32x32",
        card_tags=('digits',)),
    DatasetSpec(
        name='cifar10', title='CIFAR-10', short_title='CIFAR-10', reader='hub_layout',
        label_names=('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'),
        img_size=32, mean_std=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # its training-set statistics
        augmentation=Augmentation(hflip=True, rotation=10, affine=dict(degrees=0, scale=(0.9, 1.1), shear=10),
                                  color_jitter=(0.2, 0.2, 0.2)),  # the seed paper's
        hub_id='uoft-cs/cifar10', hub_config='plain_text',
        card_tags=('cifar10',), preset='table2-lamb'),
    DatasetSpec(
        name='idc', title='Breast Histopathology Images (IDC)', short_title='IDC', reader='idc', has_patients=True,
        label_names=('idc_negative', 'idc_positive'), img_size=50,
        # tissue has no orientation; stain colour carries the diagnosis, so colours stay untouched (the seed paper's)
        augmentation=Augmentation(hflip=True, vflip=True, rotation=10),
        origin='50x50 RGB crops of breast-cancer whole-slide images (Kaggle [paultimothymooney/breast-histopathology'
               '-images](https://www.kaggle.com/datasets/paultimothymooney/breast-histopathology-images)), labelled '
               'invasive ductal carcinoma (IDC) positive or negative; edge patches smaller than 50x50 are resized',
        card_tags=('histopathology', 'breast-cancer', 'medical-imaging'), medical=True, preset='idc-finetune',
        # Janowczyk & Madabhushi 2016 (J Pathol Inform 7:29): 84/29/49 cases, Cruz-Roa et al. 2014's split
        published_splits={'janowczyk': 'idc_janowczyk_split.json'}, project_hub_copy='IDC',
        # UNCONFIRMED: the slides were scanned at 40x (about 0.25 um/px) and the patches cut after downsampling;
        # secondary sources (the Kaggle page, tutorials after Janowczyk & Madabhushi 2016) say the patches are at
        # 2.5x, a 16x downsampling, so about 4 um/px. No primary source for the factor was found offline.
        mpp=4.0),
)}

# an IDC patch's file name in the Kaggle folder: its patient, the slide pixel of its top-left corner, its class
IDC_PATCH_NAME = re.compile(r'(?P<patient>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png')

# any other source: a `hub:<repo_id>` data set or a local folder, in datasets' image-classification layout (read by
# the reader its --dataset value names: `data.loading.create_reader`)
GENERIC = DatasetSpec(name='generic', title='image classification data', short_title='images', reader='')


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a data set by its name, `GENERIC` for any other (a `hub:` id, a folder, 'generic')."""
    return DATASETS.get(name, GENERIC)


SPLIT_NAMES = ('train', 'validation', 'test')  # the splits of every data set, in this order
SEEDED = 'seeded'  # --split: a seeded split (by patient where the data has patient ids)
PUBLISHED_SPLITS = tuple(sorted({name for spec in DATASETS.values() for name in spec.published_splits}))


def published_split(spec: DatasetSpec, name: str) -> Dict[str, Any]:
    """The published split `name` of `spec`: {'source': ..., 'train': [patient ids], 'validation': [...],
    'test': [...]}, as shipped with this package."""
    if name not in spec.published_splits:
        known = ', '.join(spec.published_splits) or 'none'
        raise ValueError(f'--split {name} is not a published split of --dataset {spec.name} (published: {known}).')
    return json.loads((Path(__file__).resolve().parent / spec.published_splits[name]).read_text())
