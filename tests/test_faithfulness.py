"""benchmarks/faithfulness.py on two small models trained here for real: the single-token and per-class-token
patchconvnet_test_p4 on scikit-learn's digits (15 epochs each, about 6 s; about 0.9 test accuracy)."""
import json

import pytest

import train as train_cli

pytest.importorskip('pytorch_grad_cam', reason='the explain extra is not installed')
from benchmarks import faithfulness  # noqa: E402

# pytorch-grad-cam's ROAD passes torch tensors through numpy functions (its code, not ours)
pytestmark = pytest.mark.filterwarnings('ignore:__array_wrap__ must accept context:DeprecationWarning')
TRAIN = ['--dataset', 'digits', '--model', 'patchconvnet_test_p4', '--epochs', '15', '--lr', '1e-2', '--sched',
         'constant']


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('faithfulness-runs')
    assert train_cli.main([*TRAIN, '--output-dir', str(root / 'single')]) == 0
    assert train_cli.main([*TRAIN, '--class-tokens', 'per_class', '--output-dir', str(root / 'per-class')]) == 0
    return {'single': root / 'single', 'per_class': root / 'per-class'}


def test_the_benchmark_ranks_the_attention_map_above_chance_and_measures_class_specificity(runs, tmp_path):
    out = tmp_path / 'out'
    assert faithfulness.main(['run', '--checkpoint', str(runs['single']), '--per-class', str(runs['per_class']),
                              '--images', '64', '--timing-images', '2', '--out', str(out)]) == 0
    results = json.loads((out / 'results.json').read_text())
    assert results['images'] == 64 and set(results['stats']) == {'attention', 'Grad-CAM', 'random', 'centre'}
    for method in results['stats'].values():
        for mean, low, high in method.values():  # every measure with its 95% interval
            assert low <= mean <= high
    attention, random_map = results['stats']['attention'], results['stats']['random']
    # a trained model's attention map deletes the evidence faster than noise does, and survives ROAD better
    # (here: deletion 0.29 against 0.38, ROAD 0.09 against -0.01)
    assert attention['deletion'][0] < random_map['deletion'][0] and attention['road'][0] > random_map['road'][0]
    assert results['seconds_per_map']['attention']['batch1'] > 0
    chance = results['class_specificity']['random']['iou'][0]
    assert 0.08 < chance < 0.15  # two random top-20% regions: 0.2 / 1.8 = 0.11 expected
    # each class its own map: overlapping more than chance (0.71 here), yet not one map for every class (IoU 1)
    assert chance < results['class_specificity']['attention']['iou'][0] < 0.95
    table = (out / 'faithfulness.md').read_text()
    assert '| attention |' in table and 'Class specificity' in table
    assert (out / 'deletion_curves.png').stat().st_size > 10_000


def test_a_single_token_model_is_refused_as_the_per_class_one(runs, tmp_path, capsys):
    assert faithfulness.main(['run', '--checkpoint', str(runs['single']), '--per-class', str(runs['single']),
                              '--images', '8', '--timing-images', '1', '--out', str(tmp_path)]) == 2
    assert 'is not a per-class-token model' in capsys.readouterr().err
