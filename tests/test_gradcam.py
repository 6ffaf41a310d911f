"""gradcam_map / gradcam_explanation (pytorch-grad-cam on the last trunk block) and the demo's map toggle."""
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from timm_patchconvnet import explain_image, get_attention_map

pytest.importorskip('pytorch_grad_cam', reason="optional: Grad-CAM needs the explain extra (pip install grad-cam)")
from timm_patchconvnet.gradcam import gradcam_explanation, gradcam_map  # noqa: E402


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)  # the same random weights whichever tests ran before
    return timm.create_model('patchconvnet_test_p4', num_classes=10, init_values=1.0).eval()


@pytest.fixture(scope='module')
def per_class_model():
    torch.manual_seed(0)
    return timm.create_model('patchconvnet_test_p4', num_classes=3, init_values=1.0, class_tokens='per_class').eval()


def _photo(size=(40, 32)) -> Image.Image:
    """A smooth RGB gradient with a bright disc off centre."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((yy - h / 3) ** 2 + (xx - w / 3) ** 2 < (min(w, h) / 5) ** 2) * 200
    return Image.fromarray(np.stack([xx * 255 / w, yy * 255 / h, disc], axis=-1).clip(0, 255).astype(np.uint8))


def _grad_cam_by_hand(model, x, classes):
    """Grad-CAM written out on the trunk's output: ReLU(sum_c mean_hw(dy/dA_c) * A_c), scaled to [0, 1] as the
    library scales it (shifted to 0, divided by max + 1e-7, twice: per layer, then after averaging the layers)."""
    features = model.forward_features(x).detach().requires_grad_(True)
    logits = model.forward_head(features)
    grads, = torch.autograd.grad(logits[torch.arange(len(x)), classes].sum(), features)
    cam = (grads.mean((2, 3), keepdim=True) * features).sum(1).clamp_min(0).detach()
    for _ in range(2):
        cam = cam - cam.amin((1, 2), keepdim=True)
        cam = cam / (cam.amax((1, 2), keepdim=True) + 1e-7)
    return cam


def test_the_map_is_grad_cam_of_the_last_trunk_block(model):
    x = torch.randn(3, 3, 32, 40)
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    grid = gradcam_map(model, x, upsample=False)
    assert grid.shape == (3, 8, 10)  # the token grid of the /4 stem
    # float32 sums in another order (the library's numpy): at most 1.4e-6 over 30 seeds; another layer or class is
    # off by ~0.1
    torch.testing.assert_close(grid, _grad_cam_by_hand(model, x, predicted), rtol=0, atol=1e-4)
    full = gradcam_map(model, x)
    assert full.shape == get_attention_map(model, x).shape == (3, 32, 40)
    assert torch.allclose(full.amin((-2, -1)), torch.zeros(3)) and torch.allclose(full.amax((-2, -1)), torch.ones(3))
    # upsampled as the attention map is (bilinear), then scaled to [0, 1] again
    upsampled = torch.nn.functional.interpolate(grid[:, None], size=(32, 40), mode='bilinear',
                                                align_corners=False)[:, 0]
    low, high = upsampled.amin((-2, -1), keepdim=True), upsampled.amax((-2, -1), keepdim=True)
    torch.testing.assert_close(full, (upsampled - low) / (high - low), rtol=0, atol=1e-5)
    with torch.no_grad():  # a caller's no_grad does not stop the map
        torch.testing.assert_close(gradcam_map(model, x[0]), full[0], rtol=0, atol=1e-4)


def test_it_takes_the_inputs_get_attention_map_takes(model):
    image = _photo()  # 40x32: the data config resizes the short side to 32 and centre-crops 32x32
    from_pil = gradcam_map(model, image)
    assert from_pil.shape == get_attention_map(model, image).shape == (32, 32)
    torch.testing.assert_close(gradcam_map(model, np.asarray(image)), from_pil)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    torch.testing.assert_close(gradcam_map(model, transform(image)), from_pil)
    with pytest.raises(TypeError, match='Expected a PIL image'):
        gradcam_map(model, 'cat.png')
    with pytest.raises(ValueError, match='NaN'):
        gradcam_map(model, torch.full((3, 32, 32), float('nan')))
    with pytest.raises(ValueError, match='num_classes'):
        gradcam_map(timm.create_model('patchconvnet_test_p4', num_classes=0), image)


def test_class_index_picks_the_class_explained(per_class_model):
    x = torch.randn(2, 3, 32, 32)
    maps = [gradcam_map(per_class_model, x, class_index=c, upsample=False) for c in range(3)]
    for c, grid in enumerate(maps):
        torch.testing.assert_close(grid, _grad_cam_by_hand(per_class_model, x, torch.tensor([c, c])), rtol=0,
                                   atol=1e-4)
    assert (maps[0] - maps[2]).abs().max() > .05  # each class has its own map
    with pytest.raises(ValueError, match='out of range'):
        gradcam_map(per_class_model, x, class_index=3)


def test_the_model_is_left_as_it_was(model):
    trained = timm.create_model('patchconvnet_test_p4', num_classes=10, init_values=1.0)
    trained.load_state_dict(model.state_dict())
    trained.train()
    trained.blocks[0].eval()  # a submodule the user froze in eval mode
    trained.stem.requires_grad_(False)
    trained.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 32)
    trained(x).sum().backward()  # gradients the user has accumulated
    grads = {name: p.grad.clone() for name, p in trained.named_parameters() if p.grad is not None}
    modes = {name: m.training for name, m in trained.named_modules()}
    gradcam_map(trained, x)
    assert {name: m.training for name, m in trained.named_modules()} == modes
    assert all(p.requires_grad == (not name.startswith('stem.')) for name, p in trained.named_parameters())
    assert {name for name, p in trained.named_parameters() if p.grad is not None} == set(grads)
    for name, p in trained.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=0)
    assert trained.grad_checkpointing
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in trained.modules())
    with torch.no_grad():
        torch.testing.assert_close(trained.eval()(x), model(x), rtol=0, atol=0)


def test_the_explanation_lies_on_the_image_like_explain_images(model):
    image = _photo((40, 32))  # the model sees columns 4..35 (a centre crop of the 40 px wide image)
    result = gradcam_explanation(model, image)
    reference = explain_image(model, image)
    torch.testing.assert_close(result.probabilities, reference.probabilities, rtol=0, atol=1e-5)
    assert result.grid.shape == reference.grid.shape == (8, 8)
    assert result.on_image.shape == reference.on_image.shape == (32, 40)
    assert (result.on_image[:, :4] == 0).all() and (result.on_image[:, 36:] == 0).all()  # outside the view
    torch.testing.assert_close(result.on_image[:, 4:36], gradcam_map(model, image), rtol=0, atol=1e-4)
    torch.testing.assert_close(result.grid, gradcam_map(model, image, upsample=False), rtol=0, atol=1e-5)


def test_without_grad_cam_the_error_names_the_extra():
    # a fresh interpreter in which the package cannot be imported, as on an install without the extra
    code = ('import sys; sys.modules["pytorch_grad_cam"] = None\n'
            'import timm, torch, timm_patchconvnet\n'
            'from timm_patchconvnet.gradcam import gradcam_map\n'
            'model = timm.create_model("patchconvnet_test_p4", num_classes=2)\n'
            'gradcam_map(model, torch.zeros(3, 32, 32))\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'ImportError' in result.stderr and "pip install 'timm-patchconvnet[explain]'" in result.stderr


# --- the demo's toggle, at the level of the function the app calls ---

@pytest.fixture(scope='module')
def demo_explain():
    pytest.importorskip('gradio', reason='optional: the demo extra is not installed')
    from timm_patchconvnet.demo import explain
    return explain


@pytest.fixture(scope='module')
def served(demo_explain, model, per_class_model):
    from timm_patchconvnet.demo.models import DemoModel
    return {'digits': DemoModel('digits', model, [str(d) for d in range(10)]),
            'pets': DemoModel('pets', per_class_model, ['cat', 'dog', 'bird'])}


def _grid(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert('RGB'), dtype=np.float32)


def test_the_demo_shows_grad_cam_when_asked(demo_explain, served, model):
    image = _photo((64, 48))
    explain, predicted = demo_explain.explain, demo_explain.PREDICTED
    attention = explain(served, image, 'digits', predicted, 'jet', .5, demo_explain.ATTENTION)
    gradcam = explain(served, image, 'digits', predicted, 'jet', .5, demo_explain.GRADCAM)
    assert attention.probabilities == gradcam.probabilities  # the same prediction either way
    assert 'Attention of the class token' in attention.notes
    assert 'Grad-CAM of "' in gradcam.notes and '8x8 token grid' in gradcam.notes
    assert gradcam.overlay.size == (64, 48)  # the overlay lies on the uploaded image
    torch.testing.assert_close(gradcam.view.grid, gradcam_map(model, image, upsample=False), rtol=0, atol=1e-5)
    assert np.abs(_grid(attention.grid) - _grid(gradcam.grid)).max() > 0  # another map on show
    # the default is the attention map, as before the toggle
    default = explain(served, image, 'digits', predicted, 'jet', .5)
    torch.testing.assert_close(default.view.grid, attention.view.grid)
    with pytest.raises(demo_explain.gr.Error, match='Unknown map'):
        explain(served, image, 'digits', predicted, 'jet', .5, 'saliency')


def test_per_class_tokens_show_the_chosen_class_either_way(demo_explain, served, per_class_model):
    image = _photo((48, 48))
    for source in (demo_explain.ATTENTION, demo_explain.GRADCAM):
        answer = demo_explain.explain(served, image, 'pets', 'dog', 'jet', .5, source)
        assert '"dog"' in answer.notes
        expected = (gradcam_map(per_class_model, image, class_index=1, upsample=False)
                    if source == demo_explain.GRADCAM
                    else get_attention_map(per_class_model, image, class_index=1, upsample=False, normalize=False))
        torch.testing.assert_close(answer.view.grid, expected, rtol=0, atol=1e-5)
