import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import timm_patchconvnet  # noqa: F401  (registers the models)

SHARED = Path(os.environ.get('TIMM_PATCHCONVNET_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
OFFICIAL_TINY = SHARED / 'fixtures' / 'official_tiny'


def _need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get('CI'):
            pytest.fail(f'{path} is missing: CI must run with the shared fixtures beside the checkout.')
        pytest.skip(f'{path} not found (set TIMM_PATCHCONVNET_SHARED to the shared/ folder)')
    return path


@pytest.fixture(scope='session')
def official_tiny() -> dict:
    """The official implementation's tiny model: weights file, input and reference outputs."""
    folder = _need(OFFICIAL_TINY)
    return dict(
        weights=folder / 'weights.safetensors',
        input=load_file(folder / 'input.safetensors')['input'],
        outputs=load_file(folder / 'output.safetensors'),
    )


@pytest.fixture(scope='session')
def official_s60_keys() -> Path:
    return _need(SHARED / 'fixtures' / 'official_s60_keys.json')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # train.py lives at the top of the repo
    sys.path.insert(0, str(ROOT))
