"""The folders we write load in transformers as well as in timm: a train.py run, its Hub export, the export from
an offline Hugging Face cache, a per-class-token run and the export of a run written before the fix. transformers'
timm wrapper (`AutoModelForImageClassification`, `AutoImageProcessor`, `pipeline('image-classification')`) must
give what timm gives: the same logits, label names, preprocessing, top labels and scores."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import sklearn.datasets
import timm
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from conftest import ROOT
from timm_patchconvnet import hub
from timm_patchconvnet.model_folder import TRANSFORMERS_OWN_ARGS, portable_model_config, save_model_folder
from timm_patchconvnet.cli.train import main as train_main

REPO_ID = 'someone/patchconvnet-digits'
DIGITS = [str(d) for d in range(10)]
# real handwritten digits as train.py sees them (demo/examples/README.md), and two photos of another size and shape
IMAGES = [*sorted((ROOT / 'demo' / 'examples').glob('digit-*.png')),
          *(Path(sklearn.datasets.__file__).parent / 'images' / name for name in ('china.jpg', 'flower.jpg'))]


def _train(args: List[str]) -> None:
    """A real train.py run (`patchconvnet-train`) of the test model on digits: 3 steps, about 5 s."""
    assert train_main(['--dataset', 'digits', '--model', 'patchconvnet_test_p4', '--epochs', '1',
                       '--max-steps-per-epoch', '3', *args]) == 0


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('digits') / 'run'
    _train(['--output-dir', str(out)])
    return out


@pytest.fixture(scope='module')
def per_class_run(tmp_path_factory) -> Path:
    """A run of a per-class-token model (one class token per digit): fine-tuned from a 3-class one."""
    root = tmp_path_factory.mktemp('per_class')
    base = timm.create_model('patchconvnet_test_p4', num_classes=3, class_tokens='per_class')
    save_model_folder(base, root / 'base', ['a', 'b', 'c'])
    _train(['--pretrained', f'local-dir:{root / "base"}', '--num-classes', '10', '--output-dir', str(root / 'run')])
    return root / 'run'


@pytest.fixture(scope='module')
def digits_export(digits_run, tmp_path_factory) -> Path:
    return hub.export_model_folder(str(digits_run), str(tmp_path_factory.mktemp('export') / 'out'), REPO_ID)


def _predict(transformers_id: str, timm_name: str) -> Dict[str, Any]:
    """What transformers (from `transformers_id`) and timm (from `timm_name`) each make of IMAGES, as JSON-able
    values: also run in a subprocess, for a Hugging Face cache read offline."""
    import timm_patchconvnet  # noqa: F401  (registers the architecture: transformers builds the model with timm)
    model, loading = AutoModelForImageClassification.from_pretrained(transformers_id, output_loading_info=True)
    processor = AutoImageProcessor.from_pretrained(transformers_id)
    classifier = pipeline('image-classification', model=transformers_id)
    reference = timm.create_model(timm_name, pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=reference))
    images = [Image.open(path).convert('RGB') for path in IMAGES]
    pixels = torch.stack([transform(image) for image in images])  # timm's own preprocessing
    processed = processor(images)['pixel_values']
    with torch.no_grad():
        logits = reference(pixels)
        transformers_logits = model.eval()(pixel_values=pixels).logits
        processed_logits = model(pixel_values=processed).logits
    return dict(
        loading={key: [str(v) for v in values] for key, values in loading.items()},
        label_names=[model.config.id2label[i] for i in range(model.config.num_labels)],
        timm_label_names=reference.pretrained_cfg['label_names'],
        class_tokens=[m.cls_token.shape[1] for m in (model.timm_model, reference)],
        pixel_difference=(processed - pixels).abs().max().item(),
        timm=logits.tolist(), transformers=transformers_logits.tolist(), processed=processed_logits.tolist(),
        pipeline=classifier([str(path) for path in IMAGES], top_k=model.config.num_labels),  # from the files
    )


def _check(result: Dict[str, Any], label_names: List[str], class_tokens: int = 1) -> None:
    assert all(not problems for problems in result['loading'].values()), result['loading']  # every weight loaded
    assert result['label_names'] == result['timm_label_names'] == label_names
    assert result['class_tokens'] == [class_tokens, class_tokens]
    assert result['pixel_difference'] <= 1e-6  # AutoImageProcessor preprocesses as timm does
    logits = torch.tensor(result['timm'])
    assert logits.shape == (len(IMAGES), len(label_names))
    torch.testing.assert_close(torch.tensor(result['transformers']), logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(result['processed']), logits, rtol=0, atol=1e-5)
    for answers, probabilities in zip(result['pipeline'], logits.softmax(-1)):
        assert answers[0]['label'] == label_names[probabilities.argmax()]
        scores = {answer['label']: answer['score'] for answer in answers}
        assert scores == pytest.approx(dict(zip(label_names, probabilities.tolist())), abs=1e-4)


def test_a_training_run_loads_in_transformers_as_in_timm(digits_run):
    config = json.loads((digits_run / 'config.json').read_text())
    assert config['num_classes'] == 10 and not set(TRANSFORMERS_OWN_ARGS) & set(config['model_args'])
    _check(_predict(str(digits_run), f'local-dir:{digits_run}'), DIGITS)


def test_the_hub_export_loads_in_transformers_as_in_timm(digits_run, digits_export):
    assert (digits_export / 'config.json').read_bytes() == (digits_run / 'config.json').read_bytes()
    _check(_predict(str(digits_export), f'local-dir:{digits_export}'), DIGITS)


def test_the_hub_export_loads_in_transformers_from_an_offline_cache(digits_export, tmp_path):
    """`from_pretrained('ORG/NAME')`, `pipeline(model='ORG/NAME')` and `hf-hub:ORG/NAME` with HF_HUB_OFFLINE=1, in
    a new process: huggingface_hub and transformers read the cache and offline settings when imported."""
    from test_hub import fill_hf_cache  # here: the subprocess imports this module, and needs none of test_hub

    cache = tmp_path / 'hf_cache'
    fill_hf_cache(cache, REPO_ID, digits_export)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf_home'),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]))
    result = tmp_path / 'result.json'  # not stdout, which libraries may print to
    code = ('import json, pathlib; from test_transformers import _predict; '
            f'pathlib.Path({str(result)!r}).write_text(json.dumps(_predict({REPO_ID!r}, "hf-hub:{REPO_ID}")))')
    done = subprocess.run([sys.executable, '-c', code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check(json.loads(result.read_text()), DIGITS)


def test_a_per_class_token_run_loads_in_transformers(per_class_run):
    config = json.loads((per_class_run / 'config.json').read_text())
    assert config['model_args']['class_tokens'] == 'per_class' and config['num_classes'] == 10
    _check(_predict(str(per_class_run), f'local-dir:{per_class_run}'), DIGITS, class_tokens=10)


def test_the_export_of_a_run_from_before_the_fix_loads_in_transformers(digits_run, tmp_path):
    """Runs written before save_model_folder fixed config.json repeat num_classes in model_args (timm's save_for_hf
    does), so transformers' `timm.create_model(..., num_classes=num_labels, **model_args)` gets it twice and
    fails; the Hub export writes them fixed."""
    old = tmp_path / 'old_run'
    shutil.copytree(digits_run, old, ignore=shutil.ignore_patterns('state'))
    config = json.loads((old / 'config.json').read_text())
    config['model_args'] = {'num_classes': 10, **config['model_args']}  # as timm 1.0.31's save_for_hf writes it
    (old / 'config.json').write_text(json.dumps(config, indent=2))
    export = hub.export_model_folder(str(old), str(tmp_path / 'export'), REPO_ID)
    assert (export / 'config.json').read_bytes() == (digits_run / 'config.json').read_bytes()
    assert AutoModelForImageClassification.from_pretrained(str(export)).config.num_labels == 10


def test_portable_model_config():
    config = {'architecture': 'a', 'model_args': {'num_classes': 4, 'pretrained': False, 'depth': 2},
              'pretrained_cfg': {'num_classes': 4}}
    portable = portable_model_config(config)
    assert portable == {'architecture': 'a', 'model_args': {'depth': 2}, 'pretrained_cfg': {'num_classes': 4},
                        'num_classes': 4}  # the top-level num_classes, which timm reads, is kept or filled in
    assert portable_model_config(portable) == portable and config['model_args']['num_classes'] == 4  # no mutation
    assert 'model_args' not in portable_model_config({'num_classes': 4, 'model_args': {'num_classes': 4}})
    with pytest.raises(ValueError, match='num_classes 5 at the top, 4 in model_args'):
        portable_model_config({'num_classes': 5, 'model_args': {'num_classes': 4}})
