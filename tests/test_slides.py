"""IDC as the literature and pathologists read it: the published split, per-patient metrics, whole-slide maps."""
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from datagen import write_idc_slides
from timm_patchconvnet.config import TrainConfig
from timm_patchconvnet.data import DataError, load_idc_patches, load_splits
from timm_patchconvnet.dataset_specs import DATASETS, published_split
from timm_patchconvnet.slides import (SlideError, make_slide, patch_layer, predict_slide, region_scores, render_slide,
                                      slide_from_rows, stitch)
from timm_patchconvnet.training import train
from timm_patchconvnet.training.metrics import per_patient_metrics

BIN = Path(sys.executable).parent
JANOWCZYK = published_split(DATASETS['idc'], 'janowczyk')


def test_the_published_split_ships_with_its_source():
    assert [len(JANOWCZYK[s]) for s in ('train', 'validation', 'test')] == [84, 29, 49]
    assert 'Janowczyk' in JANOWCZYK['source'] and 'choosehappy/public' in JANOWCZYK['source']
    assert len(set(JANOWCZYK['train']) | set(JANOWCZYK['validation']) | set(JANOWCZYK['test'])) == 162


def test_the_published_split_uses_exactly_the_listed_patients(tmp_path):
    listed = {split: JANOWCZYK[split][:2] for split in ('train', 'validation', 'test')}
    unlisted = ['99990', '99991']
    write_idc_slides(tmp_path / 'IDC', [*sum(listed.values(), []), *unlisted], grid=4)
    with pytest.raises(DataError, match='--allow-missing-patients'):
        load_splits('idc', data_dir=str(tmp_path / 'IDC'), split_protocol='janowczyk')
    splits = load_splits('idc', data_dir=str(tmp_path / 'IDC'), split_protocol='janowczyk', allow_missing_patients=True)
    for split in ('train', 'validation', 'test'):
        assert set(getattr(splits, split)['patient_id']) == set(listed[split])
    assert splits.protocol_kind == 'published split' and splits.patient_level
    assert '2/2/2 train/validation/test patients' in splits.protocol and '2 patient(s) of the data in no list' \
        in splits.protocol
    with pytest.raises(DataError, match='not a published split of --dataset cifar10'):
        load_splits('cifar10', data_dir=str(tmp_path / 'IDC'), split_protocol='janowczyk')


def test_stitching_puts_every_patch_at_its_pixel_offset_exactly():
    rng = np.random.default_rng(0)
    sizes = {(1, 1): (50, 50), (51, 1): (31, 50), (1, 51): (50, 50), (51, 51): (31, 12)}  # edge patches smaller
    patches = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes.values()]
    xs, ys = zip(*sizes)
    slide = make_slide('p', patches, [x + 100 for x in xs], [y + 200 for y in ys])  # any origin
    image = np.asarray(stitch(slide))
    assert image.shape == (100, 81, 3)  # two rows of 50 high; 50 + 31 wide
    for patch, (x, y) in zip(patches, sizes):
        w, h = patch.size
        assert np.array_equal(image[y - 1:y - 1 + h, x - 1:x - 1 + w], np.asarray(patch))


def test_the_annotated_mask_is_the_class_1_patches(tmp_path):
    regions = write_idc_slides(tmp_path / 'IDC', ['10001'], grid=5)
    slide = slide_from_rows(load_idc_patches(str(tmp_path / 'IDC')), '10001')
    mask = patch_layer(slide, (slide.labels == 1).astype(float), 0.) == 1
    expected = np.zeros_like(mask)
    x0, y0 = slide.origin
    for x, y in regions['10001']:
        w = 31 if x == 1 + 50 * 4 else 50
        expected[y - y0:y - y0 + 50, x - x0:x - x0 + w] = True
    assert mask.any() and np.array_equal(mask, expected)
    assert region_scores(slide.labels == 1, slide.labels == 1) == {'dice': 1.0, 'iou': 1.0}
    assert region_scores(np.zeros(3, bool), np.zeros(3, bool)) == {'dice': None, 'iou': None}


def test_per_patient_metrics_equal_scikit_learn_on_each_patients_rows():
    rng = np.random.default_rng(1)
    patients = np.repeat(['a', 'b', 'c', 'd'], 30)
    labels = rng.integers(0, 2, len(patients))
    labels[patients == 'd'] = 0  # one class only: no balanced accuracy or ROC-AUC for that patient
    probs = np.clip(labels * 0.4 + rng.random(len(labels)) * 0.7, 0, 1)
    result = per_patient_metrics(labels, probs, patients, threshold=0.5)
    for patient in 'abc':
        mine = patients == patient
        row = result['patients'][patient]
        assert row['balanced_accuracy'] == pytest.approx(balanced_accuracy_score(labels[mine], probs[mine] >= 0.5))
        assert row['f1'] == pytest.approx(f1_score(labels[mine], probs[mine] >= 0.5))
        assert row['roc_auc'] == pytest.approx(roc_auc_score(labels[mine], probs[mine]))
    assert result['patients']['d']['roc_auc'] is None and result['roc_auc']['patients'] == 3
    assert result['balanced_accuracy']['mean'] == pytest.approx(
        np.mean([result['patients'][p]['balanced_accuracy'] for p in 'abc']))


def test_bad_slides_get_clear_errors(tmp_path):
    write_idc_slides(tmp_path / 'IDC', ['10001', '10002'], grid=3)
    patches = load_idc_patches(str(tmp_path / 'IDC'))
    with pytest.raises(SlideError, match=r"No patches of patient '424242' here; the patients are: 10001, 10002"):
        slide_from_rows(patches, '424242')
    one = Image.new('RGB', (50, 50), (200, 100, 150))
    with pytest.raises(SlideError, match='two patches at x=1, y=1: a.png and b.png'):
        make_slide('p', [one, one], [1, 1], [1, 1], names=['a.png', 'b.png'])
    slide = make_slide('p', [one], [1], [1], [1])  # a slide of one patch still renders
    model = timm.create_model('patchconvnet_test_p4', num_classes=2).eval()
    scores = render_slide(slide, predict_slide(model, slide), tmp_path / 'one.png', threshold=0.0)
    assert Image.open(tmp_path / 'one.png').size[0] > 100 and scores == {'dice': 1.0, 'iou': 1.0}


@pytest.fixture(scope='module')
def idc_slide_run(tmp_path_factory):
    """A small model trained for real on stand-in slides (10 patients, seeded patient split)."""
    root = tmp_path_factory.mktemp('slides')
    patients = [str(20001 + i) for i in range(10)]
    write_idc_slides(root / 'IDC', patients, grid=6)
    cfg = TrainConfig(dataset='idc', data_dir=str(root / 'IDC'), model='patchconvnet_test_p4', epochs=4,
                      batch_size=32, lr=3e-3, output_dir=str(root / 'run'), seed=0)
    return root, train(cfg)


def test_a_model_trained_on_stand_in_slides_localises_the_regions(idc_slide_run):
    root, result = idc_slide_run
    test = result['test']
    assert result['data']['protocol_kind'] == 'seeded patient split'
    assert 0 < test['threshold'] < 1 and test['threshold_chosen_on'].startswith('validation')
    assert test['regions']['slides'] == 2 and test['regions']['mean_dice'] >= 0.8, test['regions']
    assert set(test['per_patient']['patients']) == set(result['data']['test_patients'])
    written = sorted((root / 'run' / 'slides').glob('*.png'))
    assert len(written) == 2 and all(Image.open(p).size[0] > 500 for p in written)
    metrics = json.loads((root / 'run' / 'metrics.json').read_text())
    assert metrics['test']['regions']['mean_dice'] == test['regions']['mean_dice']


def test_the_slides_command_draws_a_patient_of_a_run(idc_slide_run, tmp_path):
    root, result = idc_slide_run
    patient = result['data']['test_patients'][0]
    command = [BIN / 'patchconvnet-slides', '--model', root / 'run', '--data-dir', root / 'IDC', '--patient', patient,
               '--cache-dir', tmp_path / 'cache', '--out', tmp_path / 'maps']
    # both at once: each process spends most of its time importing, on one core
    good, bad = (subprocess.Popen([str(c) for c in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for argv in (command, command[:-4] + ['--patient', 'nobody']))
    (out, err), (_, bad_err) = good.communicate(timeout=600), bad.communicate(timeout=600)
    assert good.returncode == 0, err
    assert f'{patient}.png: 36 patches; Dice ' in out and (tmp_path / 'maps' / f'{patient}.png').is_file()
    assert any((tmp_path / 'cache' / 'timm_patchconvnet').iterdir())  # the folder's check, kept where asked
    assert bad.returncode == 2 and bad_err.startswith("error: No patches of patient 'nobody'")


def test_the_model_card_shows_the_protocol_the_patients_and_the_slides(idc_slide_run, tmp_path):
    from timm_patchconvnet.hub import export_model_folder

    root, result = idc_slide_run
    out = export_model_folder(str(root / 'run'), str(tmp_path / 'export'), 'someone/idc-slides')
    card = (out / 'README.md').read_text()
    assert '**Patient-level split (seeded patient split)**' in card
    assert 'chosen on the validation patients' in card and '| per test patient |' in card
    assert f"mean Dice {result['test']['regions']['mean_dice']:.4f}" in card
    slides = sorted(p.name for p in (out / 'slides').glob('*.png'))
    assert len(slides) == 2 and all(f'](slides/{name})' in card for name in slides)


def test_the_hub_export_carries_the_published_split(tmp_path):
    from huggingface_hub import DatasetCard

    from timm_patchconvnet.hub.dataset import export_idc_dataset

    listed = {split: JANOWCZYK[split][:2] for split in ('train', 'validation', 'test')}
    write_idc_slides(tmp_path / 'IDC', [*sum(listed.values(), []), '99990'], grid=4)
    export = export_idc_dataset(str(tmp_path / 'IDC'), str(tmp_path / 'export'), split='janowczyk',
                                allow_missing_patients=True)
    assert export.num_rows == {name: 32 for name in ('train', 'validation', 'test')}  # 2 patients x 16 patches
    card = DatasetCard.load(export.folder / 'README.md').text
    assert 'Pre-split **by patient** (the published split)' in card and "Published patient split 'janowczyk'" in card


def _zip(path: Path, entries: dict, compression=zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, 'w', compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return str(path)


def _png(colour=(200, 100, 150), size=(50, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new('RGB', size, colour).save(buffer, format='PNG')
    return buffer.getvalue()


def test_a_zip_of_one_patient_becomes_its_slide_and_hostile_zips_are_refused(tmp_path):
    from timm_patchconvnet.slides.upload import read_patient_zip

    write_idc_slides(tmp_path / 'IDC', ['30001'], grid=3)
    files = {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted((tmp_path / 'IDC').rglob('*.png'))}
    good = _zip(tmp_path / 'good.zip', {**files, 'IDC/notes.txt': b'hello', 'IDC/30001/x.PNG': _png()})
    slide, skipped = read_patient_zip(good)
    assert slide.patient_id == '30001' and len(slide.patches) == 9 and sorted(skipped) == ['IDC/30001/x.PNG',
                                                                                            'IDC/notes.txt']
    assert np.array_equal(np.asarray(stitch(slide)), np.asarray(stitch(slide_from_rows(
        load_idc_patches(str(tmp_path / 'IDC')), '30001'))))  # the same slide as from the folder
    name = '30001_idx5_x1_y1_class0.png'
    cases = {
        'not a zip': (tmp_path / 'plain.zip', None, 'Not a readable zip file'),
        'zip bomb': (tmp_path / 'bomb.zip', {name: b'\0' * (8 << 20)}, 'zip bomb'),
        'path traversal': (tmp_path / 'up.zip', {f'../../{name}': _png()}, 'points outside the archive'),
        'absolute path': (tmp_path / 'abs.zip', {f'/etc/{name}': _png()}, 'points outside the archive'),
        'two patients': (tmp_path / 'two.zip', {name: _png(), '30002_idx5_x1_y1_class0.png': _png()},
                         'patches of 2 patients'),
        'duplicate coordinates': (tmp_path / 'dup.zip', {f'a/{name}': _png(), f'b/{name}': _png()},
                                  f'two patches at x=1, y=1: a/{name} and b/{name}'),
        'no patches': (tmp_path / 'none.zip', {'readme.md': b'#'}, 'No IDC patches in the zip'),
        'not a png': (tmp_path / 'text.zip', {name: b'not an image'}, 'not a readable PNG'),
    }
    for case, (path, entries, message) in cases.items():
        if entries is None:
            path.write_bytes(b'PK but not really a zip')
        else:
            _zip(path, entries)
        with pytest.raises(SlideError, match=re.escape(message)):
            read_patient_zip(str(path))


def test_the_whole_slide_tab_draws_an_upload_and_explains_refusals(tmp_path):
    gr = pytest.importorskip('gradio')
    from timm_patchconvnet.demo.models import DemoModel
    from timm_patchconvnet.slides.demo_tab import draw_slide

    write_idc_slides(tmp_path / 'IDC', ['30001'], grid=3)
    files = {p.name: p.read_bytes() for p in (tmp_path / 'IDC').rglob('*.png')}
    upload = _zip(tmp_path / 'patient.zip', {**files, 'stray.txt': b'x'})
    models = {'idc': DemoModel('idc', timm.create_model('patchconvnet_test_p4', num_classes=2).eval(), ['n', 'p']),
              'imagenet': DemoModel('imagenet', timm.create_model('patchconvnet_test_p4').eval(), ['0'] * 1000)}
    picture, notes = draw_slide(models, 'idc', upload, None, 0.5)
    assert picture.size[0] > 500 and 'Patient 30001: 9 patches' in notes and '1 file(s) outside the naming' in notes
    data = load_idc_patches(str(tmp_path / 'IDC'))
    picture, notes = draw_slide(models, 'idc', None, '30001', 0.5, data)
    assert 'Patient 30001: 9 patches' in notes and 'Dice' in notes
    with pytest.raises(gr.Error, match='a whole-slide map needs a two-class'):
        draw_slide(models, 'imagenet', upload, None, 0.5)
    with pytest.raises(gr.Error, match='points outside the archive'):
        draw_slide(models, 'idc', _zip(tmp_path / 'up.zip', {'../30001_idx5_x1_y1_class0.png': _png()}), None, .5)
    with pytest.raises(gr.Error, match="Upload a zip of one patient's patches"):
        draw_slide(models, 'idc', None, None, 0.5)


def test_patches_far_apart_make_a_bounded_canvas_and_absurd_spans_are_refused(tmp_path):
    """Issue 26: a 556-byte zip of patches at (1, 1) and (12000, 12000) asked for a 10.7 GB canvas."""
    import time

    from timm_patchconvnet.slides.patches import MAX_CANVAS_PIXELS, MAX_DOWNSCALE
    from timm_patchconvnet.slides.upload import read_patient_zip

    far = _zip(tmp_path / 'far.zip', {'9_idx5_x1_y1_class1.png': _png((255, 0, 0)),
                                      '9_idx5_x12000_y12000_class0.png': _png((0, 0, 255))})
    slide, _ = read_patient_zip(far)
    width, height = slide.size
    assert width * height <= MAX_CANVAS_PIXELS and width == height > 1500
    image = np.asarray(stitch(slide))
    (left, top, right, bottom), (left2, top2, right2, bottom2) = slide.boxes()
    assert (left, top, right) == (0, 0, round(50 * slide.scale)) and (right2, bottom2) == (width, height)
    assert (image[top:bottom, left:right] == (255, 0, 0)).all()
    assert (image[top2:bottom2, left2:right2] == (0, 0, 255)).all()
    absurd = _zip(tmp_path / 'absurd.zip', {'9_idx5_x1_y1_class1.png': _png(),
                                            '9_idx5_x1000000000000_y1_class0.png': _png()})
    with pytest.raises(SlideError, match=rf'patches span 1000000000000 x 1 slide pixels .* at most '
                                         rf'{MAX_CANVAS_PIXELS * MAX_DOWNSCALE ** 2:,} pixels'):
        read_patient_zip(absurd)
    gr = pytest.importorskip('gradio')
    from timm_patchconvnet.demo.models import DemoModel
    from timm_patchconvnet.slides.demo_tab import draw_slide
    models = {'idc': DemoModel('idc', timm.create_model('patchconvnet_test_p4', num_classes=2).eval(), ['n', 'p'])}
    started = time.time()
    picture, notes = draw_slide(models, 'idc', far, None, 0.5)  # the demo's /slide
    assert time.time() - started < 30 and picture.size[0] > 500 and 'Patient 9: 2 patches' in notes
    with pytest.raises(gr.Error, match='patches span 1000000000000 x 1 slide pixels'):
        draw_slide(models, 'idc', absurd, None, 0.5)
