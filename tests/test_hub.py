"""Publishing on the Hugging Face Hub, offline: a trained model goes through a dry-run export into a Hugging Face
cache and loads back by tag and by `hf-hub:` under HF_HUB_OFFLINE; uploads go to a stub of `HfApi`; the IDC export
reloads with `datasets`; bad input and Hub errors give clear messages and never show the token."""
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import datasets
import httpx2  # huggingface_hub's HTTP client: real responses and errors for the stub
import huggingface_hub
import numpy as np
import pytest
import timm
import torch
from huggingface_hub import DatasetCard, HfApi, ModelCard, scan_cache_dir
from huggingface_hub.utils import hf_raise_for_status
from packaging.requirements import Requirement

import train as train_cli
from conftest import ROOT
from datagen import write_cifar10_parquet, write_idc_kaggle_folder
from timm_patchconvnet import HUB_NAMESPACE, PretrainedWeightsUnavailableError, hub
from timm_patchconvnet.hub import dataset as hub_dataset
from timm_patchconvnet.hub import space as hub_space
from timm_patchconvnet.hub import upload as hub_upload
from timm_patchconvnet.model_folder import save_model_folder
from timm_patchconvnet.data import IDC_LABEL_NAMES, load_splits, read_idc_kaggle_folder

datasets.disable_progress_bars()
TAG = 'patchconvnet_ti12_p4.cifar10'
REPO_ID = f'{HUB_NAMESPACE}/{TAG}'  # the tag's hf_hub_id
FAKE_TOKEN = 'hf_FakeTokenForTheTestsOnly0123456789'


def _load_cli(name: str):
    spec = importlib.util.spec_from_file_location(f'hub_{name}', ROOT / 'hub' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


push_model_cli = _load_cli('push_model')
push_idc_cli = _load_cli('push_idc_dataset')
push_space_cli = _load_cli('push_space')


class StubHfApi:
    """Records what would be sent to the Hub, after checking each call against the real `HfApi` method's signature;
    `upload_error` is raised by upload_folder, after the repo exists."""

    def __init__(self, upload_error: Optional[Exception] = None):
        self.calls: List[Tuple[str, Dict]] = []
        self.uploaded: Dict[str, bytes] = {}
        self.upload_error = upload_error

    def _record(self, name: str, *args, **kwargs) -> None:
        bound = inspect.signature(getattr(HfApi, name)).bind(self, *args, **kwargs)  # a TypeError if HfApi differs
        self.calls.append((name, {k: v for k, v in bound.arguments.items() if k != 'self'}))

    def create_repo(self, *args, **kwargs) -> str:
        self._record('create_repo', *args, **kwargs)
        prefix = {'dataset': 'datasets/', 'space': 'spaces/'}.get(kwargs.get('repo_type'), '')
        return f'https://huggingface.co/{prefix}{self.calls[-1][1]["repo_id"]}'

    def create_branch(self, *args, **kwargs) -> None:
        self._record('create_branch', *args, **kwargs)

    def upload_folder(self, **kwargs) -> str:
        self._record('upload_folder', **kwargs)
        if self.upload_error is not None:
            raise self.upload_error
        self.uploaded = folder_contents(Path(kwargs['folder_path']))
        return 'https://huggingface.co/commit/0'

    def add_space_variable(self, *args, **kwargs) -> None:
        self._record('add_space_variable', *args, **kwargs)

    def call(self, name: str) -> Dict:
        matches = [kwargs for called, kwargs in self.calls if called == name]
        assert len(matches) == 1, self.calls
        return matches[0]


def folder_contents(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _server_error() -> Exception:
    """What huggingface_hub raises when the Hub answers a commit with a 500."""
    request = httpx2.Request('POST', f'https://huggingface.co/api/models/{REPO_ID}/commit/main')
    response = httpx2.Response(500, request=request, json={'error': 'Internal Error - We\'re working hard to fix this'})
    try:
        hf_raise_for_status(response)
    except huggingface_hub.errors.HfHubHTTPError as err:
        return err
    raise AssertionError('hf_raise_for_status did not raise')


@pytest.fixture
def no_stored_token(monkeypatch, tmp_path):
    """No token anywhere: not in the environment, not in an `hf auth login` file (HF_HOME is empty)."""
    for name in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / 'hf_home'
    monkeypatch.setenv('HF_HOME', str(home))
    # huggingface_hub reads the token file paths once, at import
    monkeypatch.setattr(huggingface_hub.constants, 'HF_TOKEN_PATH', str(home / 'token'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_STORED_TOKENS_PATH', str(home / 'stored_tokens'))
    assert huggingface_hub.get_token() is None
    return home


# ---------------------------------------------------------------------------------------------------------------
# Models


@pytest.fixture(scope='module')
def cifar_run(tmp_path_factory) -> Path:
    """A real two-step run of the model behind the `cifar10` tag: 10 classes at 32x32 (about 20 s)."""
    root = tmp_path_factory.mktemp('cifar')
    data = write_cifar10_parquet(root / 'cifar10', num_train=100, num_test=20)
    out = root / 'run'
    assert train_cli.main(['--dataset', 'cifar10', '--data-dir', str(data), '--model', 'patchconvnet_ti12_p4',
                           '--epochs', '1', '--max-steps-per-epoch', '2', '--batch-size', '8',
                           '--output-dir', str(out)]) == 0
    return out


@pytest.fixture(scope='module')
def model_export(cifar_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('export') / REPO_ID.replace('/', '--')
    assert push_model_cli.main([str(cifar_run), REPO_ID, '--dry-run', str(out)]) == 0
    return out


def fill_hf_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """Lay `folder` into `cache` as huggingface_hub's downloads do: blobs named by content hash, snapshots/<commit>/
    of relative symlinks to them, refs/main naming the commit. Returns the commit."""
    repo = cache / f'models--{repo_id.replace("/", "--")}'
    commit = hashlib.sha1(b''.join(folder_contents(folder).values())).hexdigest()
    for file in folder.iterdir():
        blob = repo / 'blobs' / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = repo / 'snapshots' / commit / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    return commit


@pytest.fixture
def offline_hub_cache(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face cache, used by default, with HF_HUB_OFFLINE on (huggingface_hub reads both at import)."""
    cache = tmp_path / 'hf_cache'
    cache.mkdir()
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    return cache


def test_a_published_model_loads_by_tag_and_hf_hub_offline(cifar_run, model_export, offline_hub_cache):
    with pytest.raises(PretrainedWeightsUnavailableError):  # offline, and nothing cached yet
        timm.create_model(TAG, pretrained=True)

    commit = fill_hf_cache(offline_hub_cache, REPO_ID, model_export)
    cached = {repo.repo_id: repo for repo in scan_cache_dir(offline_hub_cache).repos}
    assert set(cached) == {REPO_ID} and set(cached[REPO_ID].refs) == {'main'}  # huggingface_hub reads the layout
    assert {r.commit_hash for r in cached[REPO_ID].revisions} == {commit}

    trained = timm.create_model(f'local-dir:{cifar_run}', pretrained=True).eval()
    by_tag = timm.create_model(TAG, pretrained=True).eval()
    by_hub = timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True).eval()
    assert by_tag.pretrained_cfg['hf_hub_id'] == REPO_ID and by_hub.pretrained_cfg['hf_hub_id'] == REPO_ID
    assert by_hub.pretrained_cfg['label_names'] == trained.pretrained_cfg['label_names']
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = trained(x)
        torch.testing.assert_close(by_tag(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(by_hub(x), expected, rtol=0, atol=0)


def test_the_export_is_the_run_model_as_written_plus_a_card(cifar_run, model_export):
    assert sorted(p.name for p in model_export.iterdir()) == ['README.md', 'attention.png', 'config.json',
                                                              'model.safetensors']
    for name in ('model.safetensors', 'config.json', 'attention.png'):  # copied, not rewritten
        assert (model_export / name).read_bytes() == (cifar_run / name).read_bytes(), name
    config = json.loads((model_export / 'config.json').read_text())
    assert config['architecture'] == 'patchconvnet_ti12_p4' and config['num_classes'] == 10
    assert config['label_names'][0] == 'airplane'
    pretrained_cfg = config['pretrained_cfg']
    assert pretrained_cfg['input_size'] == [3, 32, 32] and pretrained_cfg['crop_pct'] == 1.0
    assert pretrained_cfg['mean'] == [0.4914, 0.4822, 0.4465] and len(pretrained_cfg['std']) == 3
    model = timm.create_model(f'local-dir:{model_export}', pretrained=True)
    assert model.num_classes == 10


def test_the_model_card_parses_and_carries_the_metrics(cifar_run, model_export):
    card = ModelCard.load(model_export / 'README.md')
    metrics = json.loads((cifar_run / 'metrics.json').read_text())
    assert card.data.library_name == 'timm' and card.data.license == 'apache-2.0'
    assert {'image-classification', 'timm', 'patchconvnet'} <= set(card.data.tags)
    assert card.data.datasets == ['uoft-cs/cifar10'] and card.data.pipeline_tag == 'image-classification'
    [result] = card.data.eval_results
    assert (result.metric_type, result.dataset_split, result.task_type) == ('accuracy', 'test', 'image-classification')
    assert result.metric_value == pytest.approx(metrics['test']['accuracy'])
    text = card.text
    assert '## Split protocol' in text and 'Not split by patient' in text and metrics['data']['protocol'] in text
    assert 'not a medical device' in text and '## Intended use' in text
    assert '](attention.png)' in text and '## Training' in text and '--max-steps-per-epoch 2' in text
    assert f"timm.create_model('{TAG}', pretrained=True)" in text and f'hf-hub:{REPO_ID}' in text
    usage = text[text.index('## How to use'):text.index('## Data')]  # timm's and transformers' ways
    assert usage.count('import timm_patchconvnet') == 2 and '### With transformers' in usage
    pipeline_line = f"pipeline('image-classification', model='{REPO_ID}')"
    assert usage.index('import timm_patchconvnet  #') < usage.index(pipeline_line)
    assert f"AutoModelForImageClassification.from_pretrained('{REPO_ID}')" in usage
    assert str(cifar_run.parent) not in card.content  # local paths of the trainer are not published


def test_a_patient_level_idc_card_reports_the_binary_metrics(cifar_run, tmp_path):
    """The card of a two-class IDC run: metrics.json as train.py writes it for IDC, on this run's model files."""
    run = tmp_path / 'idc_run'
    shutil.copytree(cifar_run, run, ignore=shutil.ignore_patterns('state'))
    metrics = json.loads((run / 'metrics.json').read_text())
    metrics['data'].update(dataset='idc', patient_level=True, protocol_kind='seeded patient split',
                           protocol='Patient-level split (seed=0) of 10 patients.')
    metrics['test'].update(accuracy=0.8, balanced_accuracy=0.75, f1=0.6, sensitivity=0.7, specificity=0.8,
                           roc_auc=None)  # None: undefined on a one-class test split, left out
    (run / 'metrics.json').write_text(json.dumps(metrics))
    card = hub.build_model_card(str(run), 'someone/ti12-idc', dataset_id='someone/idc')
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {'accuracy': 0.8, 'balanced_accuracy': 0.75, 'f1': 0.6, 'recall': 0.7, 'specificity': 0.8}
    assert card.data.datasets == ['someone/idc'] and 'histopathology' in card.data.tags
    assert '**Patient-level split (seeded patient split)**' in card.text
    assert 'has not been validated clinically' in card.text
    assert 'Scale: about 4.0 µm per pixel' in card.text  # DatasetSpec('idc').mpp, read by patchconvnet-slides --wsi

    local_source = str(tmp_path / 'private' / 'IDC')  # train.py's patch-level warning names the data folder
    metrics['data'].update(patient_level=False, protocol_kind='patch-level', source=local_source,
                           protocol=f'PATCH-LEVEL split: {local_source} has no patient ids, so patches leak.')
    metrics['config'].update(dataset='idc', data_dir=local_source, pretrained=f'local-dir:{tmp_path}/base')
    (run / 'metrics.json').write_text(json.dumps(metrics))
    card = hub.build_model_card(str(run), 'someone/ti12-idc')
    assert 'Patch-level split (not patient-level)' in card.text and 'PATCH-LEVEL split: IDC has no patient' in card.text
    assert str(tmp_path) not in card.content and '--pretrained PRETRAINED' in card.text


def test_a_run_saved_before_data_kind_was_renamed_still_publishes(cifar_run, tmp_path):
    """metrics.json named the data set `data.kind` before it became `data.dataset`: such a run gets the same card."""
    run = tmp_path / 'old_run'
    shutil.copytree(cifar_run, run, ignore=shutil.ignore_patterns('state'))
    metrics = json.loads((run / 'metrics.json').read_text())
    metrics['data']['kind'] = metrics['data'].pop('dataset')
    (run / 'metrics.json').write_text(json.dumps(metrics))
    old, new = (hub.build_model_card(str(folder), REPO_ID) for folder in (run, cifar_run))
    assert old.content == new.content and old.data.eval_results[0].dataset_name == 'CIFAR-10'


def test_the_card_of_another_timm_model_claims_no_attention_pooling(cifar_run, tmp_path):
    run = tmp_path / 'resnet_run'
    shutil.copytree(cifar_run, run, ignore=shutil.ignore_patterns('state', 'attention.png'))
    config = json.loads((run / 'config.json').read_text())
    (run / 'config.json').write_text(json.dumps(dict(config, architecture='resnet18')))
    card = hub.build_model_card(str(run), 'someone/resnet18-cifar10')
    assert 'patchconvnet' not in card.data.tags and 'get_attention_map' not in card.text
    assert '\n`resnet18`, ' in card.text and 'PatchConvNet (`' not in card.text
    assert 'no attention-map example' in card.text


def test_push_uploads_exactly_the_dry_run_folder(cifar_run, model_export, tmp_path, capsys, caplog):
    api = StubHfApi()
    url = hub.push_model(str(cifar_run), REPO_ID, export_dir=str(tmp_path / 'export'), token=FAKE_TOKEN,
                         private=True, revision='v1', commit_message='Ti12 on CIFAR-10', api=api)
    assert url == f'https://huggingface.co/{REPO_ID}'
    assert [name for name, _ in api.calls] == ['create_repo', 'create_branch', 'upload_folder']
    assert api.call('create_repo') == dict(repo_id=REPO_ID, repo_type='model', private=True, exist_ok=True,
                                           token=FAKE_TOKEN, space_sdk=None)
    assert api.call('create_branch') == dict(repo_id=REPO_ID, branch='v1', repo_type='model', exist_ok=True,
                                             token=FAKE_TOKEN)
    upload = api.call('upload_folder')
    assert (upload['repo_id'], upload['repo_type'], upload['revision'], upload['commit_message']) == (
        REPO_ID, 'model', 'v1', 'Ti12 on CIFAR-10')
    assert api.uploaded == folder_contents(model_export)  # the dry run wrote exactly what is uploaded
    assert_token_nowhere(capsys, caplog, tmp_path)


def test_the_command_line_pushes_with_the_token_from_the_environment(cifar_run, monkeypatch, tmp_path, capsys,
                                                                     caplog):
    api = StubHfApi()
    monkeypatch.setattr(hub_upload, 'HfApi', lambda: api)
    monkeypatch.setenv('HF_TOKEN', FAKE_TOKEN)
    monkeypatch.setattr(hub_upload.tempfile, 'tempdir', str(tmp_path))  # where the temporary export goes
    assert push_model_cli.main([str(cifar_run), 'someone/ti12-cifar10']) == 0
    assert capsys.readouterr().out.strip() == 'uploaded to https://huggingface.co/someone/ti12-cifar10'
    assert api.call('create_repo')['private'] is False and api.call('upload_folder')['revision'] is None
    assert api.call('upload_folder')['commit_message'] == 'Upload patchconvnet_ti12_p4 trained with timm-patchconvnet'
    assert api.call('upload_folder')['token'] == FAKE_TOKEN and 'README.md' in api.uploaded
    assert not list(tmp_path.glob('patchconvnet-model-*'))  # the temporary export is gone after the upload
    assert_token_nowhere(capsys, caplog, tmp_path)


@pytest.mark.parametrize('error', [_server_error(), httpx2.ConnectError('[Errno 111] Connection refused')],
                         ids=['http-500', 'no-network'])
def test_a_hub_error_mid_upload_keeps_the_local_export(cifar_run, tmp_path, error, capsys, caplog):
    api = StubHfApi(upload_error=error)
    export = tmp_path / 'export'
    with pytest.raises(hub.HubError) as raised:
        hub.push_model(str(cifar_run), REPO_ID, export_dir=str(export), token=FAKE_TOKEN, api=api)
    message = str(raised.value)
    assert f'The local export in {export} is kept' in message and f'hf upload {REPO_ID} {export}' in message
    assert type(error).__name__ in message and '\n' not in message
    assert (export / 'model.safetensors').is_file() and (export / 'README.md').is_file()
    assert FAKE_TOKEN not in message
    assert_token_nowhere(capsys, caplog, tmp_path)


def test_the_real_hf_api_offline_fails_cleanly_and_keeps_the_export(model_export, monkeypatch, capsys, caplog):
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)  # every request raises, as with no network
    before = folder_contents(model_export)
    with pytest.raises(hub.HubError, match=f'Could not create the repo .*The local export in {model_export} is kept'):
        hub.push_folder(str(model_export), 'someone/ti12', 'model', token=FAKE_TOKEN)  # a real HfApi
    assert folder_contents(model_export) == before
    assert_token_nowhere(capsys, caplog, model_export)


def test_the_command_line_reports_a_failed_upload_in_one_line(cifar_run, monkeypatch, tmp_path, capsys, caplog):
    monkeypatch.setattr(hub_upload, 'HfApi', lambda: StubHfApi(upload_error=_server_error()))
    export = tmp_path / 'kept'
    assert push_model_cli.main([str(cifar_run), REPO_ID, '--export-dir', str(export), '--token', FAKE_TOKEN]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: Could not upload') and err.count('\n') == 1 and f'{export} is kept' in err
    assert (export / 'config.json').is_file()
    assert_token_nowhere(capsys, caplog, tmp_path)


def assert_token_nowhere(capsys, caplog, folder: Path) -> None:
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err + caplog.text
    for path in folder.rglob('*'):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_no_token_is_a_clear_error_before_anything_happens(cifar_run, no_stored_token, monkeypatch, tmp_path,
                                                           capsys):
    api = StubHfApi()
    monkeypatch.setattr(hub_upload, 'HfApi', lambda: api)
    export = tmp_path / 'export'
    assert push_model_cli.main([str(cifar_run), REPO_ID, '--export-dir', str(export)]) == 2
    assert push_idc_cli.main([str(tmp_path), 'someone/idc', '--export-dir', str(export)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(e.startswith('error: No Hugging Face token: set HF_TOKEN') for e in errors)
    assert api.calls == [] and not export.exists() and not no_stored_token.exists()


@pytest.mark.parametrize('repo_id', ['not a repo', 'org/name/extra', 'just-a-name', 'org/-name', 'org/name..x'])
def test_a_malformed_repo_id_is_refused(cifar_run, tmp_path, repo_id, capsys):
    out = tmp_path / 'export'
    assert push_model_cli.main([str(cifar_run), repo_id, '--dry-run', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: Malformed repo id {repo_id!r}') and err.count('\n') == 1
    assert not out.exists()
    with pytest.raises(hub.HubError, match='Malformed repo id'):
        hub.push_folder(str(cifar_run), repo_id, 'model', token=FAKE_TOKEN, api=StubHfApi())


def test_a_folder_that_is_not_a_training_output_is_refused(cifar_run, tmp_path, capsys):
    partial = tmp_path / 'partial'
    partial.mkdir()
    shutil.copyfile(cifar_run / 'config.json', partial / 'config.json')
    for folder, expected in ((partial, 'it lacks model.safetensors, metrics.json'),
                             (tmp_path / 'missing', 'is not a folder')):
        assert push_model_cli.main([str(folder), REPO_ID, '--dry-run', str(tmp_path / 'out')]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and expected in err and err.count('\n') == 1
    assert not (tmp_path / 'out').exists()


def test_other_bad_exports_are_refused(cifar_run, model_export, tmp_path, capsys):
    # the idc tag's repo must hold a 2-class 50x50 model, or create_model('...idc', pretrained=True) breaks
    idc_repo = f'{HUB_NAMESPACE}/patchconvnet_ti12_p4.idc'
    assert push_model_cli.main([str(cifar_run), idc_repo, '--dry-run', str(tmp_path / 'out')]) == 2
    assert "where the tag 'patchconvnet_ti12_p4.idc' loads its weights from" in capsys.readouterr().err
    # a used folder: stale files would be uploaded too
    assert push_model_cli.main([str(cifar_run), REPO_ID, '--dry-run', str(model_export)]) == 2
    assert 'is not an empty folder' in capsys.readouterr().err
    assert push_model_cli.main([str(cifar_run), REPO_ID, '--dry-run', str(tmp_path / 'o2'),
                                '--dataset-id', 'bad id']) == 2
    assert "Malformed repo id 'bad id'" in capsys.readouterr().err


def test_a_run_that_fits_the_tag_is_accepted_within_the_normalisation_tolerance(cifar_run, tmp_path, capsys):
    run = tmp_path / 'run'
    shutil.copytree(cifar_run, run, ignore=shutil.ignore_patterns('state'))
    config = json.loads((cifar_run / 'config.json').read_text())
    for shift, accepted in ((5e-4, True), (1e-2, False)):  # rounding of the statistics, or other statistics
        mean = [m + shift for m in config['pretrained_cfg']['mean']]
        (run / 'config.json').write_text(json.dumps(dict(config, pretrained_cfg=dict(config['pretrained_cfg'],
                                                                                      mean=mean))))
        out = tmp_path / f'out-{shift}'
        assert push_model_cli.main([str(run), REPO_ID, '--dry-run', str(out)]) == (0 if accepted else 2)
        err = capsys.readouterr().err
        assert out.exists() == accepted and ('normalisation mean: run' in err) != accepted
        assert 'std' not in err and 'label names' not in err and 'data set' not in err


# ---------------------------------------------------------------------------------------------------------------
# The IDC data set


@pytest.fixture(scope='module')
def kaggle_idc(tmp_path_factory) -> Path:
    return write_idc_kaggle_folder(tmp_path_factory.mktemp('kaggle') / 'IDC')


def _rows(data: datasets.Dataset) -> List[Tuple[str, int, int, int]]:
    return sorted(zip(data['patient_id'], data['x'], data['y'], data['label']))


def _pixels_by_patch(data: datasets.Dataset) -> Dict[Tuple[str, int, int], np.ndarray]:
    return {(e['patient_id'], e['x'], e['y']): np.asarray(e['image'].convert('RGB')) for e in data}


def test_the_idc_export_split_by_patient_reloads_with_datasets(kaggle_idc, tmp_path, capsys):
    out = tmp_path / 'idc'
    assert push_idc_cli.main([str(kaggle_idc), 'someone/idc', '--dry-run', str(out), '--shard-size', '20']) == 0
    assert 'nothing uploaded' in capsys.readouterr().out
    source, skipped = read_idc_kaggle_folder(str(kaggle_idc))
    assert skipped == 1  # the corrupt file

    reloaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / 'cache'))  # found through the card
    assert list(reloaded) == ['train', 'validation', 'test']
    assert sorted(p.name for p in (out / 'data').iterdir()) == [
        'test-00000-of-00001.parquet', 'train-00000-of-00003.parquet', 'train-00001-of-00003.parquet',
        'train-00002-of-00003.parquet', 'validation-00000-of-00001.parquet']
    pooled = datasets.concatenate_datasets(list(reloaded.values()))
    assert _rows(pooled) == _rows(source)
    assert pooled.features['label'].names == IDC_LABEL_NAMES
    original = _pixels_by_patch(source)
    for key, pixels in _pixels_by_patch(pooled).items():  # the PNG bytes are embedded, not paths
        assert np.array_equal(pixels, original[key]), key
    patients = {name: set(split['patient_id']) for name, split in reloaded.items()}
    assert not (patients['train'] & patients['validation'] or patients['train'] & patients['test']
                or patients['validation'] & patients['test'])
    # the same patients per split as train.py's split of the Kaggle folder
    kaggle_splits = load_splits('idc', data_dir=str(kaggle_idc))
    assert all(patients[name] == set(getattr(kaggle_splits, name)['patient_id']) for name in patients)

    card = DatasetCard.load(out / 'README.md')
    assert card.data.license == 'cc0-1.0' and card.data.task_categories == ['image-classification']
    assert [c['split'] for c in card.data.configs[0]['data_files']] == ['train', 'validation', 'test']
    assert 'load_dataset("someone/idc")' in card.text and 'Check the source licence' in card.text

    splits = load_splits('idc', data_dir=str(out), cache_dir=str(tmp_path / 'cache'))
    assert splits.patient_level and 'pooled first' in splits.protocol
    assert len(splits.train) + len(splits.validation) + len(splits.test) == len(source)


def test_the_idc_export_without_split_is_one_train_split(kaggle_idc, tmp_path):
    export = hub_dataset.export_idc_dataset(str(kaggle_idc), str(tmp_path / 'idc'), split_by_patient=False)
    assert export.num_rows == {'train': 81} and export.files == ['data/train-00000-of-00001.parquet', 'README.md']
    reloaded = datasets.load_dataset('parquet', data_dir=str(export.folder), cache_dir=str(tmp_path / 'cache'))
    assert list(reloaded) == ['train']
    assert _rows(reloaded['train']) == _rows(read_idc_kaggle_folder(str(kaggle_idc))[0])
    assert 'Not pre-split' in DatasetCard.load(export.folder / 'README.md').text


def test_the_idc_push_goes_to_a_dataset_repo(kaggle_idc, tmp_path, capsys, caplog):
    api = StubHfApi()
    url = hub_dataset.push_idc_dataset(str(kaggle_idc), 'someone/idc', export_dir=str(tmp_path / 'export'),
                               token=FAKE_TOKEN, api=api)
    assert url == 'https://huggingface.co/datasets/someone/idc'
    assert api.call('create_repo')['repo_type'] == 'dataset' and api.call('upload_folder')['repo_type'] == 'dataset'
    assert api.call('upload_folder')['commit_message'] == 'Upload the IDC patches with patient ids'
    assert api.uploaded == folder_contents(tmp_path / 'export') and 'README.md' in api.uploaded
    assert_token_nowhere(capsys, caplog, tmp_path)


def test_idc_export_errors(tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no patches here')
    assert push_idc_cli.main([str(empty), 'someone/idc', '--dry-run', str(tmp_path / 'out')]) == 2
    assert 'No IDC patches' in capsys.readouterr().err
    assert push_idc_cli.main([str(empty), 'someone/idc', '--dry-run', str(tmp_path / 'out'), '--shard-size', '0']) == 2
    assert 'shard_size must be at least 1' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------------------------------------------
# The demo as a Space

SPACE_ID = 'someone/patchconvnet-attention'
SPACE_CHECKPOINTS = [f'hf-hub:{REPO_ID}', 'patchconvnet_s60_p16.fb_in1k']


def test_the_space_export_holds_the_demo_the_package_and_a_card(tmp_path, capsys):
    assert push_space_cli.main([SPACE_ID, *[f'--checkpoint={c}' for c in SPACE_CHECKPOINTS],
                                '--dry-run', str(tmp_path / 'space')]) == 0
    assert 'nothing uploaded' in capsys.readouterr().out
    space = tmp_path / 'space'
    assert (space / 'app.py').read_bytes() == (ROOT / 'demo' / 'app.py').read_bytes()
    assert sorted(p.name for p in (space / 'examples').iterdir()) == sorted(  # the images, not their README
        p.name for p in (ROOT / 'demo' / 'examples').iterdir() if p.suffix in hub_space.EXAMPLE_SUFFIXES)
    package = sorted(str(p.relative_to(space)) for p in (space / 'timm_patchconvnet').rglob('*') if p.is_file())
    assert package == sorted(str(p.relative_to(ROOT)) for p in _space_closure().modules.values())  # no __pycache__
    assert {'timm_patchconvnet/demo/app.py', 'timm_patchconvnet/slides/demo_tab.py'} <= set(package)
    assert not any(name.startswith(('timm_patchconvnet/training/', 'timm_patchconvnet/hub/', 'timm_patchconvnet/cli/',
                                    'timm_patchconvnet/data/')) for name in package)  # what the Space never runs
    card = huggingface_hub.SpaceCard.load(space / 'README.md')
    assert (card.data.sdk, card.data.app_file, card.data.sdk_version) == ('gradio', 'app.py',
                                                                         importlib.metadata.version('gradio'))
    assert card.data.models == [REPO_ID] and all(f'`{c}`' in card.text for c in SPACE_CHECKPOINTS)
    requirements = (space / 'requirements.txt').read_text().split()
    assert 'torch' in requirements and any(r.startswith('timm>=') for r in requirements)
    assert not any(r.startswith('gradio') for r in requirements)  # the Space's sdk_version pins it


def _space_closure(package: Path = ROOT / 'timm_patchconvnet') -> hub_space.ImportClosure:
    return hub_space.space_closure(ROOT / 'demo' / 'app.py', package)


def _distribution(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()  # PEP 503: Pillow, pillow and PIL's pillow are one


def _unlisted_imports(closure: hub_space.ImportClosure) -> Dict[str, List[str]]:
    """The closure's third-party imports whose distribution (as installed here) the Space neither lists in its
    requirements nor gets with its SDK, with the distributions that provide each."""
    listed = {_distribution(Requirement(r).name) for r in (*hub_space.REQUIREMENTS, *hub_space.SDK_PACKAGES)}
    provided = importlib.metadata.packages_distributions()  # import name: distributions (PIL: Pillow)
    return {name: provided.get(name, []) for name in sorted(closure.third_party)
            if not {_distribution(d) for d in provided.get(name, [])} & listed}


def test_the_space_requirements_list_every_package_its_modules_import():
    closure = _space_closure()
    assert {'PIL', 'sklearn', 'pytorch_grad_cam', 'gradio', 'torch'} <= closure.third_party
    assert 'datasets' not in closure.third_party and 'timm_patchconvnet.data' not in closure.modules
    assert _unlisted_imports(closure) == {}
    assert closure.left_out == set(hub_space.SPACE_LEAVES_OUT)  # each import left out is still there, lazily


def test_a_new_import_in_the_demo_without_a_requirement_is_found(tmp_path):
    package = shutil.copytree(ROOT / 'timm_patchconvnet', tmp_path / 'timm_patchconvnet',
                              ignore=shutil.ignore_patterns('__pycache__'))
    with open(package / 'demo' / 'explain.py', 'a') as module:
        module.write('\n\ndef _log():\n    import yaml\n    from filelock import FileLock\n')
    assert _unlisted_imports(_space_closure(package)) == {'filelock': ['filelock'], 'yaml': ['PyYAML']}
    (package / 'demo' / 'explain.py').write_text('from .examples import a_name\nimport timm_patchconvnet.oops\n')
    with pytest.raises(hub.HubError, match='timm_patchconvnet.demo.explain imports timm_patchconvnet.oops, which'):
        _space_closure(package)
    shutil.copyfile(ROOT / 'timm_patchconvnet' / 'demo' / 'explain.py', package / 'demo' / 'explain.py')
    demo_tab = package / 'slides' / 'demo_tab.py'  # the import of data/ left out runs only with --slide-data
    demo_tab.write_text('from ..data import DataError\n' + demo_tab.read_text())
    with pytest.raises(hub.HubError, match='imports timm_patchconvnet.data when it is imported: it cannot be left'):
        _space_closure(package)


def test_the_exported_space_builds_its_app_from_its_own_folder_alone(tmp_path):
    pytest.importorskip('gradio', reason='the demo extra is not installed')
    space = hub_space.export_space_folder(str(ROOT / 'demo'), str(tmp_path / 'space'), [f'hf-hub:{REPO_ID}'])
    model = tmp_path / 'digits'
    save_model_folder(timm.create_model('patchconvnet_test_p4', num_classes=10), model, [str(d) for d in range(10)])
    code = ('import json, sys\nfrom pathlib import Path\nimport timm_patchconvnet\n'
            'from timm_patchconvnet.demo import app\n'
            'built = app.build_app(app.load_all([sys.argv[1]]), examples=Path(sys.argv[2]))\n'
            'print(json.dumps([type(built).__name__, timm_patchconvnet.__file__, sorted(\n'
            '    m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "timm_patchconvnet")]))')
    env = dict(os.environ, PYTHONPATH=str(space), HF_HUB_OFFLINE='1', GRADIO_ANALYTICS_ENABLED='False')
    result = subprocess.run([sys.executable, '-c', code, str(model), str(space / 'examples')], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    built, package, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert built == 'Blocks' and Path(package) == space / 'timm_patchconvnet' / '__init__.py'
    assert loaded and all(Path(f).is_relative_to(space / 'timm_patchconvnet') for f in loaded), loaded
    assert {'timm_patchconvnet/demo/app.py', 'timm_patchconvnet/slides/demo_tab.py'} <= {
        str(Path(f).relative_to(space)) for f in loaded}


def test_the_space_push_creates_a_gradio_space_and_names_its_checkpoints(tmp_path, capsys, caplog):
    api = StubHfApi()
    export = tmp_path / 'export'
    url = hub_space.push_space(str(ROOT / 'demo'), SPACE_ID, SPACE_CHECKPOINTS, export_dir=str(export),
                               token=FAKE_TOKEN, api=api)
    assert url == f'https://huggingface.co/spaces/{SPACE_ID}'
    assert [name for name, _ in api.calls] == ['create_repo', 'upload_folder', 'add_space_variable']
    assert api.call('create_repo')['repo_type'] == 'space' and api.call('create_repo')['space_sdk'] == 'gradio'
    assert api.uploaded == folder_contents(export)
    variable = api.call('add_space_variable')
    assert (variable['repo_id'], variable['key'], variable['value']) == (
        SPACE_ID, hub_space.CHECKPOINTS_VARIABLE, ','.join(SPACE_CHECKPOINTS))
    assert_token_nowhere(capsys, caplog, tmp_path)


def test_a_space_cannot_serve_a_local_folder(cifar_run, tmp_path, capsys):
    for checkpoint in (str(cifar_run), f'local-dir:{cifar_run}'):
        assert push_space_cli.main([SPACE_ID, '--checkpoint', checkpoint, '--dry-run', str(tmp_path / 'x')]) == 2
        error = capsys.readouterr().err
        assert error.startswith('error:') and 'hub/push_model.py' in error
    assert not (tmp_path / 'x').exists()
