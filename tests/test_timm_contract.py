"""timm's own model test suite (tests/test_models.py of the installed timm) against our registered variants.

The runner is tests/timm_suite/run.py (it downloads timm's sdist from PyPI once for the test file). CI runs the
small variants, and s60_p4 without the tests whose cost grows with its 60 blocks (torch.fx tracing, pruning at each
of its 60 taps: 70 of its 85 s on 2 cores), which run the same code on the 12 blocks of ti12_p4 (the same class and
/4 stem); s60_p4 in full and the full-size ones are marked slow (`pytest -m slow`, up to tens of minutes each).
"""
import re

import pytest

from timm_suite.run import run

FAST = ['patchconvnet_test_p4', 'patchconvnet_ti12_p4', 'patchconvnet_s60_p4']
DEPTH_BOUND = 'patchconvnet_s60_p4 and (fx or prune_intermediate_layers)'  # test names of timm's test_models.py
SLOW = ['patchconvnet_s60_p4', 'patchconvnet_s60_p16', 'patchconvnet_s60_multi_p16', 'patchconvnet_s60_p8',
        'patchconvnet_s120_p16', 'patchconvnet_b60_p16', 'patchconvnet_b120_p16', 'patchconvnet_l60_p16',
        'patchconvnet_l120_p16']


def _run_timm_suite(variants, keyword='patchconvnet'):
    result = run(variants, ['-rA'], keyword, capture_output=True, text=True)  # -rA: one PASSED line per test
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = re.findall(r'^=* ?(\d+ (?:passed|failed).*) in [\d.]+s', result.stdout, flags=re.M)
    assert summary and 'passed' in summary[-1] and 'failed' not in summary[-1], result.stdout[-3000:]
    tested = set(re.findall(r'^PASSED \S+\[(?:\d+-)?(patchconvnet_\w+)', result.stdout, flags=re.M))
    assert tested == set(variants), f'tested {sorted(tested)}, not {variants}'


@pytest.mark.timeout(1500)
def test_timm_model_suite_small_variants_and_s60_p4():
    _run_timm_suite(FAST, keyword=f'patchconvnet and not ({DEPTH_BOUND})')


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize('variant', SLOW)
def test_timm_model_suite_full_size(variant):
    _run_timm_suite([variant])
