"""get_attention_map and overlay_attention on every input kind."""
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from timm_patchconvnet import explain_image, get_attention_map, overlay_attention
from timm_patchconvnet.attention import attention_and_logits


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)  # the same random weights on every run
    return timm.create_model('patchconvnet_test_p4', num_classes=10, init_values=1.0).eval()


def _photo(size=(40, 32)) -> Image.Image:
    """A real-looking RGB image: a smooth gradient with a bright disc."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((yy - h / 3) ** 2 + (xx - w / 3) ** 2 < (min(w, h) / 5) ** 2) * 200
    rgb = np.stack([xx * 255 / w, yy * 255 / h, disc], axis=-1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def test_pil_and_array_use_the_models_data_config(model):
    image = _photo()  # 40x32: the data config resizes the short side to 32 and centre-crops 32x32
    from_pil = get_attention_map(model, image)
    from_array = get_attention_map(model, np.asarray(image))
    assert from_pil.shape == (32, 32)
    torch.testing.assert_close(from_pil, from_array)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    torch.testing.assert_close(from_pil, get_attention_map(model, transform(image)))


def test_tensor_batches_and_options(model):
    batch = torch.randn(3, 3, 36, 44)
    maps = get_attention_map(model, batch)
    assert maps.shape == (3, 36, 44)
    assert torch.allclose(maps.amin((-2, -1)), torch.zeros(3)) and torch.allclose(maps.amax((-2, -1)), torch.ones(3))
    raw = get_attention_map(model, batch, upsample=False, normalize=False)
    assert raw.shape == (3, 9, 11)
    with torch.no_grad():
        features = model.forward_features(batch)
        tokens, cls = model._pool_inputs(features)
        self_weight = model.attn_pool.attention(tokens, cls)[:, 0, 0, 0]
    torch.testing.assert_close(raw.sum((-2, -1)) + self_weight, torch.ones(3))
    # one image alone maps as in a batch; compared unscaled, as scaling a nearly flat random-weight map to [0, 1]
    # amplifies the last bits in which batch sizes differ
    torch.testing.assert_close(get_attention_map(model, batch[1], normalize=False),
                               get_attention_map(model, batch, normalize=False)[1], rtol=1e-5, atol=0)


def test_maps_leave_the_model_as_it_was(model):
    x = torch.randn(2, 3, 32, 32)
    model.train()
    with torch.no_grad():
        before = model.eval()(x)
    model.train()
    get_attention_map(model, x)
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), before, rtol=0, atol=0)


def test_per_class_maps():
    model = timm.create_model('patchconvnet_test_p4', class_tokens='per_class', num_classes=3, init_values=1.0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        predicted = model.forward_head(features).argmax(-1)
        attention = model.forward_attention(features).mean(1)
    raw = get_attention_map(model, x, upsample=False, normalize=False)
    torch.testing.assert_close(raw, attention[torch.arange(2), predicted])
    torch.testing.assert_close(get_attention_map(model, x, class_index=2, upsample=False, normalize=False),
                               attention[:, 2])
    with pytest.raises(ValueError, match='out of range'):
        get_attention_map(model, x, class_index=3)


def test_bad_inputs(model):
    with pytest.raises(TypeError, match='Expected a PIL image'):
        get_attention_map(model, 'cat.png')
    with pytest.raises(ValueError, match='uint8'):
        get_attention_map(model, np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match='only applies to models with per-class tokens'):
        get_attention_map(model, torch.randn(3, 32, 32), class_index=1)
    with pytest.raises(ValueError, match='attention pooling'):
        get_attention_map(timm.create_model('patchconvnet_test_p4', global_pool='avg'), torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='attention pooling'):
        get_attention_map(timm.create_model('resnet18'), torch.randn(3, 32, 32))


def test_overlay_is_a_heatmap_over_the_image():
    image = Image.new('RGB', (64, 48), (128, 128, 128))
    attention = torch.zeros(6, 8)
    attention[0, 0] = 1.  # the top-left token is hot, the rest cold
    blended = overlay_attention(image, attention, alpha=0.6)
    assert blended.size == image.size and blended.mode == 'RGB'
    pixels = np.asarray(blended).astype(int)
    assert pixels[2, 2, 0] > pixels[2, 2, 2] + 50  # jet: hot is red
    assert pixels[-3, -3, 2] > pixels[-3, -3, 0] + 50  # cold is blue
    assert overlay_attention(image, attention, alpha=0.0).tobytes() == image.tobytes()
    with pytest.raises(ValueError, match='alpha'):
        overlay_attention(image, attention, alpha=2)
    with pytest.raises(ValueError, match=r'one \(H, W\) attention map'):
        overlay_attention(image, attention[None])


def test_per_class_model_without_classifier_needs_a_class_index():
    model = timm.create_model('patchconvnet_test_p4', class_tokens='per_class', num_classes=3).eval()
    model.reset_classifier(0)
    with pytest.raises(ValueError, match='pass class_index'):
        get_attention_map(model, torch.randn(3, 32, 32))
    assert get_attention_map(model, torch.randn(3, 32, 32), class_index=1).shape == (32, 32)


def test_explain_image_gives_probabilities_and_the_map_of_one_forward_pass(model):
    image = _photo((32, 32))  # exactly the model's 32x32 view: no resize, no crop
    result = explain_image(model, image)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        torch.testing.assert_close(result.probabilities, model(transform(image)[None])[0].softmax(-1))
    torch.testing.assert_close(result.grid, get_attention_map(model, image, upsample=False, normalize=False))
    # placing the map on an image of exactly the model's view is get_attention_map's upsampling of the same grid.
    # Compared with the [0, 1] scaling undone: a random-weight map is nearly flat (its range about 1% of its mean), so
    # scaling would blow float32 rounding of the resampling up to 1e-5; unscaled, the two agree to 1e-5 relative.
    upsampled = F.interpolate(result.grid[None, None], size=(32, 32), mode='bilinear', align_corners=False)[0, 0]
    assert result.on_image.min() == 0 and result.on_image.max() == 1
    unscaled = result.on_image * (upsampled.max() - upsampled.min()) + upsampled.min()
    torch.testing.assert_close(unscaled, upsampled, atol=0, rtol=1e-5)


def test_explain_image_places_the_map_where_the_centre_crop_came_from():
    cropping = timm.create_model('patchconvnet_test_p4', num_classes=10, init_values=1.0,
                                 pretrained_cfg_overlay=dict(crop_pct=0.5)).eval()
    image = _photo((64, 64))  # resized to 64 (32 / 0.5), then the central 32x32 is cropped: pixels 16..47
    on_image = explain_image(cropping, image).on_image
    assert on_image.shape == (64, 64)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[16:48, 16:48] = False
    assert on_image[outside].abs().max() == 0  # the model never saw the borders
    seen = get_attention_map(cropping, image, normalize=False)  # 32x32, the crop's own pixels
    torch.testing.assert_close(on_image[16:48, 16:48], seen / seen.max(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(300, 200), (41, 97), (8, 8)])
def test_explain_image_maps_cover_images_of_any_size_and_aspect(model, size):
    result = explain_image(model, _photo(size))
    assert result.on_image.shape == (size[1], size[0])
    assert result.on_image.min() == 0 and result.on_image.max() == pytest.approx(1)
    assert result.probabilities.sum() == pytest.approx(1, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Hostile input (issue 15)

def _gradient_16_bit_png(path) -> Image.Image:
    """A real 16-bit grayscale PNG whose values are v * 257 for an 8-bit ramp v: its 8-bit equivalent is the ramp."""
    ramp = (np.arange(32 * 40).reshape(32, 40) % 256).astype(np.uint16)
    Image.fromarray(ramp * 257).save(path)
    return Image.open(path)


def test_16_bit_grayscale_gives_the_maps_of_its_8_bit_equivalent(model, tmp_path):
    image = _gradient_16_bit_png(tmp_path / 'scan.png')
    assert image.mode == 'I;16'
    ramp = Image.fromarray((np.arange(32 * 40).reshape(32, 40) % 256).astype(np.uint8))
    assert np.asarray(ramp)[3, 8] == 128 and np.asarray(image)[3, 8] == 32896
    torch.testing.assert_close(get_attention_map(model, image), get_attention_map(model, ramp.convert('RGB')),
                               rtol=0, atol=0)
    clipped = get_attention_map(model, image.convert('RGB'))  # what PIL's own convert gives: white above 255
    assert not torch.allclose(clipped, get_attention_map(model, image))
    ours, reference = explain_image(model, image), explain_image(model, ramp.convert('RGB'))
    torch.testing.assert_close(ours.probabilities, reference.probabilities, rtol=0, atol=0)
    torch.testing.assert_close(ours.on_image, reference.on_image, rtol=0, atol=0)


def test_16_bit_grayscale_on_a_one_channel_model(tmp_path):
    gray_model = timm.create_model('patchconvnet_test_p4', in_chans=1, num_classes=3, init_values=1.0,
                                   pretrained_cfg_overlay=dict(mean=(0.5,), std=(0.25,))).eval()
    image = _gradient_16_bit_png(tmp_path / 'scan.png')
    ramp = Image.fromarray((np.arange(32 * 40).reshape(32, 40) % 256).astype(np.uint8))
    torch.testing.assert_close(get_attention_map(gray_model, image), get_attention_map(gray_model, ramp),
                               rtol=0, atol=0)
    torch.testing.assert_close(explain_image(gray_model, image).probabilities,
                               explain_image(gray_model, ramp).probabilities, rtol=0, atol=0)


@pytest.mark.parametrize('empty', [Image.new('RGB', (0, 0)), Image.new('L', (5, 0)), np.zeros((0, 4, 3), np.uint8),
                                   torch.zeros(3, 0, 0)], ids=['pil-0x0', 'pil-5x0', 'array', 'tensor'])
def test_an_image_without_pixels_is_a_clear_error(model, empty):
    with pytest.raises(ValueError, match='at least one pixel'):
        get_attention_map(model, empty)
    if isinstance(empty, Image.Image):
        with pytest.raises(ValueError, match='at least one pixel'):
            explain_image(model, empty)


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_inputs_are_a_clear_error(model, bad):
    x = torch.randn(3, 32, 32)
    x[1, 5, 7] = bad
    with pytest.raises(ValueError, match='NaN or infinite'):
        get_attention_map(model, x)
    with pytest.raises(ValueError, match='NaN or infinite'):
        get_attention_map(model, x[None].repeat(2, 1, 1, 1))
    pixels = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    pixels[3, 4] = bad
    floats = Image.fromarray(pixels, mode='F')
    with pytest.raises(ValueError, match='NaN or infinite'):
        get_attention_map(model, floats)
    with pytest.raises(ValueError, match='NaN or infinite'):
        explain_image(model, floats)


def test_a_finite_input_that_overflows_the_model_is_a_clear_error(model):
    """Issue 26: float max everywhere is finite, and gave an all-NaN map with no error."""
    huge = torch.full((3, 32, 32), torch.finfo(torch.float32).max)
    with pytest.raises(ValueError, match='The model overflowed on this input .values up to 3.4e[+]38.'):
        get_attention_map(model, huge)
    with pytest.raises(ValueError, match='overflowed'):
        attention_and_logits(model, huge[None])


@pytest.mark.parametrize('dtype', [torch.uint8, torch.int8, torch.bool, torch.complex64])
def test_tensors_that_are_not_floats_are_refused(model, dtype):
    """Issue 26: they were taken as preprocessed input; uint8 pixels are pointed to the image path."""
    x = torch.ones(3, 32, 32, dtype=dtype)
    with pytest.raises(ValueError, match=f'taken as preprocessed .normalised floats., got {dtype}') as refused:
        get_attention_map(model, x)
    assert ('H x W x C uint8 array' in str(refused.value)) == (dtype == torch.uint8)
    pixels = np.full((32, 32, 3), 200, np.uint8)  # the same pixels by the path the message names work
    assert get_attention_map(model, pixels).ndim == 2


def _modes(module: torch.nn.Module) -> dict:
    return {name: m.training for name, m in module.named_modules()}


@pytest.mark.parametrize('top, submodule', [(False, True), (True, False)], ids=['eval-one-training', 'frozen-bn'])
def test_every_submodules_mode_is_restored(top, submodule, tmp_path):
    from timm_patchconvnet.training.visualize import save_attention_grid
    model = timm.create_model('patchconvnet_test_p4', num_classes=2, init_values=1.0)
    model.train(top)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    odd = norms[0] if norms else model.blocks[0]
    odd.train(submodule)  # e.g. a user fine-tuning with frozen BatchNorm
    before = _modes(model)
    assert len(set(before.values())) == 2
    get_attention_map(model, _photo())
    assert _modes(model) == before
    explain_image(model, _photo())
    assert _modes(model) == before
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    save_attention_grid(model, [_photo()] * 2, [0, 1], ['a', 'b'], transform, tmp_path / 'grid.png', columns=2)
    assert _modes(model) == before and (tmp_path / 'grid.png').stat().st_size > 0
