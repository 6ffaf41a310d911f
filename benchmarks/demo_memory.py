"""The demo server's resident memory (RSS) over many requests: slide uploads sent in parallel, mixed with /explain.

    python benchmarks/demo_memory.py --requests 300 --parallel 20
    MALLOC_ARENA_MAX=2 python benchmarks/demo_memory.py ...   # the same with glibc's arenas capped (the server
                                                             # inherits the environment)

A random two-class PatchConvNet (`patchconvnet_test_p4`, saved as a model folder) serves a demo started as a user
starts it (`patchconvnet-demo --model FOLDER`); each round sends `--parallel` requests at once through
gradio_client (slide zips of one patient, and one /explain of a 512 x 512 photo in every five), then reads the
server's VmRSS. One line per round, and a summary line: RSS after the first round, the highest and the last.
"""
import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f'no VmRSS for process {pid}')


def patient_zip(path: Path, side: int, seed: int) -> str:
    """One patient's `side` x `side` patches of 50 x 50 random tissue, named as the IDC archive names them."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, 'w') as archive:
        for row in range(side):
            for col in range(side):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(buffer, format='PNG')
                archive.writestr(f'{seed}_idx5_x{1 + 50 * col}_y{1 + 50 * row}_class{(row + col) % 2}.png',
                                 buffer.getvalue())
    return str(path)


def start_server(folder: Path, port: int) -> subprocess.Popen:
    from timm import create_model

    from timm_patchconvnet.model_folder import save_model_folder
    save_model_folder(create_model('patchconvnet_test_p4', num_classes=2).eval(), folder / 'idc',
                      ['idc_negative', 'idc_positive'])
    server = subprocess.Popen([sys.executable, '-m', 'timm_patchconvnet.cli.demo', '--model', str(folder / 'idc'),
                               '--port', str(port)], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, 'PYTHONPATH': str(ROOT)})
    for _ in range(240):
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError('the demo did not start within 2 minutes')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--requests', type=int, default=300)
    parser.add_argument('--parallel', type=int, default=20)
    parser.add_argument('--port', type=int, default=7895)
    args = parser.parse_args(argv)
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        zips = [patient_zip(folder / f'{seed}.zip', side, seed) for seed, side in ((1, 6), (2, 10), (3, 14))]
        photo = folder / 'photo.png'
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(photo)
        server = start_server(folder, args.port)
        try:
            # the answers' pictures stay on the server (a page fetches them; here they would only cost the client)
            client = Client(f'http://127.0.0.1:{args.port}/', verbose=False, download_files=False)

            def request(index: int) -> None:
                if index % 5 == 4:
                    client.predict(handle_file(str(photo)), 'idc', 'predicted', 'jet', 0.5, 'attention',
                                   api_name='/explain')
                else:
                    client.predict('idc', handle_file(zips[index % 3]), None, 0.5, api_name='/slide')

            rss: List[float] = []
            started = time.time()
            with ThreadPoolExecutor(args.parallel) as pool:
                for first in range(0, args.requests, args.parallel):
                    list(pool.map(request, range(first, min(first + args.parallel, args.requests))))
                    rss.append(rss_mb(server.pid))
                    print(f'{min(first + args.parallel, args.requests):4d} requests: RSS {rss[-1]:6.0f} MB '
                          f'({time.time() - started:.0f} s)', flush=True)
        finally:
            server.terminate()
            server.wait(30)
    print(f'RSS after the first round {rss[0]:.0f} MB, highest {max(rss):.0f} MB, last {rss[-1]:.0f} MB '
          f'(MALLOC_ARENA_MAX={os.environ.get("MALLOC_ARENA_MAX", "unset")})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
