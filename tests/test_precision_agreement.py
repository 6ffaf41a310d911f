"""benchmarks/precision_agreement.py on the committed digits run (tests/fixtures/faithfulness_runs/single): its own
held-out split, one row per precision and backend asked for, the bounds judged, the accuracy beside float32's, and
the rows a CPU cannot run saying why. The figures themselves are tests/test_precision.py's to assert."""
import json
from pathlib import Path

import pytest

pytest.importorskip('datasets', reason='optional: the train extra is not installed')

import timm  # noqa: E402
import torch  # noqa: E402

from benchmarks import precision_agreement  # noqa: E402
from timm_patchconvnet.precision import detect_hardware, optimize_for_inference, unsupported_reason  # noqa: E402

RUN = Path(__file__).parent / 'fixtures' / 'faithfulness_runs' / 'single'
HERE = detect_hardware('cpu')


def _table(stdout: str) -> list:
    lines = [line for line in stdout.splitlines() if line.startswith('|')]
    headers = [cell.strip() for cell in lines[0].strip('|').split('|')]
    assert headers == list(precision_agreement.COLUMNS)
    return [dict(zip(headers, (cell.strip() for cell in line.strip('|').split('|')))) for line in lines[2:]]


def test_each_precision_is_a_row_against_float32_on_the_runs_own_test_split(capsys):
    # fp16 only where the CPU cannot run it (nearly all; not Sapphire Rapids): its row must say why
    asked = ['fp32-torch', 'bf16-torch'] + (['fp16-torch'] if unsupported_reason('fp16', HERE) else [])
    assert precision_agreement.main(['--run', str(RUN), '--dataset', 'digits', '--calibration', '16',
                                     '--precisions', *asked]) == 0
    printed = capsys.readouterr().out
    assert 'single: 359 of the 359 test images of' in printed and 'calibrated on 16 of its' in printed
    reference, *rows = _table(printed)
    recorded = json.loads((RUN / 'metrics.json').read_text())['test']['accuracy']
    assert (reference['backend'], reference['images']) == ('eager (reference)', '359')
    assert float(reference['accuracy']) == pytest.approx(recorded, abs=1e-4)  # the run's own held-out images
    assert reference['bounds'] == reference['Δ accuracy'] == '-'
    assert [f"{row['precision']}-{row['backend']}" for row in rows] == asked
    for row in rows:
        reason = unsupported_reason(row['precision'], HERE)
        if reason:
            assert row['bounds'] == f'not run: {reason}' and row['accuracy'] == '-', row
            continue
        assert row['bounds'] == 'pass' and float(row['top-1 agreement']) >= 0.995, row
        assert abs(float(row['Δ balanced accuracy'])) <= 0.01, row
    fp32 = rows[0]  # the fused model: the same answers to float32 rounding
    assert (fp32['top-1 agreement'], fp32['Δ accuracy']) == ('1.0000', '+0.0000')
    assert float(fp32['map Pearson 5th pct']) > 0.9999


def test_a_run_misses_its_data_set_in_one_line(capsys):
    with pytest.raises(SystemExit):
        precision_agreement.main(['--run', str(RUN), '--dataset', 'idc'])
    assert '--dataset idc: single was trained on digits' in capsys.readouterr().err


def test_a_row_that_misses_a_bound_is_broken_down_by_true_class():
    model = timm.create_model(f'local-dir:{RUN}', pretrained=True).eval()
    untrained = optimize_for_inference(timm.create_model('patchconvnet_test_p4', num_classes=10).eval(), 'fp32')
    images, labels = torch.randn(12, 3, 32, 32), torch.tensor([0, 1, 2] * 4).numpy()
    lines = precision_agreement.per_class(model, untrained, images, labels, [str(k) for k in range(10)])
    assert len(lines) == 3  # the classes with images
    for k, line in enumerate(lines):
        assert line.startswith(f'- fp32 (torch), true class {k} (4 images): top-1 agreement '), line
