"""A finished training run as a Hub model repo: its weights and config.json as written, its attention maps, and a
model card (`templates/model_card.md`) on the data, the split protocol, the recipe and the test metrics.

Loading needs nothing from here: the data-set tags of the registered models (`cifar10`, `idc`) point at
`HUB_NAMESPACE/<model>.<tag>` (`hf_hub_id`), and `hf-hub:ORG/REPO` works once `timm_patchconvnet` is imported.
"""
import shutil
from pathlib import Path
from typing import Any, List, Optional

import timm
import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from timm.models import PretrainedCfg

from ..config import public_command, public_value
from ..dataset_specs import DATASETS, GENERIC, SPLIT_NAMES
from ..errors import one_line
from ..model_folder import MODEL_FILES, portable_model_config, write_model_config
from ..model_ref import ModelRefError, parse_model_ref
from ..pretrained import HUB_NAMESPACE
from ..slides import SLIDES_DIR
from .cards import Verbatim, render_card
from .runs import CARD_METRIC_KEYS, DATASET_KEY, EXAMPLE_IMAGE, TrainingRun, load_training_run, run_file
from .upload import CARD_FILE, HubError, UploadOptions, brief, check_repo_id, new_export_folder, publish

__all__ = ['build_model_card', 'export_model_folder', 'push_model']

NORMALISATION_TOLERANCE = 1e-3  # mean/std of a run against those of the tag it is pushed for
# how the model-index and the card name the test metrics of metrics.json
METRIC_TYPES = dict(accuracy='accuracy', balanced_accuracy='balanced_accuracy', f1='f1', sensitivity='recall',
                    specificity='specificity', roc_auc='roc_auc')
METRIC_NAMES = dict(accuracy='accuracy', balanced_accuracy='balanced accuracy', f1='F1 (positive class)',
                    sensitivity='sensitivity', specificity='specificity', roc_auc='ROC-AUC')


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
    # a run with other class tokens behind a tag would load, its tokens averaged or copied, and answer wrongly
    with torch.device('meta'):
        tag_tokens = getattr(timm.create_model(architecture), 'class_tokens', 'single')
    pairs = [('architecture', run.config['architecture'], architecture),
             ('class tokens', (run.config.get('model_args') or {}).get('class_tokens', 'single'), tag_tokens),
             ('classes', run.config['num_classes'], cfg.num_classes),
             ('input size', list(ours['input_size']), list(cfg.input_size))]
    if cfg.tag in DATASETS:  # the tags this project publishes are named after their data set
        pairs.append((f'data set (metrics.json data.{DATASET_KEY})', run.dataset, cfg.tag))
    if cfg.label_names is not None:
        pairs.append(('label names', list(run.config['label_names']), list(cfg.label_names)))
    mismatches = [f'{what}: run {brief(mine)}, tag {brief(theirs)}' for what, mine, theirs in pairs
                  if mine != theirs]
    for key in ('mean', 'std'):  # a small tolerance: the statistics are written rounded to 4 decimals
        mine, theirs = list(ours[key]), list(getattr(cfg, key))
        if any(abs(a - b) > NORMALISATION_TOLERANCE for a, b in zip(mine, theirs)):
            mismatches.append(f'normalisation {key}: run {brief(mine)}, tag {brief(theirs)}')
    return mismatches


def _hub_source(run: TrainingRun) -> Optional[str]:
    """The Hub id the training data was read from, None for local data (whose path is not published)."""
    cfg = run.metrics.get('config', {})
    dataset = cfg.get('dataset') or ''
    remote = dataset.startswith('hub:') or (dataset in DATASETS and not DATASETS[dataset].bundled)
    if cfg.get('data_dir') is None and remote:
        return run.metrics['data'].get('source')
    return None


def _dataset_id(run: TrainingRun, dataset_id: Optional[str]) -> Optional[str]:
    if dataset_id:
        return check_repo_id(dataset_id)
    source = _hub_source(run)
    if source:
        return source
    spec = run.data_spec  # a local copy of a Hub data set in its Hub layout is that data set
    return spec.hub_id if spec.reader == 'hub_layout' else None


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
                       f'failed with {type(err).__name__}: {one_line(err)}.') from err


def _model_card(run: TrainingRun, repo_id: str, dataset_id: Optional[str]) -> ModelCard:
    spec, test, data = run.data_spec, run.metrics['test'], run.metrics['data']
    cfg, env = run.metrics.get('config', {}), run.metrics.get('environment', {})
    card_data = ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        license='apache-2.0',
        tags=['image-classification', 'timm', *(['patchconvnet'] if run.is_patchconvnet else []), *spec.card_tags],
        datasets=[dataset_id] if dataset_id else None,
        metrics=[METRIC_TYPES[key] for key in CARD_METRIC_KEYS if test.get(key) is not None],
        base_model=_base_model(run),
        model_name=repo_id.split('/')[1],
        eval_results=_eval_results(run, dataset_id),
    )
    params = run.metrics.get('model', {}).get('params')
    _, height, width = run.config['pretrained_cfg']['input_size']
    hub_source = _hub_source(run)
    protocol, source = data.get('protocol', ''), data.get('source')
    if source and not hub_source:  # the protocol may name the trainer's local folder: publish its name only
        protocol = protocol.replace(source, Path(source).name)
    per_class = test.get('per_class_accuracy', {})
    matrix = test.get('confusion_matrix', [])
    title = spec.title if spec is not GENERIC else 'images'
    return render_card(
        ModelCard, 'model_card.md', card_data,
        repo_id=repo_id, architecture=run.config['architecture'], is_patchconvnet=run.is_patchconvnet,
        params=f', {params / 1e6:.2f} M parameters' if params else '', data_title=title,
        data_title_sentence=spec.title[0].upper() + spec.title[1:], num_classes=run.config['num_classes'],
        height=height, width=width, tag=_registered_tag(repo_id), dataset=run.dataset, hub_source=hub_source,
        dataset_id=dataset_id, label_names=data.get('label_names', []),
        sizes={name: data.get('sizes', {}).get(name, '?') for name in SPLIT_NAMES},
        skipped_images=data.get('skipped_images'), origin=Verbatim(spec.origin) if spec.origin else None,  # has a link
        patient_level=data.get('patient_level'),
        by_patient=spec.has_patients, protocol=protocol, cfg=cfg, env=env,
        num_processes=env.get('num_processes', 1), epochs_run=run.metrics.get('epochs_run'),
        best_epoch=run.metrics.get('best_epoch'),
        pretrained=public_value('pretrained', cfg['pretrained']) if cfg.get('pretrained') else None,
        train_command=Verbatim(public_command(cfg)), num_test_samples=test.get('num_samples', '?'),
        test_loss=test.get('loss', float('nan')),
        metric_rows=[(METRIC_NAMES[key], test[key]) for key in CARD_METRIC_KEYS if test.get(key) is not None],
        per_class_accuracy=list(per_class.items()), class_names=list(per_class),
        confusion_matrix=list(zip(per_class, matrix)) if per_class and matrix else [],
        example_image=EXAMPLE_IMAGE if run_file(run.folder, EXAMPLE_IMAGE).is_file() else None,
        protocol_kind=data.get('protocol_kind', 'seeded patient split'),
        patient_results=test if isinstance(test.get('per_patient'), dict) else None,
        slides=[f'{SLIDES_DIR}/{path.name}' for path in _slide_files(run)],
        medical=spec.medical, cites_seed_paper=spec.publishes_tag, mpp=spec.mpp)


def _slide_files(run: TrainingRun) -> List[Path]:
    """The whole-slide maps of the run (the PNG files of slides/; links only to files inside the run: `run_file`)."""
    if not run_file(run.folder, SLIDES_DIR).is_dir():
        return []
    folder = run.folder / SLIDES_DIR
    return sorted(folder / p.name for p in folder.glob('*.png') if run_file(folder, p.name).is_file())


def _base_model(run: TrainingRun) -> Optional[str]:
    config = run.metrics.get('config', {})
    if not config.get('pretrained'):
        return None
    try:  # recorded on the trainer's machine: its paths are told by their shape, not looked up here
        return parse_model_ref(config['pretrained'], config.get('model', ''), look_on_disk=False).hub_id
    except ModelRefError:  # not a model string of today's grammar (an older run's): the card names no base model
        return None


def _eval_results(run: TrainingRun, dataset_id: Optional[str]) -> List[EvalResult]:
    test = run.metrics['test']
    return [
        EvalResult(task_type='image-classification', dataset_type=dataset_id or run.dataset,
                   dataset_name=run.data_spec.title if run.dataset in DATASETS else dataset_id or run.dataset,
                   dataset_split='test', metric_type=METRIC_TYPES[key], metric_value=round(float(test[key]), 6),
                   metric_name=f'Test {METRIC_NAMES[key]}')
        for key in CARD_METRIC_KEYS if test.get(key) is not None
    ]


def export_model_folder(run_dir: str, out_dir: str, repo_id: str, *, dataset_id: Optional[str] = None) -> Path:
    """Write into `out_dir` (new or empty) exactly what `push_model` uploads: the run's model.safetensors as it
    is and its config.json made portable (timm's `save_for_hf` layout, so `local-dir:`/`hf-hub:` loading works,
    and transformers' `AutoModelForImageClassification` too: see `model_folder.portable_model_config`; a new run's
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
    for path in _slide_files(run):
        (out / SLIDES_DIR).mkdir(exist_ok=True)
        shutil.copyfile(path, out / SLIDES_DIR / path.name)
    for name in (*MODEL_FILES, EXAMPLE_IMAGE):
        if name == 'config.json':
            write_model_config(out / name, config)
        elif run_file(run.folder, name).is_file():
            shutil.copyfile(run_file(run.folder, name), out / name)
    card.save(out / CARD_FILE)
    return out


def push_model(run_dir: str, repo_id: str, *, dataset_id: Optional[str] = None, api: Optional[HfApi] = None,
               **upload: Any) -> str:
    """Export the run in `run_dir` (`export_model_folder`) and upload it to the model repo `repo_id`; `upload` are
    the fields of `UploadOptions` (export_dir, token, private, revision, commit_message). Returns the repo URL."""
    options = UploadOptions(**upload)
    run = load_training_run(run_dir)
    return publish(repo_id, 'model', lambda out: export_model_folder(run_dir, out, repo_id, dataset_id=dataset_id),
                   options, commit_message=f'Upload {run.config["architecture"]} trained with timm-patchconvnet',
                   api=api)
