"""Honest pretrained tags: this project's own tags, whose weights are not published yet, say so at once and name
what works today; a lab can point them at its own Hub organisation."""
import os
import subprocess
import sys
import time

import pytest
import timm

from timm_patchconvnet import HUB_NAMESPACE, UNPUBLISHED_TAGS, PretrainedWeightsUnavailableError


@pytest.mark.parametrize('name, alternatives', [
    # the line users type first: the default tag of the seed paper's model is its CIFAR-10 one
    ('patchconvnet_s60_p4', ['patchconvnet_s60_p4.fb_in1k", pretrained=True, num_classes=10',
                             '--preset table2-lamb']),
    ('patchconvnet_s60_p4.idc', ['patchconvnet_s60_p4.fb_in1k", pretrained=True, num_classes=2',
                                 '--preset idc-finetune']),
    ('patchconvnet_ti12_p4.cifar10', ['--dataset cifar10 --model patchconvnet_ti12_p4']),
])
def test_an_unpublished_tag_says_so_at_once_and_names_what_works(name, alternatives):
    started = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailableError) as raised:
        timm.create_model(name, pretrained=True)
    message = str(raised.value)
    tag = name.split('.')[1] if '.' in name else 'cifar10'
    assert f'.{tag} ' in message and 'are not published yet' in message
    assert 'patchconvnet-push-model RUN ORG/NAME' in message and 'local-dir:RUN' in message
    for alternative in alternatives:
        assert alternative in message
    if 'ti12' in name:
        assert 'fb_in1k' not in message  # no ImageNet weights exist for this size: none are offered
    assert time.monotonic() - started < 5  # known in advance: no network attempts and retries


def test_the_suggested_fine_tuning_tag_is_real_and_fits():
    cfg = timm.models.get_pretrained_cfg('patchconvnet_s60_p4.fb_in1k')
    assert cfg.url.endswith('/s60_224_1k.pth') and cfg.num_classes == 1000
    assert set(UNPUBLISHED_TAGS) == {'cifar10', 'idc'}


def _in_fresh_process(code: str, **env) -> str:
    result = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'HF_HUB_OFFLINE': '1', **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_a_lab_points_the_tags_at_its_own_organisation(tmp_path):
    code = ('import timm, timm_patchconvnet\n'
            'print(timm_patchconvnet.HUB_NAMESPACE, timm.models.get_pretrained_cfg("patchconvnet_ti12_p4.idc").hf_hub_id)\n'
            'try:\n'
            '    timm.create_model("patchconvnet_ti12_p4.idc", pretrained=True)\n'
            'except timm_patchconvnet.PretrainedWeightsUnavailableError as err:\n'
            '    print("not published" in str(err), "mylab/patchconvnet_ti12_p4.idc" in str(err))\n')
    out = _in_fresh_process(code, TIMM_PATCHCONVNET_HUB_NAMESPACE='mylab', HF_HUB_CACHE=str(tmp_path))
    # its repo may well exist: the load is tried (offline here, so it fails), with no claim that it is unpublished
    assert out.splitlines() == ['mylab mylab/patchconvnet_ti12_p4.idc', 'False True']
    assert HUB_NAMESPACE == 'timm-patchconvnet'  # this process: the default
