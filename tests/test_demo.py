"""The Gradio demo, served for real on a free local port: gradio_client requests and a real headless Chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import timm
from PIL import Image
from safetensors.torch import save_file

from conftest import ROOT
from datagen import write_idc_slides
from timm_patchconvnet.model_folder import save_model_folder
from timm_patchconvnet.hub.space import MODELS_VARIABLE, export_space_folder

gr = pytest.importorskip('gradio', reason='the demo extra is not installed')
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from timm_patchconvnet.demo import app as demo_app  # noqa: E402  (the app behind demo/app.py)
from timm_patchconvnet.demo.examples import example_images  # noqa: E402
from timm_patchconvnet.demo.explain import GRADCAM, PREDICTED  # noqa: E402
from timm_patchconvnet.demo.uploads import MIN_SIDE  # noqa: E402

CHROMIUM = Path('/usr/bin/chromium')  # Debian's, installed by .ci/run; never a browser downloaded by Playwright
DIGIT_LABELS = [str(d) for d in range(10)]
PER_CLASS_LABELS = ['cat', 'dog', 'bird']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict:
    """Two training output folders, as train.py writes them: a single-token and a per-class-token model."""
    root = tmp_path_factory.mktemp('runs')
    single = timm.create_model('patchconvnet_test_p4', num_classes=10, init_values=1.0)
    save_model_folder(single, root / 'digits', DIGIT_LABELS)
    per_class = timm.create_model('patchconvnet_test_p4', num_classes=3, init_values=1.0, class_tokens='per_class')
    save_model_folder(per_class, root / 'pets', PER_CLASS_LABELS)
    return {'single': str(root / 'digits'), 'per_class': str(root / 'pets')}


@contextmanager
def _serving(command: list, cwd: Path, env: dict, process_out: Optional[list] = None):
    """Run `command` (a demo listening on --port), wait until it accepts connections, yield its URL, stop it;
    `process_out` gets the server's process. The demo picks its own private temp folder unless `env` names one."""
    port = _free_port()
    env = dict({k: v for k, v in os.environ.items() if k != 'GRADIO_TEMP_DIR'}, GRADIO_ANALYTICS_ENABLED='False',
               HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1', **env)
    process = subprocess.Popen([*command, '--port', str(port)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    try:
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    process.kill()
                    pytest.fail(f'the demo did not start:\n{process.stdout.read()}')
                time.sleep(0.5)
        if process_out is not None:
            process_out.append(process)
        yield f'http://127.0.0.1:{port}/'
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope='module')
def server(checkpoints, tmp_path_factory):
    """`python demo/app.py --model A --checkpoint B --port N`, as a user starts it (--checkpoint: the old name of
    --model, still accepted); stopped after the module."""
    command = [sys.executable, str(ROOT / 'demo' / 'app.py'), '--model', checkpoints['single'],
               '--checkpoint', checkpoints['per_class']]
    process = []
    with _serving(command, tmp_path_factory.mktemp('demo-cwd'), {}, process) as url:
        # the models are shown by their folders' names, never by their paths on the server
        yield {'url': url, 'checkpoints': checkpoints, 'models': {'single': 'digits', 'per_class': 'pets'},
               'pid': process[0].pid}


@pytest.fixture(scope='module')
def client(server) -> Client:
    return Client(server['url'], verbose=False)


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> dict:
    """Upload files of every kind the issue names, plus a real photo and a real digit."""
    folder = tmp_path_factory.mktemp('uploads')
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, ((xx - 20) ** 2 + (yy - 16) ** 2 < 100) * 255], -1).clip(0, 255)
    paths = {name: folder / f'{name}.png' for name in ('rgb', 'gray', 'rgba', 'tiny', 'huge')}
    Image.fromarray(rgb.astype(np.uint8)).save(paths['rgb'])
    Image.fromarray(rgb.astype(np.uint8)).convert('L').save(paths['gray'])
    Image.fromarray(rgb.astype(np.uint8)).convert('RGBA').save(paths['rgba'])
    Image.new('RGB', (1, 1), 'red').save(paths['tiny'])
    Image.new('1', (20000, 20000)).save(paths['huge'])  # 50 KB of PNG, 400 megapixels decoded
    paths['text'] = folder / 'notes.png'
    paths['text'].write_text('not an image, whatever the name says\n')
    paths['empty'] = folder / 'empty.png'
    paths['empty'].write_bytes(b'')
    paths['digit'] = ROOT / 'demo' / 'examples' / 'digit-3.png'
    return paths


def explain(client, image, model, class_name=PREDICTED, colormap='jet', opacity=0.5):
    return client.predict(handle_file(str(image)), model, class_name, colormap, opacity, api_name='/explain')


def test_predict_returns_probabilities_and_a_heatmap_of_the_inputs_size(client, server, images):
    label, overlay_path, grid_path, probabilities, notes = explain(client, images['rgb'],
                                                                    server['models']['single'])
    assert set(probabilities) == set(DIGIT_LABELS)  # the label names saved by the training run
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    top = sorted(probabilities, key=probabilities.get, reverse=True)[:demo_app.TOP_K]
    assert [c['label'] for c in label['confidences']] == top and label['label'] == top[0]
    overlay = np.asarray(Image.open(overlay_path).convert('RGB'), dtype=np.float32)
    assert overlay.shape == (48, 64, 3)  # the uploaded image's size, not the model's 32x32 view
    heat = overlay - np.asarray(Image.open(images['rgb']).convert('RGB'), dtype=np.float32) * 0.5
    assert heat.std(axis=(0, 1)).max() > 5  # the heatmap varies over the image
    grid = Image.open(grid_path)
    assert grid.size[0] == grid.size[1] and grid.size[0] >= 8 * 8  # the 8x8 token grid, drawn large
    assert '8x8 token grid' in notes


def test_per_class_tokens_show_the_chosen_class(client, server, images):
    model = server['models']['per_class']
    predicted = explain(client, images['rgb'], model)
    assert predicted[0]['label'] in PER_CLASS_LABELS
    grids = {name: np.asarray(Image.open(explain(client, images['rgb'], model, name)[2]), dtype=np.float32)
             for name in PER_CLASS_LABELS}
    assert 'of "dog"' in explain(client, images['rgb'], model, 'dog')[-1]
    assert np.abs(grids['cat'] - grids['bird']).max() > 0  # each class token has its own map
    with pytest.raises(AppError, match='not a class of'):
        explain(client, images['rgb'], model, 'zebra')


def test_the_map_toggle_serves_grad_cam(client, server, images):
    pytest.importorskip('pytorch_grad_cam', reason='optional: Grad-CAM needs the explain extra (pip install grad-cam)')
    single, per_class = server['models']['single'], server['models']['per_class']
    attention = explain(client, images['rgb'], single)  # the map parameter left out: attention, as before
    gradcam = client.predict(handle_file(str(images['rgb'])), single, PREDICTED, 'jet', 0.5,
                             GRADCAM, api_name='/explain')
    # the same prediction: the attention's pass at the served precision (bf16 where the CPU runs it), Grad-CAM's fp32
    assert gradcam[3].keys() == attention[3].keys()
    assert max(abs(gradcam[3][k] - attention[3][k]) for k in attention[3]) < 0.02
    assert 'Attention of the class token' in attention[-1] and 'Grad-CAM of "' in gradcam[-1]
    assert Image.open(gradcam[1]).size == (64, 48)  # on the uploaded image
    grids = [np.asarray(Image.open(answer[2]).convert('RGB'), dtype=np.float32) for answer in (attention, gradcam)]
    assert np.abs(grids[0] - grids[1]).max() > 0
    dog = client.predict(handle_file(str(images['rgb'])), per_class, 'dog', 'jet', 0.5, GRADCAM,
                         api_name='/explain')
    assert 'Grad-CAM of "dog"' in dog[-1]


@pytest.mark.parametrize('kind, message', [
    ('text', 'not an image'),
    ('empty', 'not an image'),
    ('tiny', '1x1 pixels'),
    ('huge', 'megapixels'),
])
def test_bad_uploads_get_a_clear_message_and_the_server_goes_on(client, server, images, kind, message):
    with pytest.raises(AppError, match=message):
        explain(client, images[kind], server['models']['single'])
    probabilities = explain(client, images['digit'], server['models']['single'])[3]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_no_image_asks_for_one(client, server):
    with pytest.raises(AppError, match='Upload an image'):
        client.predict(None, server['models']['single'], PREDICTED, 'jet', 0.5, api_name='/explain')


@pytest.mark.parametrize('kind, mode', [('gray', 'L'), ('rgba', 'RGBA')])
def test_grayscale_and_rgba_images_are_explained_as_rgb(client, server, images, kind, mode):
    _, overlay_path, _, _, notes = explain(client, images[kind], server['models']['single'])
    assert f'The image was {mode}' in notes
    assert Image.open(overlay_path).size == (64, 48)


def test_concurrent_requests_queue_behind_one_model_run(client, server, images, checkpoints):
    app = demo_app.build_app(demo_app.load_all([checkpoints['single']]), concurrency=1)
    explain_fn = next(fn for fn in app.fns.values() if fn.api_name == 'explain')
    assert explain_fn.concurrency_limit == 1 and explain_fn.queue
    # four different opacities: identical results would share one file in gradio's cache, which gradio 6.31
    # rewrites in place (processing_utils.save_bytes_to_cache) while an earlier response may still be sending it
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda opacity: explain(client, images['digit'], server['models']['single'],
                                                        opacity=opacity), (0.3, 0.4, 0.5, 0.6)))
    assert len({r[0]['label'] for r in results}) == 1  # same answer for every queued request


@pytest.fixture(scope='module')
def bad_checkpoints(checkpoints, tmp_path_factory) -> dict:
    """--model values that cannot be served, by what is wrong with them."""
    root = tmp_path_factory.mktemp('bad')
    truncated = shutil.copytree(checkpoints['single'], root / 'truncated')
    weights = (truncated / 'model.safetensors').read_bytes()
    (truncated / 'model.safetensors').write_bytes(weights[:len(weights) // 2])
    other = shutil.copytree(checkpoints['single'], root / 'other-architecture')
    save_file(timm.create_model('resnet10t', num_classes=10).state_dict(), str(other / 'model.safetensors'))
    return {
        'missing folder': str(root / 'nope'),
        'truncated safetensors': str(truncated),
        "another architecture's weights": str(other),
        'missing local-dir': f'local-dir:{root / "gone"}',
        'offline hf-hub': 'hf-hub:timm-patchconvnet/no-such-model',
        'mistyped relative path': 'runs/digts',
    }


@pytest.mark.parametrize('case', ['missing folder', 'truncated safetensors', "another architecture's weights",
                                  'missing local-dir', 'offline hf-hub', 'mistyped relative path'])
def test_bad_checkpoint_stops_the_app_with_one_error_line(bad_checkpoints, case, tmp_path):
    spec = bad_checkpoints[case]
    result = subprocess.run([sys.executable, str(ROOT / 'demo' / 'app.py'), '--model', spec],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path,
                            env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith('error:'), result.stderr
    assert spec in errors[0] or Path(spec.removeprefix('local-dir:')).name in errors[0]


def test_examples_are_real_images_shipped_with_the_repo_or_its_dependencies():
    examples = example_images()
    assert any(p.endswith('china.jpg') for p in examples)  # scikit-learn's sample photo
    for path in examples:
        with Image.open(path) as image:
            assert min(image.size) >= MIN_SIDE


@pytest.fixture(scope='module')
def browser():
    if not CHROMIUM.exists():
        if os.environ.get('CI'):
            pytest.fail(f'{CHROMIUM} is missing: .ci/run installs Debian chromium')
        pytest.skip(f'{CHROMIUM} not installed (apt-get install chromium)')
    playwright = pytest.importorskip('playwright.sync_api')
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync'])
        yield browser
        browser.close()


def test_in_a_real_browser_upload_explain_and_see_the_heatmap(browser, server, images, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    page.goto(server['url'])
    upload = page.locator('input[type=file]').first
    upload.set_input_files(str(images['rgb']))
    page.get_by_role('button', name='Explain').click()
    expect(page.locator('#notes')).to_contain_text('8x8 token grid', timeout=60_000)
    overlay = page.locator('#overlay img')
    expect(overlay).to_be_visible()
    size = overlay.evaluate('img => [img.naturalWidth, img.naturalHeight]')
    assert size == [64, 48]
    expect(page.locator('#top-classes')).to_contain_text('%')
    assert page.locator('#grid img').evaluate('img => img.naturalWidth') >= 64
    page.screenshot(path=str(tmp_path / 'demo.png'), full_page=True)
    assert (tmp_path / 'demo.png').stat().st_size > 10_000

    # a decompression bomb gets a message in the page, and the next image is still explained
    page.get_by_role('button', name='Remove Image').click()
    page.locator('input[type=file]').first.set_input_files(str(images['huge']))
    page.get_by_role('button', name='Explain').click()
    expect(page.get_by_text('megapixels').first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(tmp_path / 'demo-error.png'), full_page=True)
    page.reload()
    page.locator('input[type=file]').first.set_input_files(str(images['gray']))
    page.get_by_role('button', name='Explain').click()
    expect(page.locator('#notes')).to_contain_text('The image was L', timeout=60_000)
    page.close()


@pytest.fixture(scope='module')
def slide_server(tmp_path_factory):
    """The demo serving a two-class model with `--slide-data`: a Kaggle-layout IDC folder of two patients."""
    root = tmp_path_factory.mktemp('slides')
    write_idc_slides(root / 'IDC', ['30001', '30002'], grid=3)
    with _idc_demo(root, tmp_path_factory.mktemp('slide-cwd'), '--slide-data', str(root / 'IDC')) as url:
        yield {'url': url, 'data': root / 'IDC'}


@contextmanager
def _idc_demo(root: Path, cwd: Path, *flags: str, mpp: Optional[float] = None):
    """The demo serving `root`/idc-model, a two-class patchconvnet_test_p4 (saved with `mpp`), with `flags`."""
    model = timm.create_model('patchconvnet_test_p4', num_classes=2, init_values=1.0)
    save_model_folder(model, root / 'idc-model', ['no IDC', 'IDC'], mpp=mpp)
    command = [sys.executable, str(ROOT / 'demo' / 'app.py'), '--model', str(root / 'idc-model'), *flags]
    with _serving(command, cwd, {}) as url:
        yield url


def test_in_a_real_browser_the_whole_slide_tab_draws_an_upload_a_patient_and_refuses_a_hostile_zip(
        browser, slide_server, tmp_path):
    from playwright.sync_api import expect

    patient_zip, hostile_zip = tmp_path / 'patient-30001.zip', tmp_path / 'escape.zip'
    with zipfile.ZipFile(patient_zip, 'w') as archive:
        for png in sorted((slide_server['data'] / '30001').rglob('*.png')):
            archive.write(png, png.name)
        archive.writestr('notes.txt', 'not a patch')
    with zipfile.ZipFile(hostile_zip, 'w') as archive:
        archive.writestr('../../30001_idx5_x1_y1_class0.png', b'not read')

    page = browser.new_page(viewport={'width': 1280, 'height': 1000})

    def open_tab():
        page.goto(slide_server['url'])
        page.get_by_role('tab', name='Whole slide').click()

    def wait_for_the_slide() -> None:  # the note may come before the picture has loaded
        page.wait_for_function("() => { const img = document.querySelector('#slide img'); "
                               'return img && img.complete && img.naturalWidth > 500 }', timeout=60_000)

    open_tab()
    page.locator('#slide-zip input[type=file]').set_input_files(str(patient_zip))
    page.get_by_role('button', name='Draw the slide').click()
    notes = page.locator('#slide-notes')
    expect(notes).to_contain_text('Patient 30001: 9 patches', timeout=60_000)
    expect(notes).to_contain_text('1 file(s) outside the naming pattern skipped: notes.txt')
    wait_for_the_slide()
    page.screenshot(path=str(tmp_path / 'slide.png'), full_page=True)

    open_tab()  # a patient of the data set the demo was started with: its annotated region gives Dice and IoU
    page.get_by_label('...or a patient of the loaded data set').click()
    page.get_by_role('option', name='30002').click()
    page.get_by_role('button', name='Draw the slide').click()
    expect(notes).to_contain_text('Patient 30002: 9 patches', timeout=60_000)
    expect(notes).to_contain_text('Dice')
    wait_for_the_slide()

    open_tab()
    page.locator('#slide-zip input[type=file]').set_input_files(str(hostile_zip))
    page.get_by_role('button', name='Draw the slide').click()
    expect(page.get_by_text('points outside the archive').first).to_be_visible(timeout=60_000)
    page.close()


def test_the_exported_space_runs_on_its_own_copy_of_the_package(checkpoints, images, tmp_path):
    space = export_space_folder(str(ROOT / 'demo'), str(tmp_path / 'space'), ['patchconvnet_s60_p16.fb_in1k'])
    # which package the Space imports, asked while its app starts (each process mostly imports, on one core)
    found = subprocess.Popen([sys.executable, '-c', 'import timm_patchconvnet; print(timm_patchconvnet.__file__)'],
                             cwd=space, stdout=subprocess.PIPE, text=True)
    # the Space's settings name its checkpoints; here a local folder stands in for the Hub; a GRADIO_TEMP_DIR set
    # by the host is the one used
    env = {MODELS_VARIABLE: checkpoints['per_class'], 'GRADIO_TEMP_DIR': str(tmp_path / 'host-temp')}
    with _serving([sys.executable, 'app.py'], space, env) as url:
        result = Client(url, verbose=False).predict(handle_file(str(images['rgb'])), 'pets',
                                                    PREDICTED, 'jet', 0.5, api_name='/explain')
    assert found.wait(timeout=120) == 0
    assert Path(found.stdout.read().strip()).parent == space / 'timm_patchconvnet'  # no installed package needed
    assert set(result[3]) == set(PER_CLASS_LABELS)
    assert any(p.name == images['rgb'].name for p in (tmp_path / 'host-temp').rglob('*'))  # the upload went there


@pytest.fixture(scope='module')
def wsi_server(tmp_path_factory):
    """The demo with `--wsi-folder`: a folder holding a small pyramidal slide and a truncated copy of it, and a
    two-class model whose config.json records its scale (2 µm/px)."""
    pytest.importorskip('openslide', reason='the slides extra is not installed')
    from datagen import write_pyramid_slide
    root = tmp_path_factory.mktemp('wsi')
    (root / 'slides').mkdir()
    slide = write_pyramid_slide(root / 'slides' / 'slide.tif', 1024, 1024, 0.5, tissue_um=(64, 64, 448, 448),
                                tumour_um=(128, 128, 320, 320))
    data = slide.read_bytes()
    (root / 'broken.tif').write_bytes(data[:len(data) // 2])
    with _idc_demo(root, tmp_path_factory.mktemp('wsi-cwd'), '--wsi-folder', str(root / 'slides'), mpp=2.0) as url:
        yield {'url': url, 'broken': root / 'broken.tif'}


def test_in_a_real_browser_the_whole_slide_image_tab_runs_a_folder_slide_and_refuses_a_broken_upload(
        browser, wsi_server, tmp_path):
    import json

    from playwright.sync_api import expect

    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    page.goto(wsi_server['url'])
    page.get_by_role('tab', name='Whole-slide image').click()
    page.get_by_label('...or a slide of the folder').click()
    page.get_by_role('option', name='slide.tif').click()
    page.get_by_role('button', name='Run the slide').click()
    notes = page.locator('#wsi-notes')
    expect(notes).to_contain_text('slide.tif: ', timeout=60_000)
    expect(notes).to_contain_text('tiles at 2 µm/px')  # the model's scale, read from its config.json
    page.wait_for_function("() => { const img = document.querySelector('#wsi-overlay img'); "
                           'return img && img.complete && img.naturalWidth > 300 }', timeout=60_000)
    files = page.locator('#wsi-files')  # Gradio shows a file's name and extension apart: 'regions .geojson'
    expect(files.get_by_role('link')).to_have_count(2)
    expect(files).to_contain_text('.geojson')
    expect(files).to_contain_text('summary')
    page.screenshot(path=str(tmp_path / 'wsi.png'), full_page=True)
    page.locator('#wsi-file input[type=file]').set_input_files(str(wsi_server['broken']))
    page.get_by_role('button', name='Run the slide').click()
    expect(page.get_by_text('OpenSlide cannot read it').first).to_be_visible(timeout=60_000)
    page.close()
    # the downloads are the real files: a QuPath FeatureCollection and the summary
    overlay, files, _ = Client(wsi_server['url'], verbose=False).predict(
        'idc-model', None, 'slide.tif', None, None, 0.5, api_name='/whole_slide_image')
    by_name = {Path(f).name: Path(f) for f in files}
    assert json.loads(by_name['regions.geojson'].read_text())['type'] == 'FeatureCollection'
    assert json.loads(by_name['summary.json'].read_text())['slide'] == 'slide.tif'
