"""One grammar of model strings: every entry point given the same strings reads the same kind of source, and refuses
a bad one with the same one-line message (`timm_patchconvnet.model_ref`), on a tiny real training run."""
import shutil
from pathlib import Path
from typing import Dict, Optional

import pytest
import timm
import torch

import train as train_cli
from test_training_hostile import TINY
from timm_patchconvnet import PretrainedWeightsUnavailableError
from timm_patchconvnet.cli import slides as slides_cli
from timm_patchconvnet.config import TrainConfig, public_value
from timm_patchconvnet.hub.space import check_space_models
from timm_patchconvnet.hub.upload import HubError
from timm_patchconvnet.model_ref import FORMS, ModelRefError, parse_model_ref
from timm_patchconvnet.training import TrainingError, create_training_model

ARCHITECTURE = 'patchconvnet_test_p4'  # TINY's --model
LOCAL = ('local-dir', 'file')

# string -> (as --pretrained of ARCHITECTURE, as a --model): a source, or the reason of the refusal
TABLE: Dict[str, tuple] = {
    'patchconvnet_test_p4': ('timm', 'timm'),  # a bare model name: its default tag, also for --pretrained
    'patchconvnet_s60_p4.cifar10': ('timm', 'timm'),
    'default': ('timm', 'is not a timm model name'),  # a tag of --model, which only --pretrained has
    'cifar10': ('names no pretrained tag of patchconvnet_test_p4', 'is not a timm model name'),
    'patchconvnet_s60_p4.nosuchtag': ('names no pretrained tag of patchconvnet_s60_p4 (its tags: cifar10, fb_in1k',
                                      'names no pretrained tag of patchconvnet_s60_p4 (its tags: cifar10, fb_in1k'),
    'no_such_model.cifar10': ('is not a timm model name', 'is not a timm model name'),
    'a tag': ('is not a tag', 'is not a timm model name'),
    'hf-hub:someone/no-such-repo': ('hf-hub', 'hf-hub'),
    'local-dir:{run}': ('local-dir', 'local-dir'),
    '{run}': ('local-dir', 'local-dir'),  # a plain folder path
    '{root}/weights.safetensors': ('file', 'is a file, not a model folder'),
    '': ('is empty', 'is empty'),
    '  ': ('is empty', 'is empty'),
    'hf-hub:': ('names nothing after hf-hub:', 'names nothing after hf-hub:'),
    'local-dir:': ('names nothing after local-dir:', 'names nothing after local-dir:'),
    'hf-hub:a/b/c': ('is not a Hub repository id', 'is not a Hub repository id'),
    'local-dir:{root}/missing': ('is no such folder', 'is no such folder'),
    'local-dir:{root}/weights.safetensors': ('is a file, not a model folder', 'is a file, not a model folder'),
    '{root}/no-config': ('has no config.json', 'has no config.json'),
    './nope': ('is no such folder or file', 'is no such folder or file'),
    'runs/x': ('is no such folder or file', 'is no such folder or file'),
    '{root}/mistyped.safetensors': ('is no such folder or file', 'is no such folder or file'),
    'ftp:someone/model': ('has an unknown source ftp:', 'has an unknown source ftp:'),
}


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    """A tiny finished training run, its weights as a lone file, and a folder that holds no model."""
    root = tmp_path_factory.mktemp('refs')
    assert train_cli.main([*TINY, '--output-dir', str(root / 'run')]) == 0
    shutil.copyfile(root / 'run' / 'model.safetensors', root / 'weights.safetensors')
    (root / 'no-config').mkdir()
    return root


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)


def _text(template: str, root: Path) -> str:
    return template.format(run=root / 'run', root=root)


def _refusal(text: str, architecture: Optional[str]) -> Optional[str]:
    try:
        parse_model_ref(text, architecture)
    except ModelRefError as err:
        return str(err)
    return None


def _train(text: str) -> str:
    """train's model creation with --pretrained: 'built', or its error."""
    try:
        model = create_training_model(TrainConfig(model=ARCHITECTURE, pretrained=text, dataset='digits'), 10)
    except (TrainingError, PretrainedWeightsUnavailableError) as err:
        return str(err)
    assert model.num_classes == 10
    return 'built'


def _demo(text: str) -> str:
    demo = pytest.importorskip('timm_patchconvnet.demo.models', reason='the demo extra is not installed')
    try:
        return 'built ' + demo.load_model(text).name
    except demo.DemoError as err:
        return str(err)


def _slides(text: str, root: Path, capsys) -> str:
    """patchconvnet-slides' error line: with no data folder, a model it could read fails on the data instead."""
    try:
        code = slides_cli.main(['--model', text, '--data-dir', str(root / 'no-data'), '--patient', '1'])
    except SystemExit as stopped:
        code = stopped.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


def _space(text: str) -> str:
    try:
        return 'served' if check_space_models([text]) == [text] else 'changed'
    except HubError as err:
        return str(err)


@pytest.mark.parametrize('template', list(TABLE), ids=[t or 'empty' for t in TABLE])
def test_every_entry_point_reads_a_model_string_alike(template, root, capsys):
    text = _text(template, root)
    as_pretrained, as_model = TABLE[template]
    for architecture, expected in ((ARCHITECTURE, as_pretrained), (None, as_model)):
        refusal = _refusal(text, architecture)
        if refusal is None:
            assert parse_model_ref(text, architecture).source == expected
        else:
            assert refusal.startswith(f'{text!r} {expected}') and refusal.endswith(f'. {FORMS}')
            assert '\n' not in refusal
    trained, pretrained_refusal = _train(text), _refusal(text, ARCHITECTURE)
    if pretrained_refusal:
        assert trained == f'--pretrained {pretrained_refusal}'
    else:
        assert FORMS not in trained
    model_refusal = _refusal(text, None)
    served, slides, space = _demo(text), _slides(text, root, capsys), _space(text)
    if model_refusal:
        assert served == space == f'--model {model_refusal}'
        assert slides.startswith('error: argument --model: ') and model_refusal in slides
        return
    for answer in (served, slides, space):
        assert FORMS not in answer
    if as_model in LOCAL:
        assert served == 'built run' and 'is a local folder, which the Space cannot read' in space
        assert 'no-data' in slides  # the model was built; the data is what is missing
    else:
        assert space == 'served'
        assert root.as_posix() not in served


@pytest.mark.parametrize('template', [t for t, (as_pretrained, _) in TABLE.items()
                                      if as_pretrained in ('timm', 'hf-hub', *LOCAL)])
def test_the_card_hides_exactly_the_local_models(template, root, tmp_path):
    """A card reads the --pretrained its run recorded, maybe on another machine: by shape, without looking."""
    text = _text(template, root)
    local = parse_model_ref(text, ARCHITECTURE).is_local
    assert public_value('pretrained', text) == ('PRETRAINED' if local else text)
    moved = text.replace(str(root), str(tmp_path / 'elsewhere'))  # the same run, read where it no longer is
    assert public_value('pretrained', moved) == ('PRETRAINED' if local else moved)


def test_a_run_folder_is_named_by_its_folder_and_gives_its_threshold_and_model(root):
    ref = parse_model_ref(str(root / 'run'))
    assert ref == parse_model_ref(f'local-dir:{root / "run"}/')
    assert ref.display_name == 'run' and ref.run_folder == root / 'run' and ref.is_saved_model
    assert parse_model_ref(f'local-dir:{root / "run" / "."}').display_name == 'run'
    built = timm.create_model(ref.timm_name, pretrained=True)
    from_file = create_training_model(TrainConfig(model=ARCHITECTURE, pretrained=str(root / 'weights.safetensors'),
                                                  dataset='digits'), 10)
    for name, tensor in built.state_dict().items():
        assert torch.equal(tensor, from_file.state_dict()[name]), name
    hub = parse_model_ref('hf-hub:someone/model@v1')
    assert hub.hub_id == 'someone/model' and hub.timm_name == 'hf-hub:someone/model@v1' and not hub.is_local
    assert parse_model_ref('patchconvnet_s60_p4.cifar10').timm_name == 'patchconvnet_s60_p4.cifar10'
    assert parse_model_ref('default', ARCHITECTURE).timm_name == ARCHITECTURE
