"""Publishing on the Hugging Face Hub: trained models with their model card, and the IDC data set with patient ids.

Every step first writes a local folder that is exactly what gets uploaded (`export_model_folder`,
`export_idc_dataset`); `push_folder` then uploads that folder with `HfApi`. A failed upload keeps the local
export, so it can be retried (`hf upload ...`) without redoing it. Tokens come from the caller, `HF_TOKEN` or
`hf auth login` (huggingface_hub's `get_token`), go only to `HfApi`, and are never printed or written.

Loading needs nothing from here: the `cifar10`/`idc` tags of the registered models point at
`HUB_NAMESPACE/<model>.<tag>` (`hf_hub_id`), and `hf-hub:ORG/REPO` works once `timm_patchconvnet` is imported.
"""
import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import timm
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from huggingface_hub.utils import validate_repo_id
from timm.models import PretrainedCfg

from .checkpoints import portable_model_config, write_model_config
from .config import CIFAR10_HUB_ID, TrainConfig  # not .data/.training: publishing needs no training stack
from .patchconvnet import HUB_NAMESPACE

__all__ = [
    'HubError', 'TrainingRun', 'add_upload_arguments', 'check_repo_id', 'resolve_token', 'load_training_run',
    'build_model_card', 'export_model_folder', 'push_folder', 'push_model',
]

RUN_FILES = ('model.safetensors', 'config.json', 'metrics.json')  # what every finished train.py run holds
MODEL_FILES = ('model.safetensors', 'config.json')  # timm's save_for_hf layout; config.json made portable
EXAMPLE_IMAGE = 'attention.png'  # written for PatchConvNet models only
CARD_FILE = 'README.md'
NORMALISATION_TOLERANCE = 1e-3  # mean/std of a run against those of the tag it is pushed for
IDC_KAGGLE_ID = 'paultimothymooney/breast-histopathology-images'
DATA_NAMES = {'cifar10': 'CIFAR-10', 'idc': 'Breast Histopathology Images (IDC)', 'digits': "scikit-learn's digits"}
DATA_TAGS = {'cifar10': ['cifar10'], 'idc': ['histopathology', 'breast-cancer', 'medical-imaging'],
             'digits': ['digits']}
# test metrics reported in the model-index: (key in metrics.json, metric type, name shown on the Hub)
CARD_METRICS = (('accuracy', 'accuracy', 'Test accuracy'),
                ('balanced_accuracy', 'balanced_accuracy', 'Test balanced accuracy'),
                ('f1', 'f1', 'Test F1 (positive class)'), ('sensitivity', 'recall', 'Test sensitivity'),
                ('specificity', 'specificity', 'Test specificity'), ('roc_auc', 'roc_auc', 'Test ROC-AUC'))
# HfHubHTTPError derives from OSError and from the HTTP client's base error (httpx's; requests' in older releases).
# Catching its bases also catches the client's connection and timeout errors, which are not OSErrors in httpx.
# huggingface_hub reads a successful answer without checking its shape: a proxy or captive portal answering 200 with
# an HTML page makes it raise json's ValueError, JSON of another shape a KeyError, TypeError or AttributeError.
# These wrap HfApi calls only, so they cannot hide a mistake of this module.
_MALFORMED_ANSWER_ERRORS = (ValueError, LookupError, TypeError, AttributeError)
_HUB_ERRORS = tuple({OSError, *HfHubHTTPError.__bases__, *_MALFORMED_ANSWER_ERRORS})
PAPER_BIBTEX = """@article{touvron2021patchconvnet,
  title={Augmenting Convolutional networks with attention-based aggregation},
  author={Touvron, Hugo and Cord, Matthieu and El-Nouby, Alaaeldin and Bojanowski, Piotr and Joulin, Armand and
          Synnaeve, Gabriel and J{\\'e}gou, Herv{\\'e}},
  journal={arXiv preprint arXiv:2112.13692},
  year={2021}
}"""


class HubError(RuntimeError):
    """Publishing cannot go on: the message says why and what to do; a local export already written is kept."""


# ---------------------------------------------------------------------------------------------------------------
# Checks shared by every push


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the hub/ command lines: where the export goes and how it is uploaded."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--dry-run', metavar='DIR', help='only write the folder that would be uploaded into DIR')
    where.add_argument('--export-dir', metavar='DIR',
                       help='export into DIR (kept) before uploading; default: a temporary folder, removed after a '
                            'successful upload')
    parser.add_argument('--private', action='store_true', help='create the repo private (an existing repo keeps '
                                                               'its visibility)')
    parser.add_argument('--revision', help='branch to upload to (created from main if missing; default: main)')
    parser.add_argument('--commit-message', help='message of the upload commit')
    parser.add_argument('--token', help='a Hub token with write access (default: HF_TOKEN or `hf auth login`; '
                                        'prefer those: a command line is visible to other users)')


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid `ORG/NAME` Hub id; a HubError otherwise (an owner is required: no guessing
    which account a bare name would land in)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f'Malformed repo id {repo_id!r}: {err}') from err
    if repo_id.count('/') != 1:
        raise HubError(f'Malformed repo id {repo_id!r}: use ORG/NAME (a user or organisation, then the repo name).')
    return repo_id


def resolve_token(token: Optional[str] = None) -> str:
    """`token`, else the one huggingface_hub finds (HF_TOKEN, then `hf auth login`'s file); a HubError if none,
    raised before anything is written or uploaded. The token itself never appears in a message."""
    token = token or get_token()
    if not token:
        raise HubError('No Hugging Face token: set HF_TOKEN to a token with write access, run `hf auth login`, '
                       'or pass --token. Nothing was uploaded.')
    return token


def new_export_folder(path: str) -> Path:
    """`path` as a new or empty folder: exporting over old files would upload stale ones too."""
    folder = Path(path).expanduser()
    if folder.exists() and (not folder.is_dir() or next(folder.iterdir(), None) is not None):
        raise HubError(f'{folder} already exists and is not an empty folder: export into a new or empty folder, '
                       'so that it holds exactly what is uploaded.')
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _scrub(text: str, token: Optional[str]) -> str:
    # server messages never echo the token, but an error text is the one place it could leak from
    return text.replace(token, '***') if token else text


# ---------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class TrainingRun:
    """A finished `train.py` output folder: its model config (timm's config.json) and metrics.json."""
    folder: Path
    config: Dict[str, Any]
    metrics: Dict[str, Any]

    @property
    def kind(self) -> str:  # 'digits', 'cifar10', 'idc' or 'generic', as train.py names its data
        return self.metrics['data']['kind']

    @property
    def is_patchconvnet(self) -> bool:  # train.py trains any timm model; the card then says less
        return self.config['architecture'].startswith('patchconvnet')


def load_training_run(run_dir: str) -> TrainingRun:
    """The run in `run_dir`, or a HubError saying why it is not a training output folder."""
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise HubError(f'{folder} is not a folder: pass the --output-dir of a finished train.py run.')
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise HubError(f'{folder} is not a training output folder: it lacks {", ".join(missing)}. Pass the '
                       f'--output-dir of a finished train.py run (it writes {", ".join(RUN_FILES)}).')
    config, metrics = (_read_json(folder / name) for name in ('config.json', 'metrics.json'))
    wrong = _wrong_config_entries(config)
    if wrong:
        raise HubError(f'{folder / "config.json"} is not a timm model config from train.py: {"; ".join(wrong)}.')
    wrong = _wrong_metrics_entries(metrics)
    if wrong:
        raise HubError(f'{folder / "metrics.json"} is not the metrics of a finished train.py run: '
                       f'{"; ".join(wrong)}. Is the run finished?')
    return TrainingRun(folder, config, metrics)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f'{path} is not valid JSON ({err}): is it from an interrupted run?') from err
    except RecursionError as err:  # valid JSON nested thousands deep: no file train.py writes
        raise HubError(f'{path} is JSON nested too deep to be read: not a file train.py writes.') from err
    if not isinstance(value, dict):  # valid JSON of another shape would fail later, deep inside the card
        raise HubError(f'{path} holds a JSON {_json_type(value)}, not the object train.py writes: '
                       'pass the --output-dir of a finished train.py run.')
    return value


def _json_type(value: Any) -> str:
    """The JSON name of `value`'s type, for messages about files that are not what train.py writes."""
    names = ((bool, 'boolean'), (int, 'number'), (float, 'number'), (str, 'string'), (list, 'array'),
             (dict, 'object'))
    return next((name for kind, name in names if isinstance(value, kind)), 'null')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number_list(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(_is_number(v) for v in value)


def _wrong_config_entries(config: Dict[str, Any]) -> List[str]:
    """What config.json lacks or holds in another shape than train.py writes: everything the export and the card
    read, checked here so that a hand-edited or hostile file gets a message instead of a traceback."""
    checks = (
        ('architecture', config.get('architecture'), lambda v: isinstance(v, str) and bool(v), 'a model name'),
        ('num_classes', config.get('num_classes'), lambda v: isinstance(v, int) and not isinstance(v, bool)
         and v > 0, 'a positive integer'),
        ('label_names', config.get('label_names'), lambda v: isinstance(v, list)
         and all(isinstance(n, str) for n in v), 'a list of names'),
        ('pretrained_cfg', config.get('pretrained_cfg'), lambda v: isinstance(v, dict), 'an object'),
    )
    wrong = [_entry_message(key, value, expected) for key, value, valid, expected in checks if not valid(value)]
    if wrong:
        return wrong
    cfg = config['pretrained_cfg']
    checks = (
        ('input_size', lambda v: _is_number_list(v, 3) and all(isinstance(n, int) and n > 0 for n in v),
         'three positive integers'),
        ('mean', lambda v: _is_number_list(v, 3), 'three numbers'),
        ('std', lambda v: _is_number_list(v, 3), 'three numbers'),
        ('crop_pct', _is_number, 'a number'),
    )
    return [_entry_message(f'pretrained_cfg.{key}', cfg.get(key), expected)
            for key, valid, expected in checks if not valid(cfg.get(key))]


def _wrong_metrics_entries(metrics: Dict[str, Any]) -> List[str]:
    """What metrics.json lacks or holds in another shape than train.py writes (see `_wrong_config_entries`)."""
    test, data = metrics.get('test'), metrics.get('data')
    wrong = [_entry_message(key, value, 'an object') for key, value in (('test', test), ('data', data))
             if not isinstance(value, dict)]
    if isinstance(test, dict) and not _is_number(test.get('accuracy')):
        wrong.append(_entry_message('test.accuracy', test.get('accuracy'), 'a number'))
    if isinstance(test, dict):
        wrong += [_entry_message(f'test.{key}', test[key], 'a number or null') for key, _, _ in CARD_METRICS
                  if key != 'accuracy' and key in test and test[key] is not None and not _is_number(test[key])]
    if isinstance(data, dict) and not isinstance(data.get('kind'), str):
        wrong.append(_entry_message('data.kind', data.get('kind'), 'the name of the data set'))
    # the sections the card reads with defaults: absent is fine, another shape is not
    wrong += [_entry_message(key, metrics[key], 'an object') for key in ('config', 'model', 'environment')
              if key in metrics and not isinstance(metrics[key], dict)]
    return wrong


def _entry_message(key: str, value: Any, expected: str) -> str:
    return f'it lacks {key}' if value is None else f'{key} is a JSON {_json_type(value)}, not {expected}'


def _registered_tag(repo_id: str) -> Optional[str]:
    """The model tag (`patchconvnet_ti12_p4.cifar10`) whose `hf_hub_id` is `repo_id`, if any."""
    namespace, name = repo_id.split('/')
    if namespace == HUB_NAMESPACE and name in timm.list_pretrained('patchconvnet_*'):
        return name
    return None


def _check_fits_tag(run: TrainingRun, repo_id: str) -> None:
    """A repo that a registered tag loads from must hold a model that tag describes: same architecture, classes
    and input size, or `timm.create_model(tag, pretrained=True)` fails for every user; and the same data set,
    normalisation and label names, or it loads and silently gives wrong answers (a digits model behind
    `.cifar10` fits in shape, but its mean/std and its classes are not CIFAR-10's)."""
    tag = _registered_tag(repo_id)
    if tag is None:
        return
    mismatches = _tag_mismatches(run, timm.models.get_pretrained_cfg(tag), tag.split('.')[0])
    if mismatches:
        raise HubError(f'{repo_id} is where the tag {tag!r} loads its weights from, and this run does not fit '
                       f'that tag: {"; ".join(mismatches)}. Push it to another repo.')


def _tag_mismatches(run: TrainingRun, cfg: PretrainedCfg, architecture: str) -> List[str]:
    """How the run differs from the tag's pretrained cfg `cfg`, one phrase per difference ('run X, tag Y')."""
    ours = run.config['pretrained_cfg']
    pairs = [('architecture', run.config['architecture'], architecture),
             ('classes', run.config['num_classes'], cfg.num_classes),
             ('input size', list(ours['input_size']), list(cfg.input_size))]
    if cfg.tag in DATA_NAMES:  # the tags this project publishes are named after their data set
        pairs.append(('data set (metrics.json data.kind)', run.kind, cfg.tag))
    if cfg.label_names is not None:
        pairs.append(('label names', list(run.config['label_names']), list(cfg.label_names)))
    mismatches = [f'{what}: run {_brief(mine)}, tag {_brief(theirs)}' for what, mine, theirs in pairs
                  if mine != theirs]
    for key in ('mean', 'std'):  # a small tolerance: the statistics are written rounded to 4 decimals
        mine, theirs = list(ours[key]), list(getattr(cfg, key))
        if any(abs(a - b) > NORMALISATION_TOLERANCE for a, b in zip(mine, theirs)):
            mismatches.append(f'normalisation {key}: run {_brief(mine)}, tag {_brief(theirs)}')
    return mismatches


def _brief(value: Any, most: int = 4) -> str:
    """`value` for a message, a long list cut to its first `most` items."""
    if isinstance(value, list) and len(value) > most:
        return '[' + ', '.join(repr(v) for v in value[:most]) + f', ... ({len(value)} in all)]'
    return repr(value)


def _hub_source(run: TrainingRun) -> Optional[str]:
    """The Hub id the training data was read from, None for local data (whose path is not published)."""
    cfg = run.metrics.get('config', {})
    dataset = cfg.get('dataset') or ''
    if cfg.get('data_dir') is None and (dataset in ('cifar10', 'idc') or dataset.startswith('hub:')):
        return run.metrics['data'].get('source')
    return None


def _dataset_id(run: TrainingRun, dataset_id: Optional[str]) -> Optional[str]:
    if dataset_id:
        return check_repo_id(dataset_id)
    source = _hub_source(run)
    if source:
        return source
    return CIFAR10_HUB_ID if run.kind == 'cifar10' else None  # a local CIFAR-10 copy is the Hub's layout


def build_model_card(run_dir: str, repo_id: str, *, dataset_id: Optional[str] = None) -> ModelCard:
    """The model card of the run in `run_dir` for `repo_id`: YAML metadata (library, tags, data set, licence,
    model-index with the test metrics of metrics.json) and a body on the data, the split protocol, the training
    recipe, the metrics, an attention-map example, intended use and limits. `dataset_id`: the Hub id of the
    training data, when it was read from a local copy (e.g. of a data set pushed with `push_idc_dataset`)."""
    run = load_training_run(run_dir)
    repo_id = check_repo_id(repo_id)
    dataset_id = check_repo_id(dataset_id) if dataset_id else None
    try:
        return _model_card(run, repo_id, _dataset_id(run, dataset_id))
    except (TypeError, ValueError, LookupError, AttributeError) as err:
        # load_training_run checks what every card reads; the optional details (per-class accuracies, sizes,
        # recipe) are read as train.py writes them, and a hand-edited metrics.json gets a message, not a traceback
        raise HubError(f'{run.folder / "metrics.json"} is not as train.py writes it: building the model card '
                       f'failed with {type(err).__name__}: {" ".join(str(err).split())}.') from err


def _model_card(run: TrainingRun, repo_id: str, dataset_id: Optional[str]) -> ModelCard:
    card_data = ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        license='apache-2.0',
        tags=['image-classification', 'timm', *(['patchconvnet'] if run.is_patchconvnet else []),
              *DATA_TAGS.get(run.kind, [])],
        datasets=[dataset_id] if dataset_id else None,
        metrics=[metric for key, metric, _ in CARD_METRICS if run.metrics['test'].get(key) is not None],
        base_model=_base_model(run),
        model_name=repo_id.split('/')[1],
        eval_results=_eval_results(run, dataset_id),
    )
    body = '\n'.join(section for section in (
        _card_title(run, repo_id),
        _card_usage(run, repo_id),
        _card_data(run, dataset_id),
        _card_split(run),
        _card_recipe(run),
        _card_results(run),
        _card_attention(run),
        _card_intended_use(run),
        _card_citation(),
    ))
    return ModelCard(f'---\n{card_data.to_yaml()}\n---\n\n{body}')


def _base_model(run: TrainingRun) -> Optional[str]:
    pretrained = run.metrics.get('config', {}).get('pretrained') or ''
    return pretrained[len('hf-hub:'):] if pretrained.startswith('hf-hub:') else None


def _eval_results(run: TrainingRun, dataset_id: Optional[str]) -> List[EvalResult]:
    test = run.metrics['test']
    return [
        EvalResult(task_type='image-classification', dataset_type=dataset_id or run.kind,
                   dataset_name=DATA_NAMES.get(run.kind, dataset_id or run.kind), dataset_split='test',
                   metric_type=metric, metric_value=round(float(test[key]), 6), metric_name=name)
        for key, metric, name in CARD_METRICS if test.get(key) is not None
    ]


def _card_title(run: TrainingRun, repo_id: str) -> str:
    params = run.metrics.get('model', {}).get('params')
    size = f', {params / 1e6:.2f} M parameters' if params else ''
    _, height, width = run.config['pretrained_cfg']['input_size']
    model = (f'PatchConvNet (`{run.config["architecture"]}`{size}; Touvron et al. 2021, '
             '[arXiv:2112.13692](https://arxiv.org/abs/2112.13692))' if run.is_patchconvnet
             else f'`{run.config["architecture"]}`{size}')
    return (f'# {repo_id.split("/")[1]}\n\n'
            f'{model} trained on {DATA_NAMES.get(run.kind, "images")} for {run.config["num_classes"]}-way image '
            f'classification at {height}x{width} with the training tools of `timm_patchconvnet` (a timm plugin: the '
            'official PatchConvNet architecture plus attention maps and training).\n')


def _card_usage(run: TrainingRun, repo_id: str) -> str:
    tag = _registered_tag(repo_id)
    tag_line = (f"model = timm.create_model('{tag}', pretrained=True).eval()  # the same weights, by tag\n"
                if tag else '')
    attention_lines = (('from timm_patchconvnet import get_attention_map\n',
                        'heatmap = get_attention_map(model, image)  # where the attention pooling looked\n')
                       if run.is_patchconvnet else ('', ''))
    return (
        '## How to use\n\n'
        'timm has no PatchConvNet and no plugin discovery: import `timm_patchconvnet` first, which registers it.\n\n'
        '```python\n'
        'import timm\n'
        'import torch\n'
        'from PIL import Image\n'
        'import timm_patchconvnet\n'
        f'{attention_lines[0]}\n'
        f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()\n"
        f'{tag_line}'
        'config = timm.data.resolve_data_config(model=model)\n'
        'transform = timm.data.create_transform(**config)\n'
        "image = Image.open('image.png').convert('RGB')\n"
        'with torch.no_grad():\n'
        '    probabilities = model(transform(image).unsqueeze(0)).softmax(-1)\n'
        "label = model.pretrained_cfg['label_names'][probabilities.argmax().item()]\n"
        f'{attention_lines[1]}'
        '```\n\n'
        '`timm_patchconvnet.data.build_transform(kind, config, train=False)` reproduces the evaluation '
        'preprocessing exactly (a resize to the input size, then normalisation).\n\n'
        '### With transformers\n\n'
        "transformers' timm wrapper (`TimmWrapperForImageClassification`) loads it as well, with the label names "
        'and the same preprocessing, and no `trust_remote_code`: again, import `timm_patchconvnet` first.\n\n'
        '```python\n'
        'import timm_patchconvnet  # registers the architecture with timm, which transformers builds it with\n'
        'from transformers import pipeline\n\n'
        f"classifier = pipeline('image-classification', model='{repo_id}')\n"
        "print(classifier('image.png'))  # [{'label': ..., 'score': ...}, ...], best first\n"
        '```\n\n'
        f"`AutoModelForImageClassification.from_pretrained('{repo_id}')` and "
        f"`AutoImageProcessor.from_pretrained('{repo_id}')` give the model and its preprocessing.\n"
    )


def _card_data(run: TrainingRun, dataset_id: Optional[str]) -> str:
    data = run.metrics['data']
    sizes = data.get('sizes', {})
    source = _hub_source(run)
    where = (f'`{source}` on the Hugging Face Hub' if source else
             "scikit-learn's bundled copy" if run.kind == 'digits' else 'a local copy')
    if dataset_id and not source:
        where += f' (published as [`{dataset_id}`](https://huggingface.co/datasets/{dataset_id}))'
    lines = [
        '## Data\n',
        f'{DATA_NAMES.get(run.kind, "Image classification data")}, read from {where}.',
        f'Classes ({len(data.get("label_names", []))}): {", ".join(data.get("label_names", []))}.',
        f'Images: {sizes.get("train", "?")} train, {sizes.get("validation", "?")} validation, '
        f'{sizes.get("test", "?")} test.',
    ]
    if data.get('skipped_images'):
        lines.append(f'Unreadable image files left out: {data["skipped_images"]}.')
    if run.kind == 'idc':
        lines.append(f'The patches are 50x50 RGB crops of breast-cancer whole-slide images (Kaggle '
                     f'[{IDC_KAGGLE_ID}](https://www.kaggle.com/datasets/{IDC_KAGGLE_ID})), labelled invasive '
                     'ductal carcinoma (IDC) positive or negative; edge patches smaller than 50x50 are resized.')
    return '\n'.join(lines) + '\n'


def _card_split(run: TrainingRun) -> str:
    data = run.metrics['data']
    if data.get('patient_level'):
        verdict = '**Patient-level split**: no patient has patches in two splits, so the test metrics measure ' \
                  'generalisation to new patients.'
    elif run.kind == 'idc':
        verdict = '**Patch-level split (not patient-level)**: patches of one patient may be in train and test, ' \
                  'which inflates the test metrics; they do not measure generalisation to new patients.'
    else:
        verdict = '**Not split by patient** (the data has no patients).'
    protocol = data.get('protocol', '')
    source = data.get('source')
    if source and not _hub_source(run):  # the protocol may name the trainer's local folder: publish its name only
        protocol = protocol.replace(source, Path(source).name)
    return f'## Split protocol\n\n{verdict}\n\n{protocol}\n'


def _card_recipe(run: TrainingRun) -> str:
    cfg = run.metrics.get('config', {})
    env = run.metrics.get('environment', {})
    rows = [
        ('model', f'`{run.config["architecture"]}`'),
        ('initialisation', f'`{_public_value("pretrained", cfg["pretrained"])}`' if cfg.get('pretrained')
                           else 'random'),
        ('optimizer', f'{cfg.get("opt")}, lr {cfg.get("lr")}, weight decay {cfg.get("weight_decay")}'),
        ('schedule', f'{cfg.get("sched")}, warm-up {cfg.get("warmup_epochs")} epochs'),
        ('batch size', f'{cfg.get("batch_size")} per process x {env.get("num_processes", 1)} process(es), '
                       f'gradient accumulation {cfg.get("grad_accum_steps")}'),
        ('epochs', f'{run.metrics.get("epochs_run")} of at most {cfg.get("epochs")} (best on validation loss: '
                   f'{run.metrics.get("best_epoch")}; early-stopping patience {cfg.get("patience")})'),
        ('regularisation', f'label smoothing {cfg.get("label_smoothing")}, drop path {cfg.get("drop_path")}'),
        ('precision, device', f'{env.get("mixed_precision")}, {env.get("device")}'),
        ('seed', str(cfg.get('seed'))),
        ('software', f'torch {env.get("torch")}, timm {env.get("timm")}'),
    ]
    if cfg.get('max_steps_per_epoch'):
        rows.append(('steps per epoch', f'cut to {cfg["max_steps_per_epoch"]} (a smoke run)'))
    table = '\n'.join(f'| {name} | {value} |' for name, value in rows)
    return (f'## Training\n\n| setting | value |\n|---|---|\n{table}\n\nTo train it again '
            f'(`pip install "timm-patchconvnet[train]"`):\n\n```bash\n{_train_command(cfg)}\n```\n')


def _train_command(cfg: Dict[str, Any]) -> str:
    """The `patchconvnet-train` command line of the run: its settings that differ from the defaults. Paths are
    placeholders: the trainer's local folders mean nothing to a reader."""
    skip = {'output_dir', 'resume', 'overwrite', 'num_workers', 'report_to'}
    parts = ['patchconvnet-train']
    for f in fields(TrainConfig):
        value = cfg.get(f.name, f.default)
        if f.name in skip or value == f.default:
            continue
        flag = '--' + f.name.replace('_', '-')
        parts.append(flag if isinstance(value, bool) else f'{flag} {_public_value(f.name, value)}')
    return ' '.join(parts)


def _public_value(name: str, value: Any) -> Any:
    """`value`, or a placeholder where it is a path on the trainer's machine."""
    if name == 'data_dir':
        return 'DATA_DIR'
    if name == 'dataset' and not (value in ('digits', 'cifar10', 'idc') or str(value).startswith('hub:')):
        return 'DATA_FOLDER'
    if name == 'pretrained' and not str(value).startswith('hf-hub:') and (
            str(value).startswith('local-dir:') or '/' in str(value)):  # a local folder or checkpoint file
        return 'PRETRAINED'
    return value


def _card_results(run: TrainingRun) -> str:
    test = run.metrics['test']
    rows = [f'| {name.removeprefix("Test ")} | {test[key]:.4f} |' for key, _, name in CARD_METRICS
            if test.get(key) is not None]
    per_class = ', '.join(f'{name} {acc:.4f}' for name, acc in test.get('per_class_accuracy', {}).items())
    names = list(test.get('per_class_accuracy', {}))
    matrix = test.get('confusion_matrix', [])
    confusion = ''
    if names and matrix:
        header = '| true \\ predicted | ' + ' | '.join(names) + ' |\n|---|' + '---|' * len(names)
        body = '\n'.join(f'| {name} | ' + ' | '.join(str(v) for v in row) + ' |' for name, row in zip(names, matrix))
        confusion = f'\n\nConfusion matrix (rows: true class):\n\n{header}\n{body}'
    return (f'## Results\n\nOn the {test.get("num_samples", "?")} test images, with the best model on validation '
            f'loss (test loss {test.get("loss", float("nan")):.4f}):\n\n| metric | value |\n|---|---|\n'
            + '\n'.join(rows) + f'\n\nPer-class accuracy: {per_class}.{confusion}\n')


def _card_attention(run: TrainingRun) -> str:
    if not (run.folder / EXAMPLE_IMAGE).is_file():
        return '## Attention maps\n\nThis run saved no attention-map example (a model without attention pooling).\n'
    return ('## Attention maps\n\nThe attention pooling\'s weights over test images (titles: true / predicted '
            'class; red: a mistake), from `timm_patchconvnet.get_attention_map`:\n\n'
            f'![Attention maps of the pooling over test images]({EXAMPLE_IMAGE})\n')


def _card_intended_use(run: TrainingRun) -> str:
    medical = ('It has not been validated clinically: data from one public collection, no prospective or '
               'multi-centre evaluation, no regulatory review. '
               if run.kind == 'idc' else '')
    return (
        '## Intended use and limitations\n\n'
        'For research and teaching: studying PatchConvNet and its attention maps, comparing training recipes, and '
        'as a starting point for fine-tuning. The metrics above hold for this data and split only.\n\n'
        f'**This model is not a medical device.** {medical}It must not be used to diagnose, screen or treat anyone, '
        'nor to support any clinical decision. Attention maps show where the pooling looked, not why the model '
        'decided, and are no explanation fit for clinical use.\n'
    )


def _card_citation() -> str:
    return f'## Citation\n\n```bibtex\n{PAPER_BIBTEX}\n```\n'


def export_model_folder(run_dir: str, out_dir: str, repo_id: str, *, dataset_id: Optional[str] = None) -> Path:
    """Write into `out_dir` (new or empty) exactly what `push_model` uploads: the run's model.safetensors as it
    is and its config.json made portable (timm's `save_for_hf` layout, so `local-dir:`/`hf-hub:` loading works,
    and transformers' `AutoModelForImageClassification` too: see `checkpoints.portable_model_config`; a new run's
    file is unchanged, one written by an older train.py is fixed), its attention.png, and the model card
    README.md. Returns the folder."""
    run = load_training_run(run_dir)
    repo_id = check_repo_id(repo_id)
    _check_fits_tag(run, repo_id)
    card = build_model_card(str(run.folder), repo_id, dataset_id=dataset_id)  # before writing: no half exports
    try:
        config = portable_model_config(run.config)
    except ValueError as err:
        raise HubError(f'{run.folder / "config.json"}: {err}') from err
    out = new_export_folder(out_dir)
    for name in (*MODEL_FILES, EXAMPLE_IMAGE):
        if name == 'config.json':
            write_model_config(out / name, config)
        elif (run.folder / name).is_file():
            shutil.copyfile(run.folder / name, out / name)
    card.save(out / CARD_FILE)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Uploads


def push_folder(
        folder: str,
        repo_id: str,
        repo_type: str,
        *,
        token: Optional[str] = None,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        api: Optional[HfApi] = None,
        space_sdk: Optional[str] = None,
) -> str:
    """Upload every file of `folder` to the Hub repo `repo_id` ('model', 'dataset' or 'space') in one commit,
    creating the repo (`private` and, for a Space, `space_sdk` apply only then) and the branch `revision` if
    missing. Returns the repo URL.

    Any Hub or network error becomes a HubError that says the local `folder` is kept for a retry. `api` is an
    `HfApi` (or a stand-in for tests); the token goes to it alone."""
    repo_id = check_repo_id(repo_id)
    local = Path(folder)
    if not local.is_dir() or next(local.iterdir(), None) is None:
        raise HubError(f'Nothing to upload: {local} is not a folder with files.')
    token = resolve_token(token)
    api = api or HfApi()
    step = 'create the repo'
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, token=token,
                              space_sdk=space_sdk)
        _check_answer(url, 'a repo URL')
        if revision and revision != 'main':
            step = f'create the branch {revision!r}'
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True, token=token)
        step = 'upload'
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(local), repo_type=repo_type, revision=revision,
                                   commit_message=commit_message or f'Upload {local.name}', token=token)
        _check_answer(commit, 'a commit URL')  # anything else: the upload may not have happened
    except _HUB_ERRORS as err:
        raise _upload_failed(err, step, local, repo_id, repo_type, revision, token) from err
    return str(url)


def _check_answer(answer: Any, expected: str) -> None:
    """A ValueError unless `answer` is a URL, as HfApi returns it (a str subclass) for a repo or a commit."""
    if not (isinstance(answer, str) and answer.startswith(('https://', 'http://')) and ' ' not in answer):
        raise ValueError(f'the Hub answered {_brief(str(answer)[:80])} instead of {expected}')


def _upload_failed(err: BaseException, step: str, local: Path, repo_id: str, repo_type: str,
                   revision: Optional[str], token: str) -> HubError:
    """The one-line HubError of a failed `step`: what went wrong and how to retry from the kept export."""
    retry = f'hf upload {repo_id} {local} . --repo-type {repo_type}'
    retry += f' --revision {revision}' if revision else ''
    hint = (' (an answer that is not the Hub\'s: a proxy or captive portal in the way?)'
            if isinstance(err, _MALFORMED_ANSWER_ERRORS) else '')
    return HubError(_scrub(
        f'Could not {step} on the Hugging Face Hub for {repo_type} {repo_id}: {type(err).__name__}: '
        f'{" ".join(str(err).split())}{hint}. '
        f'The local export in {local} is kept: upload it with `{retry}`, or run this again.', token))


def push_model(
        run_dir: str,
        repo_id: str,
        *,
        export_dir: Optional[str] = None,
        dataset_id: Optional[str] = None,
        token: Optional[str] = None,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        api: Optional[HfApi] = None,
) -> str:
    """Export the run in `run_dir` (`export_model_folder`) and upload it to the model repo `repo_id`. The export
    goes to `export_dir`, or a temporary folder removed after a successful upload; a failed upload keeps it."""
    repo_id = check_repo_id(repo_id)
    token = resolve_token(token)  # before the export: a missing token is known at once
    run = load_training_run(run_dir)
    folder = export_or_stage(export_dir, 'patchconvnet-model-',
                            lambda out: export_model_folder(run_dir, out, repo_id, dataset_id=dataset_id))
    url = push_folder(folder, repo_id, 'model', token=token, private=private, revision=revision,
                      commit_message=commit_message or f'Upload {run.config["architecture"]} trained with '
                                                       'timm-patchconvnet', api=api)
    if export_dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return url


def export_or_stage(export_dir: Optional[str], prefix: str, export: Callable[[str], Path]) -> Path:
    """`export(export_dir)`, or `export` into a new temporary folder that is removed again if the export fails."""
    if export_dir is not None:
        return export(export_dir)
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        return export(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
