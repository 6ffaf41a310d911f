"""Hostile input to the Gradio demo (issue 15), against a real server on a free local port through gradio_client:
memory that must not grow with sessions, 16-bit and truncated images, server paths that must not leak, a private
temp folder (bad checkpoints: test_demo.py's test_bad_checkpoint_stops_the_app_with_one_error_line)."""
import os
import shutil
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip('gradio', reason='the demo extra is not installed')
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from test_demo import checkpoints, client, explain, images, server  # noqa: E402,F401  (the same fixtures)
from timm_patchconvnet.demo import app as demo_app  # noqa: E402
from timm_patchconvnet.demo.explain import DISPLAY_SIDE  # noqa: E402
from timm_patchconvnet.images import to_rgb  # noqa: E402
from timm_patchconvnet.model_ref import parse_model_ref  # noqa: E402

BIG_SIDE = 3000  # 9 megapixels: the old demo kept 63 MB of it per session (the RGB image and a float32 map)
REQUESTS = 50
WARM_UP = 5
RSS_BOUND_MB = 300  # what the server may grow by over the last REQUESTS - WARM_UP requests (the old one: 3,100)


def _rss_mb(pid: int) -> float:
    """The resident memory of process `pid`, from the kernel (VmRSS)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise AssertionError(f'no VmRSS for process {pid}')


def test_memory_does_not_grow_with_large_uploads_from_new_sessions(server, tmp_path):
    yy, xx = np.mgrid[0:BIG_SIDE, 0:BIG_SIDE]
    pixels = np.stack([xx * 255 // BIG_SIDE, yy * 255 // BIG_SIDE, (xx + yy) * 127 // BIG_SIDE], -1)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / 'big.png')
    client = Client(server['url'], verbose=False)
    rss = []
    for _ in range(REQUESTS):
        client.reset_session()  # a session of its own each time, never closed: as many clients (or an attacker)
        overlay = explain(client, tmp_path / 'big.png', server['models']['single'])[1]
        rss.append(_rss_mb(server['pid']))
    assert max(Image.open(overlay).size) <= DISPLAY_SIDE  # drawn at display size
    growth = rss[-1] - rss[WARM_UP - 1]
    print(f'server RSS: {rss[0]:.0f} MB after the first request, {rss[WARM_UP - 1]:.0f} MB after {WARM_UP}, '
          f'{rss[-1]:.0f} MB after {REQUESTS} (max {max(rss):.0f})')
    assert growth < RSS_BOUND_MB, f'the server grew by {growth:.0f} MB over {REQUESTS - WARM_UP} requests: {rss}'


def test_a_16_bit_image_is_scaled_not_clipped_and_the_note_says_so(client, server, tmp_path):
    ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    path = tmp_path / 'scan-16bit.png'
    Image.fromarray(ramp).save(path)
    with Image.open(path) as original:
        assert original.mode.startswith('I')  # a real 16-bit grayscale PNG
        expected = np.asarray(to_rgb(original), dtype=np.float32)
    _, overlay_path, _, _, notes = explain(client, path, server['models']['single'], opacity=0.0)
    shown = np.asarray(Image.open(overlay_path).convert('RGB'), dtype=np.float32)
    assert shown.mean() < 200 and shown.std() > 30  # not all white: the ramp from black to white is kept
    assert np.abs(shown - expected).max() <= 1
    assert '16-bit' in notes and 'scaled' in notes


def test_a_truncated_png_gets_a_clear_message_and_the_next_request_is_served(client, server, images, tmp_path):
    data = Path(images['rgb']).read_bytes()
    path = tmp_path / 'truncated.png'
    path.write_bytes(data[:len(data) // 2])
    with Image.open(path) as header:
        assert header.size == (64, 48)  # the header is intact: only decoding the pixels fails
    with pytest.raises(AppError, match='damaged or truncated'):
        explain(client, path, server['models']['single'])
    probabilities = explain(client, images['digit'], server['models']['single'])[3]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_clients_see_model_names_never_server_paths(server):
    config = httpx.get(server['url'] + 'config', timeout=30).text
    folders = [server['checkpoints'][k] for k in ('single', 'per_class')]
    for folder in folders + [str(Path(folders[0]).parent)]:
        assert folder not in config
    menu = next(c for c in httpx.get(server['url'] + 'config', timeout=30).json()['components']
                if c.get('props', {}).get('label') == 'Model')
    assert [choice[0] for choice in menu['props']['choices']] == ['digits', 'pets']


def test_two_folders_of_the_same_name_get_unique_names(checkpoints, tmp_path):
    shutil.copytree(checkpoints['single'], tmp_path / 'digits')
    models = demo_app.load_all([checkpoints['single'], f'local-dir:{tmp_path / "digits"}'])
    assert list(models) == ['digits', 'digits (2)']
    assert parse_model_ref('hf-hub:ORG/NAME').display_name == 'hf-hub:ORG/NAME'
    assert parse_model_ref('patchconvnet_s60_p16.fb_in1k').display_name == 'patchconvnet_s60_p16.fb_in1k'


def test_the_shared_tmp_gradio_is_not_served_and_uploads_stay_private(server, images):
    try:
        secret = Path('/tmp/gradio') / uuid.uuid4().hex / 'secret.txt'
        secret.parent.mkdir(parents=True)
        secret.write_text('another app\'s upload\n')
    except OSError as err:
        pytest.skip(f'cannot write under /tmp/gradio here: {err}')
    try:
        for route in ('gradio_api/file=', 'file='):
            answer = httpx.get(server['url'] + route + str(secret), timeout=30)
            assert answer.status_code in (403, 404) and 'another app' not in answer.text
    finally:
        shutil.rmtree(secret.parent, ignore_errors=True)
    with open(images['rgb'], 'rb') as f:
        uploaded = httpx.post(server['url'] + 'gradio_api/upload', files={'files': f}, timeout=30).json()
    folder = Path(uploaded[0]).resolve()
    while folder.parent != folder and not folder.name.startswith('patchconvnet-demo-'):
        folder = folder.parent
    assert folder.name.startswith('patchconvnet-demo-'), uploaded  # the demo's own folder, not /tmp/gradio
    assert folder.stat().st_mode & 0o777 == 0o700  # private to the user running the demo


# Issue 26: memory bounds and API calls of the wrong type

def test_an_image_too_long_on_one_side_is_refused_from_its_header(tmp_path):
    import gradio as gr

    from datagen import save_png_declaring
    from timm_patchconvnet.demo.uploads import MAX_SIDE, check_image_file
    save_png_declaring(tmp_path / 'strip.png', 8, 5_000_000)  # 40 megapixels: within MAX_PIXELS, not MAX_SIDE
    with pytest.raises(gr.Error, match=f'8x5000000 pixels; the demo takes up to {MAX_SIDE} pixels a side'):
        check_image_file(str(tmp_path / 'strip.png'))
    save_png_declaring(tmp_path / 'tall.png', 8, MAX_SIDE)
    check_image_file(str(tmp_path / 'tall.png'))  # the limit itself is served


@pytest.fixture(scope='module')
def random_model_app():
    """The demo's app over a random two-class model, served in this process on a free port."""
    import socket

    import timm

    from timm_patchconvnet.demo.models import DemoModel
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    app = demo_app.build_app({'idc': DemoModel('idc', timm.create_model('patchconvnet_test_p4', num_classes=2).eval(),
                                               ['negative', 'positive'])})
    app.launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True)
    yield f'http://127.0.0.1:{port}/gradio_api/call/'
    app.close()


def _raw_call(url: str, api: str, data: list) -> str:
    """An API call as any HTTP client sends it (gradio_client would refuse the wrong types itself)."""
    event = httpx.post(url + api, json={'data': data}, timeout=30).json()['event_id']
    with httpx.stream('GET', url + api + '/' + event, timeout=60) as answer:
        return '\n'.join(answer.iter_lines())


@pytest.mark.parametrize('api, data, message', [
    ('explain', [123, 'idc', 'predicted', 'jet', 0.5, 'attention'], 'The inputs do not fit /explain: '),
    ('explain', [{'path': 123}, 'idc', 'predicted', 'jet', 0.5, 'attention'], 'The inputs do not fit /explain: '),
    ('slide', ['idc', 123, None, 0.5], 'The inputs do not fit /slide: '),
    ('slide', ['idc', None, None, 'abc'], "Expected a `float`, but the value passed to the event handler was: 'abc'"),
], ids=['number-for-image', 'number-for-path', 'number-for-zip', 'text-for-slider'])
def test_api_calls_of_the_wrong_type_get_a_message(random_model_app, api, data, message):
    answer = _raw_call(random_model_app, api, data)
    assert 'event: error' in answer and '"error": null' not in answer and message in answer, answer


def test_memory_a_request_freed_goes_back_to_the_system():
    """Issue 26: RSS grew with parallel slide uploads while Python's allocations did not (allocator arenas kept each
    worker thread's peak). A request's memory, freed on its worker thread, is handed back by `release_freed_memory`;
    the whole server over 300 requests is measured by benchmarks/demo_memory.py."""
    import threading

    from timm_patchconvnet.demo.memory import bound_allocator, release_freed_memory
    assert bound_allocator()  # glibc here: the arenas are capped
    rss = {}

    def request():
        arrays = [np.ones(8000) for _ in range(3000)]  # 64 KB each (below glibc's mmap threshold): 190 MB of heap
        last = arrays[-1]  # the heap's top stays in use, so free() alone cannot shrink it
        del arrays
        rss['freed'] = _rss_mb(os.getpid())
        release_freed_memory()
        rss['released'] = _rss_mb(os.getpid())
        assert last.sum() == 8000

    worker = threading.Thread(target=request)
    worker.start()
    worker.join()
    assert rss['freed'] - rss['released'] > 100, rss
