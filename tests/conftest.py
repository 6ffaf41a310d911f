import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from safetensors.torch import load_file

import timm_patchconvnet  # noqa: F401  (registers the models)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / 'fixtures'  # made from the official code: see fixtures/README.md
OFFICIAL_TINY = FIXTURES / 'official_tiny'
OFFICIAL_S60_KEYS = FIXTURES / 'official_s60_keys.json'


@pytest.fixture(scope='session')
def official_tiny() -> dict:
    """The official implementation's tiny model: weights file, input and reference outputs."""
    return dict(
        weights=OFFICIAL_TINY / 'weights.safetensors',
        input=load_file(OFFICIAL_TINY / 'input.safetensors')['input'],
        outputs=load_file(OFFICIAL_TINY / 'output.safetensors'),
    )


@pytest.fixture(scope='session')
def official_s60_keys() -> Path:
    return OFFICIAL_S60_KEYS


@pytest.fixture(scope='session')
def deit_checkout() -> str:
    """A checkout of facebookresearch/deit, for the opt-in tests that run the official code itself."""
    folder = os.environ['DEIT_CHECKOUT']  # set: the tests that take this fixture are deselected otherwise
    if not Path(folder, 'patchconvnet_models.py').is_file():
        pytest.fail(f'DEIT_CHECKOUT={folder} has no patchconvnet_models.py')
    return folder


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """The tests that run the official deit code itself are opt-in, like -m slow: the code is never fetched or
    shipped here, and the committed fixtures cover parity. Without DEIT_CHECKOUT they are deselected, not skipped:
    nothing the repository needs is missing."""
    if os.environ.get('DEIT_CHECKOUT'):
        return
    official = [item for item in items if 'deit_checkout' in getattr(item, 'fixturenames', ())]
    if official:
        config.hook.pytest_deselected(items=official)
        items[:] = [item for item in items if 'deit_checkout' not in getattr(item, 'fixturenames', ())]


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get('DEIT_CHECKOUT'):
        return f"DEIT_CHECKOUT={os.environ['DEIT_CHECKOUT']}: the official deit code runs beside ours too"
    return ('DEIT_CHECKOUT unset: the opt-in tests that run the official deit code itself are deselected (the '
            'committed fixtures cover parity)')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path_factory, monkeypatch):
    """Every test runs in a temporary working directory, so relative defaults (e.g. train.py's --output-dir
    runs/digits) never read or write the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp('cwd'))


@pytest.fixture(scope='session', autouse=True)
def decoded_cache(tmp_path_factory) -> Iterator[Path]:
    """The decoded cache of the tests (and of the programs they start) lives in the session's temporary folder,
    shared by its tests as a user's runs share theirs, never in ~/.cache. Session-scoped, so that module-scoped
    fixtures that train see it too."""
    folder = tmp_path_factory.mktemp('decoded-cache')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('PATCHCONVNET_CACHE', str(folder))
        yield folder


if str(ROOT) not in sys.path:  # train.py lives at the top of the repo
    sys.path.insert(0, str(ROOT))
