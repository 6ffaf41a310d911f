"""timm's own model test suite (tests/test_models.py of the installed timm) against our registered variants.

CI runs the small variants and s60_p4 (about 2 minutes on 2 cores); the full-size ones are marked slow
(`pytest -m slow`, up to tens of minutes each). The runner downloads timm's sdist from PyPI once.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED, _need

FAST = ['patchconvnet_test_p4', 'patchconvnet_ti12_p4', 'patchconvnet_s60_p4']
SLOW = ['patchconvnet_s60_p16', 'patchconvnet_s60_multi_p16', 'patchconvnet_s60_p8', 'patchconvnet_s120_p16',
        'patchconvnet_b60_p16', 'patchconvnet_b120_p16', 'patchconvnet_l60_p16', 'patchconvnet_l120_p16']


def _run_timm_suite(variants, tmp_path):
    runner = _need(SHARED / 'tools' / 'timm-model-tests')
    env = dict(os.environ, PLUGIN_MODEL_FILTER=','.join(variants),
               PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
    # timm's per-test timeouts are sized for its CI hardware: only our own (pytest-timeout, above) applies here
    result = subprocess.run([str(runner), '-p', 'no:timeout'], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = re.findall(r'^=* ?(\d+ (?:passed|failed).*) in [\d.]+s', result.stdout, flags=re.M)
    assert summary and 'passed' in summary[-1] and 'failed' not in summary[-1], result.stdout[-3000:]


@pytest.mark.timeout(1500)
def test_timm_model_suite_small_variants_and_s60_p4(tmp_path):
    _run_timm_suite(FAST, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize('variant', SLOW)
def test_timm_model_suite_full_size(variant, tmp_path):
    _run_timm_suite([variant], tmp_path)
