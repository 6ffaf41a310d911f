"""Reading a finished training run (its output folder) for publishing, with every file checked first.

A hand-edited, truncated or hostile config.json or metrics.json gets a HubError naming the entry, never a traceback
from deep inside the card; the checks cover everything the export and the card read.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from ..dataset_specs import DatasetSpec, dataset_spec
from ..model_folder import MODEL_FILES
from ..safe_paths import UnsafePathError, link_target
from .upload import HubError

__all__ = ['CARD_METRIC_KEYS', 'EXAMPLE_IMAGE', 'RUN_FILES', 'TrainingRun', 'load_training_run', 'run_file']

RUN_FILES = (*MODEL_FILES, 'metrics.json')  # what every finished train.py run holds
EXAMPLE_IMAGE = 'attention.png'  # written for PatchConvNet models only
# the test metrics a card reports, as metrics.json names them (accuracy always; the others for two classes)
CARD_METRIC_KEYS = ('accuracy', 'balanced_accuracy', 'f1', 'sensitivity', 'specificity', 'roc_auc')
DATASET_KEY, OLD_DATASET_KEY = 'dataset', 'kind'  # metrics.json's data.<key>: the name of the data set


@dataclass
class TrainingRun:
    """A finished `train.py` output folder: its model config (timm's config.json) and metrics.json."""
    folder: Path
    config: Dict[str, Any]
    metrics: Dict[str, Any]

    @property
    def dataset(self) -> str:  # the DatasetSpec name of its data ('generic' for any other), as train.py records it
        return _recorded_dataset(self.metrics['data'])

    @property
    def data_spec(self) -> DatasetSpec:
        return dataset_spec(self.dataset)

    @property
    def is_patchconvnet(self) -> bool:  # train.py trains any timm model; the card then says less
        return self.config['architecture'].startswith('patchconvnet')


def load_training_run(run_dir: str) -> TrainingRun:
    """The run in `run_dir`, or a HubError saying why it is not a training output folder."""
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise HubError(f'{folder} is not a folder: pass the --output-dir of a finished train.py run.')
    missing = [name for name in RUN_FILES if not run_file(folder, name).is_file()]
    if missing:
        raise HubError(f'{folder} is not a training output folder: it lacks {", ".join(missing)}. Pass the '
                       f'--output-dir of a finished train.py run (it writes {", ".join(RUN_FILES)}).')
    config, metrics = (_read_json(run_file(folder, name)) for name in ('config.json', 'metrics.json'))
    wrong = _wrong_config_entries(config)
    if wrong:
        raise HubError(f'{folder / "config.json"} is not a timm model config from train.py: {"; ".join(wrong)}.')
    wrong = _wrong_metrics_entries(metrics)
    if wrong:
        raise HubError(f'{folder / "metrics.json"} is not the metrics of a finished train.py run: '
                       f'{"; ".join(wrong)}. Is the run finished?')
    return TrainingRun(folder, config, metrics)


def run_file(folder: Path, name: str) -> Path:
    """The file `name` of the run in `folder` as the export reads it: a symbolic link is followed only to a file
    inside the run folder (the export is public: a link to a key file must not carry it out), else a HubError."""
    path = folder / name
    if not path.is_symlink():
        return path
    try:
        return link_target(path, folder)
    except UnsafePathError as err:
        raise HubError(str(err)) from err
    except OSError as err:
        raise HubError(f'{path} is a symbolic link that leads nowhere ({err}): replace it by the file.') from err


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
        wrong += [_entry_message(f'test.{key}', test[key], 'a number or null') for key in CARD_METRIC_KEYS
                  if key != 'accuracy' and key in test and test[key] is not None and not _is_number(test[key])]
    if isinstance(data, dict) and not isinstance(_recorded_dataset(data), str):
        wrong.append(_entry_message(f'data.{DATASET_KEY}', _recorded_dataset(data), 'the name of the data set'))
    if isinstance(data, dict) and 'label_names' in data and not (
            isinstance(data['label_names'], list) and all(isinstance(n, str) for n in data['label_names'])):
        wrong.append(_entry_message('data.label_names', data['label_names'], 'a list of names'))
    # the sections the card reads with defaults: absent is fine, another shape is not
    wrong += [_entry_message(key, metrics[key], 'an object') for key in ('config', 'model', 'environment')
              if key in metrics and not isinstance(metrics[key], dict)]
    return wrong


def _recorded_dataset(data: Dict[str, Any]) -> Any:
    """metrics.json's data set name: `data.dataset`, or `data.kind` in runs saved before it was renamed."""
    return data.get(DATASET_KEY, data.get(OLD_DATASET_KEY))


def _entry_message(key: str, value: Any, expected: str) -> str:
    return f'it lacks {key}' if value is None else f'{key} is a JSON {_json_type(value)}, not {expected}'
