"""export_onnx: onnxruntime computes what the eager model computes (plain and fused, at other batch sizes than the
export's, on the official fixture, with per-class tokens), and the errors say what is wrong."""
import sys

import pytest
import timm
import torch

from timm_patchconvnet import export_onnx, get_attention_map

TOL = dict(rtol=0, atol=1e-4)
EXPORT_BATCH = 2
BATCHES = (1, 5)  # neither is the export's batch: the batch dimension really is dynamic


def _perturbed(**kwargs) -> torch.nn.Module:
    """patchconvnet_test_p4 with every weight nudged and layer scales near 1, so the trunk shapes the outputs
    (at its init of 1e-4 the blocks would hardly matter)."""
    model = timm.create_model('patchconvnet_test_p4', **kwargs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('gamma', 'gamma_1', 'gamma_2')):
                param.uniform_(0.5, 1.5)
            else:
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def _export(model: torch.nn.Module, folder, name: str, **options):
    pytest.importorskip('onnxscript')
    onnxruntime = pytest.importorskip('onnxruntime')
    path = export_onnx(model, folder / f'{name}.onnx', batch_size=EXPORT_BATCH, **options)
    return onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def _run(session, x: torch.Tensor) -> dict:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, (torch.from_numpy(out) for out in session.run(None, {'input': x.numpy()}))))


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return _perturbed(num_classes=10)


@pytest.fixture(scope='module', params=['plain', 'fused'])
def tiny_exported(request, tiny, tmp_path_factory):
    model = tiny if request.param == 'plain' else timm.utils.reparameterize_model(tiny)
    return model, _export(model, tmp_path_factory.mktemp('onnx'), request.param)


@pytest.mark.parametrize('batch', BATCHES)
@torch.no_grad()
def test_logits_and_attention_equal_eager(tiny_exported, batch):
    model, session = tiny_exported
    assert [i.shape for i in session.get_inputs()] == [['batch', 3, 32, 32]]
    x = torch.randn(batch, 3, 32, 32)
    out = _run(session, x)
    assert list(out) == ['logits', 'attention'] and out['attention'].shape == (batch, 8, 8)
    torch.testing.assert_close(out['logits'], model(x), **TOL)
    torch.testing.assert_close(out['attention'], get_attention_map(model, x, upsample=False, normalize=False), **TOL)


def test_the_official_fixture_through_onnxruntime(official_tiny, tmp_path):
    """The official tiny model (d=48, depth 2, 10 classes, 224x224) loaded through timm's pretrained path, exported
    and run by onnxruntime: the official logits and attention map."""
    model = timm.create_model(
        'patchconvnet_s60_p16', embed_dim=48, depth=2, num_classes=10, pretrained=True,
        pretrained_cfg_overlay=dict(file=str(official_tiny['weights']), num_classes=10))
    out = _run(_export(model, tmp_path, 'official', img_size=224), official_tiny['input'])
    torch.testing.assert_close(out['logits'], official_tiny['outputs']['logits'], **TOL)
    torch.testing.assert_close(out['attention'], official_tiny['outputs']['attn_patches'], **TOL)


@torch.no_grad()
def test_per_class_tokens_give_one_map_per_class(tmp_path):
    model = _perturbed(class_tokens='per_class', num_classes=3).train()
    session = _export(model, tmp_path, 'per_class')
    assert model.training  # export runs the model in eval mode and gives it back as it was
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    out = _run(session, x)
    assert out['attention'].shape == (4, 3, 8, 8)
    torch.testing.assert_close(out['logits'], model(x), **TOL)
    for k in range(3):
        expected = get_attention_map(model, x, class_index=k, upsample=False, normalize=False)
        torch.testing.assert_close(out['attention'][:, k], expected, **TOL)
    predicted = out['attention'][torch.arange(4), out['logits'].argmax(1)]
    torch.testing.assert_close(predicted, get_attention_map(model, x, upsample=False, normalize=False), **TOL)


@torch.no_grad()
def test_any_input_size_with_dynamic_size(tiny, tmp_path):
    session = _export(tiny, tmp_path, 'dynamic', dynamic_size=True, attention=True)
    for shape in ((1, 3, 32, 32), (3, 3, 20, 44), (2, 3, 4, 9)):  # 4: one patch
        x = torch.randn(shape)
        out = _run(session, x)
        torch.testing.assert_close(out['logits'], tiny(x), **TOL)
        expected = get_attention_map(tiny, x, upsample=False, normalize=False)
        torch.testing.assert_close(out['attention'], expected, **TOL)


@torch.no_grad()
def test_a_model_without_attention_pooling_exports_its_logits(tmp_path):
    model = _perturbed(global_pool='avg', num_classes=5)
    with pytest.raises(ValueError, match='attention=True needs a PatchConvNet with attention pooling'):
        export_onnx(model, tmp_path / 'avg.onnx', attention=True)
    x = torch.randn(3, 3, 32, 32)
    out = _run(_export(model, tmp_path, 'avg'), x)  # attention=None: the maps only where there are some
    assert list(out) == ['logits']
    torch.testing.assert_close(out['logits'], model(x), **TOL)


def test_errors_say_what_to_do(tiny, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='at least 2'):
        export_onnx(tiny, tmp_path / 'one.onnx', batch_size=1)
    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # as if the package were not installed
    with pytest.raises(ImportError, match=r"pip install 'timm-patchconvnet\[onnx\]'"):
        export_onnx(tiny, tmp_path / 'missing.onnx')
    assert not (tmp_path / 'missing.onnx').exists()


def test_export_leaves_every_submodule_in_its_own_mode(tmp_path):
    model = _perturbed(num_classes=3).train()
    model.stem.eval()  # e.g. a part the user froze while fine-tuning
    _export(model, tmp_path, 'modes', attention=False)
    assert model.training and not model.stem.training
    assert all(m.training for name, m in model.named_modules() if not name.startswith('stem'))
