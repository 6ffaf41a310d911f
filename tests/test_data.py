"""Data splits and transforms on real data: scikit-learn's digits, and folders written here with the real layouts."""
import logging
import pickle
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from datagen import (CIFAR10_NAMES, IDC_EDGE_PATCH, IDC_PATIENTS, random_images, save_16_bit_png,
                     save_png_declaring, save_random_png,
                     write_cifar10_parquet, write_idc_kaggle_folder, write_idc_patients)
from timm_patchconvnet.data import DataError, ImageClassificationDataset, build_transform, load_splits

datasets.disable_progress_bars()

DATA_CONFIG = dict(input_size=(3, 50, 50), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation='bicubic')


@pytest.fixture
def idc_folder(tmp_path: Path) -> Path:
    return write_idc_kaggle_folder(tmp_path / 'idc')


def _split_rows(splits, *columns) -> dict:
    """Each split's rows as tuples of `columns`."""
    return {name: list(zip(*(getattr(splits, name)[c] for c in columns), strict=True))
            for name in ('train', 'validation', 'test')}


def test_digits_splits_are_stratified_disjoint_and_seeded():
    splits = load_splits('digits', seed=0)
    sizes = [len(splits.train), len(splits.validation), len(splits.test)]
    assert sum(sizes) == 1797 and sizes == [1258, 180, 359]
    assert splits.label_names == [str(d) for d in range(10)] and splits.dataset == 'digits'
    for split in (splits.train, splits.validation, splits.test):
        assert sorted(set(split['label'])) == list(range(10))
    image = splits.train[0]['image']
    assert image.size == (32, 32) and image.mode == 'RGB'
    # the bundled images are distinct enough to identify examples by their pixels
    pixels = {name: {img.tobytes() for img in getattr(splits, name)['image']} for name in ('train', 'test')}
    assert not pixels['train'] & pixels['test']
    assert 'seed=0' in splits.protocol and '20% test' in splits.protocol and not splits.patient_level
    assert splits.test['image'][0].tobytes() == load_splits('digits', seed=0).test['image'][0].tobytes()
    other = load_splits('digits', seed=1)
    assert [i.tobytes() for i in other.test['image'][:20]] != [i.tobytes() for i in splits.test['image'][:20]]


def test_idc_kaggle_folder_is_split_by_patient(idc_folder: Path, tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING):
        splits = load_splits('idc', data_dir=str(idc_folder), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.patient_level and splits.dataset == 'idc' and splits.left_out.skipped_images == 1
    assert splits.label_names == ['idc_negative', 'idc_positive']
    assert 'patient-level' in splits.protocol.lower() and 'seed=0' in splits.protocol
    assert 'IDC_regular_ps50_idx5' in caplog.text  # the duplicate copy is said to be ignored
    patients = {name: set(getattr(splits, name)['patient_id']) for name in ('train', 'validation', 'test')}
    assert not (patients['train'] & patients['validation'] or patients['train'] & patients['test']
                or patients['validation'] & patients['test'])
    assert set.union(*patients.values()) == set(IDC_PATIENTS)
    assert (len(patients['test']), len(patients['validation'])) == (2, 1)
    rows = [row for part in _split_rows(splits, 'patient_id', 'x', 'y', 'label').values() for row in part]
    assert len(rows) == len(set(rows)) == sum(sum(c) for c in IDC_PATIENTS.values()) + 1  # + edge, - corrupt
    edge = [(name, i) for name, part in _split_rows(splits, 'patient_id', 'x', 'y', 'label').items()
            for i, row in enumerate(part) if row == IDC_EDGE_PATCH]
    assert len(edge) == 1
    split_name, index = edge[0]
    image = getattr(splits, split_name)[index]['image']
    assert image.size == (50, 31)
    dataset = ImageClassificationDataset(getattr(splits, split_name), build_transform('idc', DATA_CONFIG, True))
    tensor, label = dataset[index]
    assert tensor.shape == (3, 50, 50) and label == 0


def test_idc_parquet_with_patient_ids_is_split_by_patient_stratified(tmp_path: Path):
    # 40 patients, enough for every split to hold each quantile bin of the positive share
    patients = {str(100 + i): (4 - i % 4, 1 + i % 4) for i in range(40)}
    rows = [(p, label) for p, counts in patients.items() for label, n in enumerate(counts) for _ in range(n)]
    data = datasets.Dataset.from_dict({
        'image': random_images(len(rows), (8, 8)), 'label': [label for _, label in rows],
        'patient_id': [int(p) for p, _ in rows], 'x': list(range(len(rows))), 'y': [0] * len(rows),
    }, features=datasets.Features(image=datasets.Image(), label=datasets.Value('int64'),
                                  patient_id=datasets.Value('int64'), x=datasets.Value('int64'),
                                  y=datasets.Value('int64')))
    data.to_parquet(tmp_path / 'export' / 'train-00000-of-00001.parquet')
    splits = load_splits('idc', data_dir=str(tmp_path / 'export'), cache_dir=str(tmp_path / 'cache'))
    assert splits.patient_level and splits.label_names == ['idc_negative', 'idc_positive']
    assert "stratified by each patient's share of positive patches" in splits.protocol
    assert splits.train.features['patient_id'] == datasets.Value('string')
    patients = [set(split['patient_id']) for split in (splits.train, splits.validation, splits.test)]
    assert [len(p) for p in patients] == [28, 4, 8] and len(set.union(*patients)) == 40


def test_idc_without_patient_ids_warns_of_a_patch_level_split(tmp_path: Path, caplog):
    labels = [0, 1] * 20
    data = datasets.Dataset.from_dict({'image': random_images(40, (50, 50)), 'label': labels},
                                      features=datasets.Features(image=datasets.Image(),
                                                                 label=datasets.ClassLabel(names=['0', '1'])))
    data.to_parquet(tmp_path / 'export' / 'data.parquet')
    with caplog.at_level(logging.WARNING):
        splits = load_splits('idc', data_dir=str(tmp_path / 'export'), cache_dir=str(tmp_path / 'cache'))
    assert not splits.patient_level
    assert 'patch-level' in splits.protocol.lower() and 'leak' in splits.protocol
    assert 'PATCH-LEVEL' in caplog.text and 'leak' in caplog.text
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (28, 4, 8)
    assert splits.label_names == ['idc_negative', 'idc_positive']


def test_cifar10_from_a_local_copy_of_the_hub_parquet_files(tmp_path: Path):
    write_cifar10_parquet(tmp_path / 'cifar10', num_train=200, num_test=50)
    splits = load_splits('cifar10', data_dir=str(tmp_path / 'cifar10'), cache_dir=str(tmp_path / 'cache'))
    assert splits.label_names == CIFAR10_NAMES and splits.dataset == 'cifar10'
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (180, 20, 50)
    assert sorted(splits.validation['label']) == sorted(list(range(10)) * 2)  # stratified: 2 of each class
    assert splits.train.column_names == ['image', 'label'] and splits.train.features['label'].names == CIFAR10_NAMES
    assert splits.test[0]['image'].size == (32, 32)


def test_generic_imagefolder_gives_rgb_tensors_from_any_mode(tmp_path: Path):
    root = tmp_path / 'pets'
    for label in ('cat', 'dog'):
        for i in range(10):
            save_random_png(root / label / f'{i}.png', size=(40, 30), seed=i)
    save_random_png(root / 'cat' / 'gray.png', mode='L')
    save_random_png(root / 'dog' / 'rgba.png', mode='RGBA')
    splits = load_splits(str(root), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.dataset == 'generic' and splits.label_names == ['cat', 'dog'] and splits.source == str(root)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 22
    config = dict(DATA_CONFIG, input_size=(3, 32, 32))
    modes = set()
    for split in (splits.train, splits.validation, splits.test):
        modes |= {image.mode for image in split['image']}
        for tensor, label in ImageClassificationDataset(split, build_transform('generic', config, train=True)):
            assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32 and label in (0, 1)
    assert {'L', 'RGBA'} <= modes
    dataset = ImageClassificationDataset(splits.test, build_transform('generic', config, train=False))
    assert torch.equal(pickle.loads(pickle.dumps(dataset))[0][0], dataset[0][0])  # DataLoader workers get copies


@pytest.mark.parametrize('dataset, kwargs, message', [
    ('mnist', {}, "'digits', 'cifar10', 'idc'"),
    ('idc', {'data_dir': 'no/such/folder'}, 'does not exist'),
    ('digits', {'val_fraction': 0.5, 'test_fraction': 0.6}, 'sum to less than 1'),
    ('idc', {}, 'not published yet: pass --data-dir'),
    ('digits', {'hub_id': 'someone/digits'}, 'takes no --data-dir or --hub-id'),
])
def test_bad_arguments_raise_data_error(dataset, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_splits(dataset, **kwargs)


def test_folder_errors_raise_data_error(tmp_path: Path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='is empty'):
        load_splits('idc', data_dir=str(tmp_path / 'empty'))
    save_random_png(tmp_path / 'flat' / 'slide.png')
    with pytest.raises(DataError, match=r'<patient_id>/<0\|1>/'):
        load_splits('idc', data_dir=str(tmp_path / 'flat'))
    with pytest.raises(DataError, match='plain_text/train-'):
        load_splits('cifar10', data_dir=str(tmp_path / 'flat'))
    with pytest.raises(DataError, match='No label column'):
        load_splits(str(tmp_path / 'flat'), cache_dir=str(tmp_path / 'cache'))
    save_random_png(tmp_path / 'mislabelled' / '7' / '1' / '7_idx5_x0_y0_class0.png')
    with pytest.raises(DataError, match='must agree'):
        load_splits('idc', data_dir=str(tmp_path / 'mislabelled'))


def test_a_split_with_one_class_raises_data_error(tmp_path: Path):
    write_idc_patients(tmp_path / 'idc', {str(p): (3, 0) for p in range(1, 7)})
    with pytest.raises(DataError, match='train split has 12 examples of only one class .idc_negative.'):
        load_splits('idc', data_dir=str(tmp_path / 'idc'))


@pytest.mark.parametrize('dataset', ['digits', 'cifar10', 'idc', 'generic'])
def test_transform_shapes(dataset):
    image = random_images(1, (50, 31))[0]
    for train in (True, False):
        assert build_transform(dataset, DATA_CONFIG, train)(image).shape == (3, 50, 50)


def test_eval_transform_normalises_with_the_given_mean_and_std():
    colour = tuple(round(m * 255) for m in DATA_CONFIG['mean'])
    tensor = build_transform('cifar10', DATA_CONFIG, train=False)(Image.new('RGB', (17, 23), colour))
    assert torch.allclose(tensor, torch.zeros_like(tensor), atol=0.02)
    with pytest.raises(DataError, match='Unknown data set'):
        build_transform('mnist', DATA_CONFIG, train=False)


def test_digits_train_transform_does_not_flip():
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :12] = 255  # bright left, dark right: a horizontal flip would swap them
    pixels[:12, :] = 255  # bright top: a vertical flip would move it down
    transform = build_transform('digits', dict(DATA_CONFIG, input_size=(3, 32, 32)), train=True)
    for _ in range(20):
        tensor = transform(Image.fromarray(pixels))
        assert tensor[:, :, :10].mean() > tensor[:, :, -10:].mean()
        assert tensor[:, :10, :].mean() > tensor[:, -10:, :].mean()


# ---------------------------------------------------------------------------------------------------------------
# Hostile input (issue 15): broken, huge-declared, 16-bit and misnamed files, written as an attacker would

def _write_pets(root: Path, n: int = 8) -> None:
    for label in ('cat', 'dog'):
        for i in range(n):
            save_random_png(root / label / f'{i}.png', size=(20, 20), seed=i)


def test_an_imagefolder_skips_and_counts_unreadable_files_up_front(tmp_path: Path, caplog):
    root = tmp_path / 'pets'
    _write_pets(root / 'train')
    _write_pets(root / 'test', n=4)
    # in the test split: without the up-front check these would fail only after all training
    (root / 'test' / 'cat' / 'empty.jpg').write_bytes(b'')
    (root / 'test' / 'dog' / 'notes.png').write_text('not an image')
    save_png_declaring(root / 'test' / 'dog' / 'bomb.png', 60000, 60000)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(str(root), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.left_out.skipped_images == 3 and len(splits.test) == 8
    assert len(splits.train) + len(splits.validation) == 16
    assert f'Left out of {root}: 3 unreadable image file(s) (e.g. ' in caplog.text
    config = dict(DATA_CONFIG, input_size=(3, 32, 32))
    for split in (splits.train, splits.validation, splits.test):
        loader = torch.utils.data.DataLoader(
            ImageClassificationDataset(split, build_transform('generic', config, train=False)), batch_size=5)
        assert sum(len(labels) for _, labels in loader) == len(split)


def test_an_imagefolder_of_only_unreadable_files_is_a_data_error(tmp_path: Path):
    for label in ('cat', 'dog'):
        (tmp_path / 'junk' / label).mkdir(parents=True)
        (tmp_path / 'junk' / label / 'a.png').write_text('text')
    with pytest.raises(DataError, match='No readable images .* all 2 image files failed to decode'):
        load_splits(str(tmp_path / 'junk'), cache_dir=str(tmp_path / 'cache'))


def test_a_decompression_bomb_in_an_idc_folder_is_skipped_and_counted(idc_folder: Path, tmp_path: Path):
    save_png_declaring(idc_folder / '10255' / '1' / '10255_idx5_x700_y700_class1.png', 60000, 60000)
    splits = load_splits('idc', data_dir=str(idc_folder), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.left_out.skipped_images == 2  # the corrupt file and the bomb
    positions = {(p, x) for split in (splits.train, splits.validation, splits.test)
                 for p, x in zip(split['patient_id'], split['x'])}
    assert ('10255', 700) not in positions


def test_16_bit_grayscale_is_scaled_not_clipped_white_in_training(tmp_path: Path):
    root = tmp_path / 'scans'
    for label in ('a', 'b'):
        for i in range(10):
            save_16_bit_png(root / label / f'{i}.png', 32896)  # 32896 = 128 * 257: mid gray in 16 bits
    splits = load_splits(str(root), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.train[0]['image'].mode == 'I;16' and splits.left_out.skipped_images == 0
    identity = dict(DATA_CONFIG, input_size=(3, 20, 20), mean=(0., 0., 0.), std=(1., 1., 1.))
    tensor, _ = ImageClassificationDataset(splits.train, build_transform('generic', identity, train=False))[0]
    assert tensor.shape == (3, 20, 20)
    torch.testing.assert_close(tensor, torch.full_like(tensor, 128 / 255), rtol=0, atol=1e-6)


def test_idc_files_outside_the_name_pattern_are_counted_and_reported(tmp_path: Path, caplog):
    root = tmp_path / 'idc'
    write_idc_patients(root, IDC_PATIENTS)
    save_random_png(root / '10253' / '0' / '10253_idx5_x900_y0_class0.PNG')
    save_random_png(root / '10253' / '1' / '10253_idx5_x900_y0_class2.png')
    (root / '10254' / 'notes.txt').write_text('junk')
    with caplog.at_level(logging.WARNING):
        splits = load_splits('idc', data_dir=str(root), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.left_out.ignored_files == 3 and splits.left_out.skipped_images == 0
    assert '3 file(s) whose names are not IDC patch names' in splits.protocol  # metrics.json carries the protocol
    assert ': 3 file(s) not named as the data set names them (e.g. ' in caplog.text
    assert sum(len(s) for s in (splits.train, splits.validation, splits.test)) == sum(map(sum, IDC_PATIENTS.values()))
    clean = load_splits('idc', data_dir=str(write_idc_kaggle_folder(tmp_path / 'clean')), seed=0)
    assert clean.left_out.ignored_files == 0 and 'not IDC patch names' not in clean.protocol


# Issue 26: parquet values that used to end in a traceback, and broken image bytes found up front

def _write_parquet(folder: Path, columns: dict, features: datasets.Features) -> str:
    """A parquet file holding `columns` as they are, under `features`' schema: what any other tool may write
    (datasets itself refuses a ClassLabel of 99 on writing, not on reading)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    image = datasets.Image()
    encoded = {**columns, 'image': [image.encode_example(i) if isinstance(i, Image.Image) else i
                                    for i in columns['image']]}  # or {'bytes', 'path'} as they are
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict(encoded).cast(features.arrow_schema), folder / 'train.parquet')
    return str(folder)


def _idc_columns(n: int = 40, **changes) -> dict:
    """IDC rows of 8 patients with both classes each, `x` as text (as a careless export may hold it)."""
    return {'image': random_images(n, (8, 8)), 'label': [0, 1] * (n // 2),
            'patient_id': [str(i // 2 % 8) for i in range(n)], 'x': [str(50 * i) for i in range(n)], 'y': [1] * n,
            **changes}


IDC_FEATURES = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['0', '1']),
                                 patient_id=datasets.Value('string'), x=datasets.Value('string'),
                                 y=datasets.Value('int64'))
LABELS = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['a', 'b']))
INT_LABELS = datasets.Features(image=datasets.Image(), label=datasets.Value('int64'))


@pytest.mark.parametrize('dataset, labels, features, message', [
    ('folder', [-1] + [0, 1] * 19 + [1], LABELS, r"1 of the 40 rows .* outside the 2 classes 0..1 \(-1; -1 is datas"),
    ('folder', [99] + [0, 1] * 19 + [1], LABELS, r'1 of the 40 rows .* outside the 2 classes 0..1 \(99\)'),
    ('folder', [None] + [0, 1] * 19 + [1], INT_LABELS, r'1 of the 40 rows of the train split have no label \(null\)'),
    ('idc', [-1] + [0, 1] * 19 + [1], IDC_FEATURES, r'outside the 2 classes 0..1 \(-1; -1'),  # was 'idc_positive'
], ids=['classlabel-minus-1', 'classlabel-99', 'int-null', 'idc-minus-1'])
def test_labels_outside_the_classes_or_null_are_a_data_error(tmp_path, dataset, labels, features, message):
    columns = _idc_columns(labels=None) if dataset == 'idc' else {'image': random_images(40, (8, 8))}
    columns = {k: v for k, v in {**columns, 'label': labels}.items() if k in features}
    folder = _write_parquet(tmp_path / 'data', columns, features)
    with pytest.raises(DataError, match=message):
        load_splits('idc' if dataset == 'idc' else folder, data_dir=folder if dataset == 'idc' else None,
                    cache_dir=str(tmp_path / 'cache'))


@pytest.mark.parametrize('x, message', [
    ('abc', "The x column cannot be read as int32: Failed to parse string: 'abc'"),
    (None, r'1 of the 40 rows of the train split have no x \(null\)'),
    (str(10 ** 12), 'The x column cannot be read as int32'),
])
def test_idc_coordinates_that_are_no_numbers_are_a_data_error(tmp_path, x, message):
    columns = _idc_columns()
    folder = _write_parquet(tmp_path / 'data', {**columns, 'x': [x] + columns['x'][1:]}, IDC_FEATURES)
    with pytest.raises(DataError, match=message):
        load_splits('idc', data_dir=folder, cache_dir=str(tmp_path / 'cache'))


def test_an_idc_file_name_with_an_absurd_coordinate_is_a_data_error(idc_folder: Path, tmp_path: Path):
    name = '10255_idx5_x1000000000000_y1_class1.png'
    save_random_png(idc_folder / '10255' / '1' / name)
    with pytest.raises(DataError, match=f'{name}: x=1000000000000, y=1 is no slide position .at most 2147483647.'):
        load_splits('idc', data_dir=str(idc_folder), cache_dir=str(tmp_path / 'cache'))


@pytest.mark.parametrize('dataset', ['folder', 'idc'])
def test_broken_image_bytes_in_parquet_are_left_out_and_counted_up_front(tmp_path, dataset, caplog):
    """As for local folders: found before training (the same check runs on `hub:` data), not at their batch."""
    columns = _idc_columns()
    whole = datasets.Image().encode_example(columns['image'][1])['bytes']
    columns['image'][:2] = [{'bytes': b'\x89PNG not really', 'path': None}, {'bytes': whole[:60], 'path': None}]
    features = IDC_FEATURES if dataset == 'idc' else LABELS
    folder = _write_parquet(tmp_path / 'data', {k: v for k, v in columns.items() if k in features}, features)
    with caplog.at_level(logging.WARNING):
        splits = load_splits('idc' if dataset == 'idc' else folder, data_dir=folder if dataset == 'idc' else None,
                             cache_dir=str(tmp_path / 'cache'))
    assert splits.left_out.skipped_images == 2
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 38
    assert '2 unreadable image file(s) (e.g. train row 0, train row 1)' in caplog.text  # in the one summary line


def test_an_empty_image_cell_in_parquet_is_left_out_and_counted(tmp_path):
    """A null image (no bytes, no path) is an unreadable image, not a TypeError from deep inside the check."""
    columns = {'image': random_images(40, (8, 8)), 'label': [0, 1] * 20}
    columns['image'][3] = None
    folder = _write_parquet(tmp_path / 'data', columns, LABELS)
    splits = load_splits(folder, cache_dir=str(tmp_path / 'cache'))
    assert splits.left_out.skipped_images == 1 and splits.left_out.examples['skipped_images'] == ['train row 3']
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 39


# Issue 26: data that silently disappeared, contradictory patches, patient ids that are paths

def _idc_parquet(folder: Path, patient_ids: list) -> Path:
    """An IDC parquet copy with patient ids: two patients' worth of rows for each id, both classes."""
    rows = [(p, label) for p in patient_ids for label in (0, 1, 0, 1)]
    datasets.Dataset.from_dict({
        'image': random_images(len(rows), (8, 8)), 'label': [label for _, label in rows],
        'patient_id': [p for p, _ in rows], 'x': list(range(len(rows))), 'y': [0] * len(rows),
    }).cast_column('image', datasets.Image()).to_parquet(folder / 'train-00000-of-00001.parquet')
    return folder


@pytest.mark.parametrize('patient', ['../../../x', '/abs/x', 'a\nb', '..'])
def test_a_patient_id_that_is_a_path_is_refused_at_load(patient, tmp_path: Path):
    folder = _idc_parquet(tmp_path / 'export', ['101', '102', '103', patient, '104', '105'])
    with pytest.raises(DataError, match=r'The patient_id .* cannot be a file name'):
        load_splits('idc', data_dir=str(folder), cache_dir=str(tmp_path / 'cache'))


def test_every_idc_file_left_out_is_counted_and_named_in_one_line(idc_folder: Path, tmp_path: Path, caplog):
    """A self-looping link beside three patches (once: the folder's other patches were dropped with it) and a link
    that leads nowhere are left out, each counted and named; a patient folder linked inside the folder is read."""
    class_folder = idc_folder / '10256' / '0'
    (class_folder / 'loop.png').symlink_to('loop.png')
    (idc_folder / '10257' / '1' / 'gone.png').symlink_to(tmp_path / 'nowhere.png')
    shutil.move(idc_folder / '10262', idc_folder / 'IDC_regular_ps50_idx5' / '10262')
    (idc_folder / '10262').symlink_to(idc_folder / 'IDC_regular_ps50_idx5' / '10262')
    with caplog.at_level(logging.WARNING):
        splits = load_splits('idc', data_dir=str(idc_folder), seed=0, cache_dir=str(tmp_path / 'cache'))
    rows = [row for part in _split_rows(splits, 'patient_id').values() for row in part]
    assert len(rows) == sum(sum(c) for c in IDC_PATIENTS.values()) + 1  # every patch, the linked patient's too
    assert (splits.left_out.unreachable, splits.left_out.skipped_images) == (2, 1)
    summary = [r.message for r in caplog.records if r.message.startswith('Left out of ')]
    assert len(summary) == 1 and '2 link(s) or folder(s) that could not be read' in summary[0]
    assert '10256/0/loop.png' in summary[0] and '10257/1/gone.png' in summary[0]
    assert '1 unreadable image file(s) (e.g. 10254/1/10254_idx5_x999_y999_class1.png)' in summary[0]
    assert 'Skipped' not in caplog.text  # no folder is said to be skipped


def test_a_link_out_of_the_data_folder_is_refused_naming_it(idc_folder: Path, tmp_path: Path):
    shutil.move(idc_folder / '10262', tmp_path / '10262')
    (idc_folder / '10262').symlink_to(tmp_path / '10262')
    with pytest.raises(DataError, match=rf'{idc_folder / "10262"} is a symbolic link to .*, outside {idc_folder}'):
        load_splits('idc', data_dir=str(idc_folder), seed=0, cache_dir=str(tmp_path / 'cache'))


def test_an_empty_class_folder_is_counted_and_named(tmp_path: Path, caplog):
    root = tmp_path / 'pets'
    _write_pets(root)
    (root / 'bird').mkdir()
    with caplog.at_level(logging.WARNING):
        splits = load_splits(str(root), seed=0, cache_dir=str(tmp_path / 'cache'))
    assert splits.label_names == ['cat', 'dog'] and splits.left_out.empty_classes == 1
    assert f'Left out of {root}: 1 empty class folder(s) (e.g. bird).' in caplog.text


def test_patches_at_one_position_under_both_labels_are_both_dropped(idc_folder: Path, tmp_path: Path, caplog):
    patient = '10256'  # its class-0 patch at x0 y0, and now a class-1 patch at the same place
    save_random_png(idc_folder / patient / '1' / f'{patient}_idx5_x0_y0_class1.png', seed=5)
    with caplog.at_level(logging.WARNING):
        splits = load_splits('idc', data_dir=str(idc_folder), seed=0, cache_dir=str(tmp_path / 'cache'))
    rows = [row for part in _split_rows(splits, 'patient_id', 'x', 'y').values() for row in part]
    assert (patient, 0, 0) not in rows and len(rows) == sum(sum(c) for c in IDC_PATIENTS.values()) + 1 - 1
    assert splits.left_out.contradictory_patches == 2
    assert f'2 patch(es) whose position also appears under the other label (e.g. {patient} x0 y0)' in caplog.text
