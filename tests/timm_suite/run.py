"""Run timm's own model test suite (`tests/test_models.py` of the installed timm release) on our models.

    python tests/timm_suite/run.py                                   # every registered patchconvnet_* model
    python tests/timm_suite/run.py --models patchconvnet_test_p4 -- -x -k forward

timm ships test_models.py in its source distribution only: it is downloaded once from PyPI for the installed
timm version (`pip download --no-binary`) and kept in ~/.cache/timm-model-suite/<version>/ (TIMM_SUITE_CACHE).
Only tests parametrized with our models run (the file also has tests wired to timm's own models, selected out by
the keyword `patchconvnet`); those that need pretrained weights are left out (no network), and so are timm's
per-test timeouts, which are sized for its CI machines. Exit status: pytest's.
"""
import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import timm

PLUGIN_DIR = Path(__file__).resolve().parent


def timm_test_file() -> Path:
    """test_models.py of the installed timm, from its sdist on PyPI (downloaded on first use)."""
    cache = Path(os.environ.get('TIMM_SUITE_CACHE', Path.home() / '.cache' / 'timm-model-suite')) / timm.__version__
    test_file = cache / 'test_models.py'
    if not test_file.is_file():
        with tempfile.TemporaryDirectory() as download:
            subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--no-binary', ':all:',
                            f'timm=={timm.__version__}', '-d', download], check=True)
            sdist = next(Path(download).glob('timm-*.tar.gz'))
            with tarfile.open(sdist) as archive:
                member = next(m for m in archive.getmembers() if m.name.endswith('/tests/test_models.py'))
                content = archive.extractfile(member).read()
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f'.test_models.py.{os.getpid()}'
        partial.write_bytes(content)
        partial.replace(test_file)  # whole or absent, also with two runs at once
    return test_file


def run(models: list, pytest_args: list = (), keyword: str = 'patchconvnet', **kwargs) -> subprocess.CompletedProcess:
    """pytest on timm's test_models.py for the models matching `models` (fnmatch patterns), in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / 'test_models.py').write_bytes(timm_test_file().read_bytes())
        env = dict(os.environ, TIMM_SUITE_MODELS=','.join(models),
                   PYTHONPATH=os.pathsep.join([str(PLUGIN_DIR), os.environ.get('PYTHONPATH', '')]))
        command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'no:timeout', '-p', 'plugin',
                   '--rootdir', str(work), '-c', os.devnull, 'test_models.py',
                   '-k', f'{keyword} and not pretrained', *pytest_args]
        return subprocess.run(command, cwd=work, env=env, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='patchconvnet_*', help='comma-separated model name patterns')
    parser.add_argument('pytest_args', nargs='*', help='more pytest arguments (after --)')
    args = parser.parse_args(argv)
    return run(args.models.split(','), args.pytest_args).returncode


if __name__ == '__main__':
    sys.exit(main())
