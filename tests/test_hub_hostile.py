"""Issue 15, hostile input to the Hub tools, each case as the attack reproduced it: run folders whose JSON files are
valid but not what train.py writes, a Hub (or what answers in its place) that says 200 with junk, a demo folder
holding a token dotfile, a symbolic link and a stray file beside the package sources, and a digits run pushed to
the repo the `cifar10` tag loads from. Each ends in one `error:` line and exit code 2 (or, for the Space, in an
export without the hostile files), keeping any local export; nothing here writes into the checkout."""
import json
import logging
import shutil
from pathlib import Path
from typing import Iterator, List

import httpx2  # huggingface_hub's HTTP client: a transport that answers as a captive portal does
import huggingface_hub
import pytest
from huggingface_hub.utils import _http

import train as train_cli
from conftest import ROOT
from test_hub import FAKE_TOKEN, REPO_ID, SPACE_ID, StubHfApi, assert_token_nowhere, folder_contents
from test_hub import push_idc_cli, push_model_cli, push_space_cli
from timm_patchconvnet import hub
from timm_patchconvnet.demo.examples import example_images
from timm_patchconvnet.hub import space as hub_space
from timm_patchconvnet.hub import upload as hub_upload

PORTAL_PAGE = '<html><head><title>Hotel WiFi</title></head><body>Accept the terms to go online</body></html>'


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory) -> Path:
    """A real two-step digits run of the model behind the `cifar10` tag: the same architecture, 10 classes and
    32x32 input, but ImageNet normalisation and the labels '0'..'9' (about 10 s on an idle CPU)."""
    out = tmp_path_factory.mktemp('digits') / 'run'
    assert train_cli.main(['--dataset', 'digits', '--model', 'patchconvnet_ti12_p4', '--epochs', '1',
                           '--max-steps-per-epoch', '2', '--batch-size', '8', '--val-fraction', '0.05',
                           '--test-fraction', '0.05', '--output-dir', str(out)]) == 0  # small splits: quick
    return out


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns('state'))
    return to


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err  # one line: no traceback
    return err


# ---------------------------------------------------------------------------------------------------------------
# 1. push_model: JSON of another shape, and a Hub answering 200 with junk


@pytest.mark.parametrize('content, expected', [
    ('[1, 2]', 'holds a JSON array, not the object train.py writes'),
    ('"x"', 'holds a JSON string, not the object train.py writes'),
    ('null', 'holds a JSON null'),
    ('[' * 100_000 + ']' * 100_000, 'is JSON nested too deep to be read'),
    ('{"architecture": "patchconvnet_ti12_p4", "num_classes": 10, "label_names": [], "pretrained_cfg": "x"}',
     'pretrained_cfg is a JSON string, not an object'),
    ('{"architecture": 5, "num_classes": "10", "label_names": "0123", "pretrained_cfg": {}}',
     'architecture is a JSON number, not a model name; num_classes is a JSON string, not a positive integer; '
     'label_names is a JSON string, not a list of names'),
], ids=['array', 'string', 'null', 'deep', 'cfg-string', 'wrong-types'])
def test_a_config_json_of_another_shape_is_one_error_line(digits_run, tmp_path, content, expected, capsys):
    run = _copy_run(digits_run, tmp_path / 'run')
    (run / 'config.json').write_text(content)
    out = tmp_path / 'out'
    assert push_model_cli.main([str(run), 'someone/digits', '--dry-run', str(out)]) == 2
    err = _one_error_line(capsys)
    assert str(run / 'config.json') in err and expected in err
    assert not out.exists()


def test_pretrained_cfg_entries_of_another_shape_are_named(digits_run, tmp_path, capsys):
    run = _copy_run(digits_run, tmp_path / 'run')
    config = json.loads((run / 'config.json').read_text())
    config['pretrained_cfg'].update(input_size=[3, 32], mean='imagenet', crop_pct=None)
    del config['pretrained_cfg']['std']
    (run / 'config.json').write_text(json.dumps(config))
    assert push_model_cli.main([str(run), 'someone/digits', '--dry-run', str(tmp_path / 'out')]) == 2
    err = _one_error_line(capsys)
    assert ('pretrained_cfg.input_size is a JSON array, not three positive integers; pretrained_cfg.mean is a JSON '
            'string, not three numbers; it lacks pretrained_cfg.std; it lacks pretrained_cfg.crop_pct') in err


def _edit_metrics(run: Path, edit) -> None:
    metrics = json.loads((run / 'metrics.json').read_text())
    (run / 'metrics.json').write_text(json.dumps(edit(metrics)))


@pytest.mark.parametrize('edit, expected', [
    (lambda m: {k: v for k, v in m.items() if k != 'data'}, 'it lacks data'),
    (lambda m: dict(m, data='digits'), 'data is a JSON string, not an object'),
    (lambda m: dict(m, data={}), 'it lacks data.dataset'),
    (lambda m: [m], 'holds a JSON array, not the object train.py writes'),
    (lambda m: dict(m, test={'accuracy': 'high'}), 'test.accuracy is a JSON string, not a number'),
    (lambda m: dict(m, test=dict(m['test'], f1=[0.5])), 'test.f1 is a JSON array, not a number or null'),
    (lambda m: dict(m, config=['--dataset', 'digits']), 'config is a JSON array, not an object'),
    # deeper details the card reads as train.py writes them: the card's own safety net
    (lambda m: dict(m, test=dict(m['test'], per_class_accuracy=[1, 2])), 'building the model card failed with'),
    (lambda m: dict(m, data=dict(m['data'], label_names=[0, 1])), 'data.label_names is a JSON array, not a list'),
], ids=['no-data', 'data-string', 'no-dataset', 'array', 'accuracy-string', 'f1-array', 'config-array',
        'per-class-list', 'label-numbers'])
def test_a_metrics_json_of_another_shape_is_one_error_line(digits_run, tmp_path, edit, expected, capsys):
    run = _copy_run(digits_run, tmp_path / 'run')
    _edit_metrics(run, edit)
    out = tmp_path / 'out'
    assert push_model_cli.main([str(run), 'someone/digits', '--dry-run', str(out)]) == 2
    err = _one_error_line(capsys)
    assert str(run / 'metrics.json') in err and expected in err
    assert not out.exists()


class JunkAnswerHfApi(StubHfApi):
    """A stub whose upload_folder 'succeeds' with something that is not a commit URL."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def upload_folder(self, **kwargs):
        super().upload_folder(**kwargs)
        return self.answer


def _assert_failed_upload_kept(export: Path, err: str, step: str) -> None:
    assert err.startswith(f'error: Could not {step} on the Hugging Face Hub') and f'{export} is kept' in err
    assert (export / 'model.safetensors').is_file() and (export / 'README.md').is_file()


@pytest.mark.parametrize('api', [
    JunkAnswerHfApi(None),
    JunkAnswerHfApi(PORTAL_PAGE),
    StubHfApi(upload_error=json.JSONDecodeError('Expecting value', PORTAL_PAGE, 0)),
    StubHfApi(upload_error=KeyError('commitOid')),
], ids=['none', 'html', 'json-decode-error', 'key-error'])
def test_an_upload_answered_with_junk_is_one_error_line_and_keeps_the_export(digits_run, api, monkeypatch, tmp_path,
                                                                             capsys, caplog):
    monkeypatch.setattr(hub_upload, 'HfApi', lambda: api)
    export = tmp_path / 'kept'
    assert push_model_cli.main([str(digits_run), 'someone/digits', '--export-dir', str(export),
                                '--token', FAKE_TOKEN]) == 2
    err = _one_error_line(capsys)
    _assert_failed_upload_kept(export, err, 'upload')
    assert 'a proxy or captive portal in the way?' in err
    assert_token_nowhere(capsys, caplog, tmp_path)


def test_a_repo_url_that_is_not_a_url_is_one_error_line(digits_run, monkeypatch, tmp_path, capsys):
    api = StubHfApi()
    monkeypatch.setattr(api, 'create_repo', lambda *args, **kwargs: PORTAL_PAGE)
    monkeypatch.setattr(hub_upload, 'HfApi', lambda: api)
    export = tmp_path / 'kept'
    assert push_model_cli.main([str(digits_run), 'someone/digits', '--export-dir', str(export),
                                '--token', FAKE_TOKEN]) == 2
    _assert_failed_upload_kept(export, _one_error_line(capsys), 'create the repo')
    assert api.calls == []  # nothing uploaded after the junk answer


@pytest.fixture
def captive_portal() -> Iterator[List[str]]:
    """huggingface_hub's real HfApi and HTTP client, behind a transport that answers every request 200 with an HTML
    page, as a captive portal or a misconfigured proxy does. Yields the requests seen."""
    seen: List[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(f'{request.method} {request.url.path}')
        return httpx2.Response(200, headers={'content-type': 'text/html'}, text=PORTAL_PAGE)

    previous = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(answer)))
    try:
        yield seen
    finally:
        huggingface_hub.set_client_factory(previous)


def test_a_captive_portal_answering_200_html_is_one_error_line(digits_run, captive_portal, tmp_path, capsys,
                                                               caplog):
    export = tmp_path / 'kept'
    assert push_model_cli.main([str(digits_run), 'someone/digits', '--export-dir', str(export),
                                '--token', FAKE_TOKEN]) == 2
    err = _one_error_line(capsys)
    _assert_failed_upload_kept(export, err, 'create the repo')
    assert 'JSONDecodeError' in err and any('/api/repos/create' in r for r in captive_portal)
    assert_token_nowhere(capsys, caplog, tmp_path)


def test_a_space_variable_answered_with_junk_is_one_error_line(captive_portal, monkeypatch, tmp_path, capsys):
    api = StubHfApi()

    def junk_variable(*args, **kwargs):
        api._record('add_space_variable', *args, **kwargs)
        return huggingface_hub.HfApi().add_space_variable(*args, **kwargs)  # the real call, through the portal

    monkeypatch.setattr(api, 'add_space_variable', junk_variable)
    monkeypatch.setattr(hub_upload, 'HfApi', lambda: api)
    export = tmp_path / 'space'
    assert push_space_cli.main([SPACE_ID, '--checkpoint', f'hf-hub:{REPO_ID}', '--export-dir', str(export),
                                '--token', FAKE_TOKEN]) == 2
    err = _one_error_line(capsys)
    assert 'was uploaded, but setting its PATCHCONVNET_MODELS variable failed: JSONDecodeError' in err
    assert (export / 'app.py').is_file()


# ---------------------------------------------------------------------------------------------------------------
# 2. push_space exports an allow-list: no dotfiles, no symbolic links, no stray files


@pytest.fixture
def hostile_demo(tmp_path) -> Path:
    """A copy of demo/ with a token in examples/.env, image-named links to a file outside (the attack linked
    /etc/hostname) and a link to a folder outside."""
    demo = tmp_path / 'demo'
    shutil.copytree(ROOT / 'demo', demo)
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'hostname').write_text('SECRET-HOST\n')
    (demo / 'examples' / '.env').write_text(f'HF_TOKEN={FAKE_TOKEN}\n')
    (demo / 'examples' / 'hostname.png').symlink_to(outside / 'hostname')
    (demo / 'examples' / 'hostname').symlink_to(outside / 'hostname')
    (demo / 'examples' / 'elsewhere').symlink_to(outside, target_is_directory=True)
    (demo / 'examples' / 'notes.txt').write_text('not an image')
    return demo


@pytest.fixture
def hostile_package(tmp_path) -> Path:
    """A copy of the package with stray files beside its modules: notes, bytecode, a dotfile and a link."""
    package = shutil.copytree(ROOT / 'timm_patchconvnet', tmp_path / 'site' / 'timm_patchconvnet',
                              ignore=shutil.ignore_patterns('__pycache__'))
    (package / 'notes.txt').write_text(f'token for later: {FAKE_TOKEN}\n')
    (package / '__pycache__').mkdir()
    (package / '__pycache__' / 'hub.cpython-311.pyc').write_bytes(b'\0stale bytecode')
    (package / '.secrets.py').write_text(f'TOKEN = {FAKE_TOKEN!r}\n')
    (package / 'linked.py').symlink_to(tmp_path / 'outside' / 'hostname')
    (package / 'demo' / 'notes.py').write_text(f'TOKEN = {FAKE_TOKEN!r}  # a module nothing imports\n')
    return package


def test_the_space_export_is_an_allow_list(hostile_demo, hostile_package, tmp_path, caplog):
    out = tmp_path / 'space'
    with caplog.at_level(logging.WARNING, logger=hub_space.__name__):
        folder = hub_space.export_space_folder(str(hostile_demo), str(out), [f'hf-hub:{REPO_ID}'],
                                               package_dir=str(hostile_package))
    modules = hub_space.space_closure(ROOT / 'demo' / 'app.py', ROOT / 'timm_patchconvnet').modules.values()
    images = sorted(p.name for p in (ROOT / 'demo' / 'examples').glob('*.png'))
    assert sorted(folder_contents(folder)) == sorted(
        ['README.md', 'app.py', 'requirements.txt', *(f'examples/{name}' for name in images),
         *(str(module.relative_to(ROOT)) for module in modules)])
    assert not any(p.is_symlink() for p in folder.rglob('*'))
    for content in folder_contents(folder).values():
        assert FAKE_TOKEN.encode() not in content and b'SECRET-HOST' not in content
    skipped = sorted(r.getMessage().split(':')[0] for r in caplog.records)
    assert skipped == sorted(f'skipped {path}' for path in (
        hostile_demo / 'examples' / 'elsewhere', hostile_demo / 'examples' / 'hostname',
        hostile_demo / 'examples' / 'hostname.png'))
    assert all('a symbolic link, not followed' in r.getMessage() for r in caplog.records)


def test_an_imported_module_that_is_a_link_stops_the_export(hostile_demo, hostile_package, tmp_path):
    (hostile_package / 'errors.py').unlink()
    (hostile_package / 'errors.py').symlink_to(tmp_path / 'outside' / 'hostname')  # read as a module, it leaks
    with pytest.raises(hub.HubError, match='errors.py is a symbolic link'):
        hub_space.export_space_folder(str(hostile_demo), str(tmp_path / 'space'), [f'hf-hub:{REPO_ID}'],
                                      package_dir=str(hostile_package))
    assert not (tmp_path / 'space').exists()


def test_the_space_command_exports_no_dotfile_or_link_of_the_demo(hostile_demo, tmp_path, capsys):
    out = tmp_path / 'space'
    assert push_space_cli.main([SPACE_ID, '--checkpoint', f'hf-hub:{REPO_ID}', '--demo-dir', str(hostile_demo),
                                '--dry-run', str(out)]) == 0
    assert 'nothing uploaded' in capsys.readouterr().out
    exported = set(folder_contents(out))
    assert not {'examples/.env', 'examples/hostname.png', 'examples/hostname', 'examples/notes.txt'} & exported
    assert not any('__pycache__' in name or name.startswith('timm_patchconvnet/cli') for name in exported)


def test_a_linked_app_or_examples_folder_is_not_followed(hostile_demo, tmp_path, caplog):
    linked = tmp_path / 'linked_demo'
    linked.mkdir()
    (linked / 'app.py').symlink_to(hostile_demo / 'app.py')
    with pytest.raises(hub.HubError, match='has no app.py \\(a plain file, not a link\\)'):
        hub_space.export_space_folder(str(linked), str(tmp_path / 'a'), [f'hf-hub:{REPO_ID}'])
    (linked / 'app.py').unlink()
    shutil.copyfile(hostile_demo / 'app.py', linked / 'app.py')
    (linked / 'examples').symlink_to(hostile_demo / 'examples', target_is_directory=True)
    folder = hub_space.export_space_folder(str(linked), str(tmp_path / 'b'), [f'hf-hub:{REPO_ID}'])
    assert not (folder / 'examples').exists() and f'skipped {linked / "examples"}' in caplog.text
    assert not (tmp_path / 'a').exists()


def test_the_space_takes_the_example_images_the_demo_shows(hostile_demo, tmp_path):
    for name in ('photo.JPG', 'photo.webp', 'scan.tiff'):
        shutil.copyfile(hostile_demo / 'examples' / 'digit-3.png', hostile_demo / 'examples' / name)
    folder = hub_space.export_space_folder(str(hostile_demo), str(tmp_path / 'space'), [f'hf-hub:{REPO_ID}'])
    shown = [Path(path).name for path in example_images(hostile_demo / 'examples')
             if Path(path).parent == hostile_demo / 'examples']  # scikit-learn's photos come with the Space's sklearn
    assert sorted(p.name for p in (folder / 'examples').iterdir()) == sorted(set(shown) - {'hostname.png'})
    assert {'photo.JPG', 'photo.webp'} <= set(shown) and 'scan.tiff' not in shown


# ---------------------------------------------------------------------------------------------------------------
# 3. The tag repo takes only a run that fits the tag: data set, normalisation and label names too


def test_a_digits_run_is_refused_for_the_cifar10_tag_repo(digits_run, tmp_path, capsys):
    out = tmp_path / 'out'
    assert push_model_cli.main([str(digits_run), REPO_ID, '--dry-run', str(out)]) == 2
    err = _one_error_line(capsys)
    assert "where the tag 'patchconvnet_ti12_p4.cifar10' loads its weights from" in err
    assert "data set (metrics.json data.dataset): run 'digits', tag 'cifar10'" in err
    assert "label names: run ['0', '1', '2', '3', ... (10 in all)], tag ['airplane', 'automobile'" in err
    assert 'normalisation mean: run [0.485, 0.456, 0.406], tag [0.4914, 0.4822, 0.4465]' in err
    assert 'normalisation std: run [0.229, 0.224, 0.225], tag [0.247, 0.2435, 0.2616]' in err
    assert not any(f'{what}:' in err for what in ('architecture', 'classes', 'input size'))  # these fit
    assert not out.exists()

    api = StubHfApi()  # the API refuses it too, before anything is sent
    with pytest.raises(hub.HubError, match='this run does not fit that tag'):
        hub.push_model(str(digits_run), REPO_ID, export_dir=str(tmp_path / 'e'), token=FAKE_TOKEN, api=api)
    assert api.calls == [] and not (tmp_path / 'e').exists()


def test_a_run_with_per_class_tokens_is_refused_for_a_single_token_tag(digits_run, tmp_path, capsys):
    """The tag builds a single-token model and averages a per-class run's tokens into it: it would load and answer
    wrongly, so the tag's repo refuses it whatever else fits."""
    run = _copy_run(digits_run, tmp_path / 'per-class')
    config = json.loads((run / 'config.json').read_text())
    config['model_args'] = {**config.get('model_args', {}), 'class_tokens': 'per_class'}
    (run / 'config.json').write_text(json.dumps(config))
    assert push_model_cli.main([str(run), REPO_ID, '--dry-run', str(tmp_path / 'out')]) == 2
    assert "class tokens: run 'per_class', tag 'single'" in _one_error_line(capsys)


def test_a_digits_run_goes_to_any_other_repo(digits_run, tmp_path, capsys):
    assert push_model_cli.main([str(digits_run), 'someone/ti12-digits', '--dry-run', str(tmp_path / 'out')]) == 0
    assert 'nothing uploaded' in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# Issue 26: links carried into exports, hostile text in cards


def test_a_model_file_linked_out_of_the_run_is_refused_naming_the_link(digits_run, tmp_path, capsys):
    """The attack: model.safetensors a link to a key file, whose bytes the export carried."""
    run = _copy_run(digits_run, tmp_path / 'run')
    secret = tmp_path / 'id_ed25519'
    secret.write_text('-----BEGIN OPENSSH PRIVATE KEY-----')
    (run / 'model.safetensors').unlink()
    (run / 'model.safetensors').symlink_to(secret)
    out = tmp_path / 'out'
    assert push_model_cli.main([str(run), 'someone/digits', '--dry-run', str(out)]) == 2
    err = _one_error_line(capsys)
    assert f'{run / "model.safetensors"} is a symbolic link to {secret}, outside {run}' in err
    assert not out.exists()


def test_a_model_file_linked_inside_the_run_is_followed(digits_run, tmp_path, capsys):
    run = _copy_run(digits_run, tmp_path / 'run')
    (run / 'kept').mkdir()
    (run / 'model.safetensors').rename(run / 'kept' / 'model.safetensors')
    (run / 'model.safetensors').symlink_to(run / 'kept' / 'model.safetensors')
    out = tmp_path / 'out'
    assert push_model_cli.main([str(run), 'someone/digits', '--dry-run', str(out)]) == 0
    assert not (out / 'model.safetensors').is_symlink()
    assert (out / 'model.safetensors').read_bytes() == (run / 'kept' / 'model.safetensors').read_bytes()


@pytest.mark.parametrize('link', ['patient', 'patch'])
def test_an_idc_export_refuses_a_link_out_of_the_folder(link, tmp_path, capsys):
    """The attacks: a linked patient folder was dropped without a word, and an outside file reached through a
    linked patch was embedded in the public parquet files."""
    from datagen import write_idc_kaggle_folder
    kaggle = write_idc_kaggle_folder(tmp_path / 'idc')
    if link == 'patient':
        shutil.move(kaggle / '10262', tmp_path / '10262')
        linked, target = kaggle / '10262', tmp_path / '10262'
    else:
        outside = tmp_path / 'secret.png'
        shutil.copyfile(next((kaggle / '10256' / '0').iterdir()), outside)
        linked, target = kaggle / '10256' / '0' / '10256_idx5_x900_y900_class0.png', outside
    linked.symlink_to(target)
    out = tmp_path / 'out'
    assert push_idc_cli.main([str(kaggle), 'someone/idc', '--dry-run', str(out)]) == 2
    assert f'{linked} is a symbolic link to {target}, outside {kaggle}' in _one_error_line(capsys)
    assert not out.exists()


HOSTILE_LABELS = ['<img src=x onerror=alert(1)>', 'two\n# Injected heading', 'a|b', '[click](javascript:x)']


def test_hostile_label_names_are_escaped_in_the_model_card(digits_run, tmp_path):
    run = _copy_run(digits_run, tmp_path / 'run')
    names = [*HOSTILE_LABELS, *(str(d) for d in range(4, 10))]
    config = json.loads((run / 'config.json').read_text())
    (run / 'config.json').write_text(json.dumps(dict(config, label_names=names)))

    def rename(metrics):
        per_class = metrics['test']['per_class_accuracy']
        metrics['test']['per_class_accuracy'] = dict(zip(names, per_class.values()))
        metrics['data']['label_names'] = names
        return metrics
    _edit_metrics(run, rename)
    text = hub.build_model_card(str(run), 'someone/digits').text
    assert '<img' not in text and '&lt;img src=x onerror=alert(1)&gt;' in text
    assert '\n# Injected' not in text and 'two # Injected heading' in text
    assert r'a\|b' in text and r'\[click\](javascript:x)' in text
    header = next(line for line in text.splitlines() if line.startswith('| true \\ predicted |'))
    assert header.replace(r'\|', '').count('|') == len(names) + 2  # one cell per class: no cell was added
    assert '```bash\npython train.py' in text or '```bash\npatchconvnet-train' in text  # the command is verbatim
