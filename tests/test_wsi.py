"""Whole-slide images (issue 23): pyramidal tiled TIFFs written here (tests/datagen.py), read by OpenSlide at the
model's scale, a planted "tumour" found, its regions checked as QuPath GeoJSON, memory bounded, hostile files."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

openslide = pytest.importorskip('openslide')
shapely = pytest.importorskip('shapely')
pytest.importorskip('tifffile')

import timm  # noqa: E402
from shapely.geometry import box, shape  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from datagen import slide_pixels, write_pyramid_slide  # noqa: E402
from timm_patchconvnet.cli.slides import main as slides_main  # noqa: E402
from timm_patchconvnet.model_folder import save_model_folder  # noqa: E402
from timm_patchconvnet.slides.predict_wsi import predict_wsi  # noqa: E402
from timm_patchconvnet.slides.regions import regions_from_grid  # noqa: E402
from timm_patchconvnet.slides.tiles import TileDataset, TileGrid  # noqa: E402
from timm_patchconvnet.slides.tissue import tissue_mask  # noqa: E402
from timm_patchconvnet.slides.wsi import WsiError, model_mpp, open_wsi, read_plan  # noqa: E402
from timm_patchconvnet.slides.wsi_outputs import OUTPUT_FILES  # noqa: E402

MODEL_MPP = 2.0  # the test model's scale: its 32-pixel input spans 64 µm
TISSUE_UM = (64, 64, 704, 576)  # left, top, right, bottom
TUMOUR_UM = (192, 192, 512, 448)
INK_UM = (0, 600, 320, 640)  # green pen on the glass, below the tissue
SLIDE_UM = (768, 640)
CONTENT = dict(tissue_um=TISSUE_UM, tumour_um=TUMOUR_UM, ink_um=INK_UM)


def write_slide(path: Path, mpp, **options) -> Path:
    return write_pyramid_slide(path, round(SLIDE_UM[0] / (mpp or 0.5)), round(SLIDE_UM[1] / (mpp or 0.5)), mpp,
                               **{**CONTENT, **options})


@pytest.fixture(scope='module')
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp('slides')
    return {'0.25': write_slide(folder / 'fine.tif', 0.25),
            # two levels only (0.5 and 1 µm/px): the model's 2 µm/px is read at 1 and resized
            '0.5': write_slide(folder / 'coarse.tif', 0.5, levels=2)}


def _features(model, pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(model.pretrained_cfg['mean']), torch.tensor(model.pretrained_cfg['std'])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.fixture(scope='module')
def model():
    """patchconvnet_test_p4 with a random trunk and a head fitted (logistic regression on its pooled features) to
    tell the planted tumour's tiles from the rest of the tissue, drawn at the model's scale. Layer scale 1: at its
    usual 1e-4 a random trunk's pooled features barely vary with the image."""
    torch.manual_seed(0)
    net = timm.create_model('patchconvnet_test_p4', num_classes=2, init_values=1.).eval()
    rng = np.random.default_rng(0)
    tiles, labels = [], []
    for _ in range(80):
        x, y = rng.uniform(TISSUE_UM[0], TISSUE_UM[2] - 64), rng.uniform(TISSUE_UM[1], TISSUE_UM[3] - 64)
        tiles.append(slide_pixels(int(x / MODEL_MPP), int(y / MODEL_MPP), 32, 32, MODEL_MPP, **CONTENT))
        centre = (x + 32, y + 32)
        labels.append(TUMOUR_UM[0] <= centre[0] < TUMOUR_UM[2] and TUMOUR_UM[1] <= centre[1] < TUMOUR_UM[3])
    with torch.no_grad():
        features = _features(net, np.stack(tiles)).numpy()
    fit = LogisticRegression(C=10, max_iter=2000).fit(features, labels)
    with torch.no_grad():
        net.head.weight.copy_(torch.tensor(np.stack([np.zeros_like(fit.coef_[0]), fit.coef_[0]])))
        net.head.bias.copy_(torch.tensor([0., fit.intercept_[0]]))
    return net


@pytest.fixture(scope='module')
def fine_result(slides, model):
    return predict_wsi(model, slides['0.25'], model_mpp=MODEL_MPP)


def _um(polygons, mpp):
    return shapely.union_all([shapely.affinity.scale(p, mpp, mpp, origin=(0, 0)) for p in polygons])


def _dice(a, b) -> float:
    return 2 * a.intersection(b).area / (a.area + b.area)


def test_the_written_slide_is_a_generic_tiff_pyramid_with_its_mpp(slides):
    with openslide.OpenSlide(str(slides['0.25'])) as slide:
        assert slide.properties['openslide.vendor'] == 'generic-tiff'
        assert float(slide.properties['openslide.mpp-x']) == pytest.approx(0.25)
        assert slide.level_downsamples == (1., 2., 4., 8., 16.)


def test_the_level_just_finer_than_the_model_is_read_and_read_region_takes_level0_coordinates(slides):
    with open_wsi(slides['0.25']) as slide:
        exact = read_plan(slide, MODEL_MPP, 32)
        assert (exact.level, exact.read_size, exact.tile_level0) == (3, 32, 256)
        between = read_plan(slide, 3.0, 32)  # 3 µm/px: level 3 (2 µm/px) is the finest coarser-free one
        assert (between.level, between.read_size) == (3, 48)
    plan = read_plan(open_wsi(slides['0.25']), MODEL_MPP, 32)
    tile = TileDataset(slides['0.25'], plan, np.array([[768, 1024]]))[0][0].permute(1, 2, 0).numpy()
    expected = slide_pixels(768 // 8, 1024 // 8, 32, 32, MODEL_MPP, **CONTENT)
    assert np.abs(tile.astype(int) - expected).mean() < 2


def test_the_tissue_mask_keeps_tissue_and_drops_glass_ink_and_black():
    pixels = slide_pixels(0, 0, 96, 80, 8.0, tissue_um=(0, 0, 384, 640), tumour_um=(0, 0, 0, 0),
                          ink_um=(400, 0, 576, 320))
    pixels[40:, 48:72] = 5  # black: an empty scan area
    mask = tissue_mask(pixels, 8.0)
    assert mask[:, :48].mean() > 0.9  # the tissue
    assert mask[:40, 50:72].mean() < 0.01  # the ink
    assert mask[40:, 48:72].mean() < 0.01 and mask[:, 72:].mean() < 0.01  # black and glass


def test_the_planted_tumour_is_found_with_dice_of_at_least_0_8(fine_result):
    found = _um(fine_result.regions, fine_result.mpp)
    assert _dice(found, box(*TUMOUR_UM)) >= 0.8
    tissue_mm2 = (TISSUE_UM[2] - TISSUE_UM[0]) * (TISSUE_UM[3] - TISSUE_UM[1]) / 1e6
    assert 0.8 * tissue_mm2 <= fine_result.tissue_mm2 <= 1.05 * tissue_mm2  # the ink is not tissue


def test_regions_merge_cells_across_tiles_and_keep_holes():
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    ring[4, 4] = False
    grid = TileGrid(rows=5, columns=5, size=100., stride=100.)
    (polygon,) = regions_from_grid(ring, grid)
    assert polygon.is_valid and len(polygon.interiors) == 1 and polygon.area == 23 * 100 ** 2


def test_the_geojson_is_qupath_annotations_whose_area_matches_the_plant_and_the_summary(fine_result, tmp_path):
    folder = fine_result.save(tmp_path / 'out')
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUT_FILES)
    collection = json.loads((folder / 'regions.geojson').read_text())
    summary = json.loads((folder / 'summary.json').read_text())
    assert collection['type'] == 'FeatureCollection' and collection['features']
    area_mm2 = 0.
    for feature in collection['features']:
        polygon = shape(feature['geometry'])
        assert polygon.is_valid and polygon.geom_type == 'Polygon'
        properties = feature['properties']
        assert properties['objectType'] == 'annotation'
        assert properties['classification']['name'] == 'class 1'
        assert len(properties['classification']['color']) == 3
        measured = properties['measurements']['Area mm2']
        assert measured == pytest.approx(polygon.area * summary['mpp'] ** 2 / 1e6)
        assert 0.5 <= properties['measurements']['Mean probability'] <= 1
        area_mm2 += measured
    planted_mm2 = (TUMOUR_UM[2] - TUMOUR_UM[0]) * (TUMOUR_UM[3] - TUMOUR_UM[1]) / 1e6
    assert area_mm2 == pytest.approx(planted_mm2, rel=0.05)
    assert summary['region_mm2'] == pytest.approx(area_mm2)
    assert summary['region_share_of_tissue'] == pytest.approx(area_mm2 / summary['tissue_mm2'])
    assert summary['mpp'] == 0.25 and summary['model_mpp'] == MODEL_MPP and summary['tiles'] > 40
    import pyarrow.parquet as pq
    table = pq.read_table(folder / 'tiles.parquet').to_pydict()
    assert len(table['x']) == summary['tiles'] and set(table['size']) == {256}
    assert {'probability', 'attention_peak', 'attention_entropy', 'y'} <= set(table)


def test_the_same_slide_at_0_25_and_0_5_mpp_gives_the_same_regions_in_microns(slides, model, fine_result):
    coarse = predict_wsi(model, slides['0.5'], model_mpp=MODEL_MPP)
    assert coarse.plan.level == 1 and coarse.plan.read_size == 64  # read at 1 µm/px, resized to 32
    assert _dice(_um(fine_result.regions, 0.25), _um(coarse.regions, 0.5)) >= 0.9


def test_overlapping_tiles_halve_the_grid_step_and_still_find_the_tumour(slides, model):
    result = predict_wsi(model, slides['0.5'], model_mpp=MODEL_MPP, overlap=0.5)
    assert result.grid.stride == result.plan.tile_level0 / 2 == 64  # 32 µm cells of 64 µm tiles, at 0.5 µm/px
    assert _dice(_um(result.regions, 0.5), box(*TUMOUR_UM)) >= 0.8


def test_workers_each_open_their_own_handle_and_give_the_same_result(slides, model, fine_result):
    with_workers = predict_wsi(model, slides['0.25'], model_mpp=MODEL_MPP, num_workers=2, batch_size=8)
    np.testing.assert_allclose(with_workers.probability, fine_result.probability, atol=1e-5)


RSS_CHILD = textwrap.dedent('''
    import json, re, sys
    import timm
    from timm_patchconvnet.slides.predict_wsi import predict_wsi

    def status(key):
        return int(re.search(rf'{key}:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))
    model = timm.create_model('patchconvnet_test_p4', num_classes=2).eval()
    predict_wsi(model, sys.argv[1], model_mpp=8.0)  # warm: lazy imports, allocator pools
    memory = {}
    for path in sys.argv[1:]:
        open('/proc/self/clear_refs', 'w').write('5')  # Linux: the peak (VmHWM) starts again from the current size
        before = status('VmRSS')
        tiles = predict_wsi(model, path, model_mpp=8.0).summary()['tiles']
        memory[path] = dict(tiles=tiles, before=before, peak=status('VmHWM'))
    print(json.dumps(memory))
''')


def _flat_tissue(x0, y0, width, height, mpp):
    pixels = np.full((height, width, 3), 248, np.uint8)
    ys = (np.arange(y0, y0 + height) * mpp) % 1024 < 768  # bands of tissue 768 µm tall
    pixels[ys] = (190, 110, 160)
    return pixels


def test_a_slide_16_times_larger_raises_peak_memory_by_at_most_30_percent(tmp_path):
    small = write_pyramid_slide(tmp_path / 'small.tif', 2048, 1536, 0.5, pixels=_flat_tissue, tile=512)
    large = write_pyramid_slide(tmp_path / 'large.tif', 8192, 6144, 0.5, pixels=_flat_tissue, tile=512)
    done = subprocess.run([sys.executable, '-c', RSS_CHILD, str(small), str(large)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    small, large = memory[str(small)], memory[str(large)]
    assert large['tiles'] >= 10 * small['tiles'] > 0
    assert large['peak'] <= 1.3 * small['peak'], memory
    # and what predict_wsi itself adds stays small: level 0 of the large slide read whole would add 200 MB (RGBA)
    assert large['peak'] - large['before'] <= small['peak'] - small['before'] + 64 * 1024, memory


def test_model_mpp_comes_from_the_idc_tag_a_saved_config_or_a_run_folders_data_set(tmp_path):
    from timm_patchconvnet.model_ref import parse_model_ref
    assert model_mpp(parse_model_ref('patchconvnet_s60_p4.idc'), {}) == 4.0
    assert model_mpp(parse_model_ref('patchconvnet_s60_p4.cifar10'), {}) is None
    run = tmp_path / 'run'
    save_model_folder(timm.create_model('patchconvnet_test_p4', num_classes=2), run, ['a', 'b'])
    assert model_mpp(parse_model_ref(str(run)), {}) is None
    (run / 'metrics.json').write_text(json.dumps({'data': {'dataset': 'idc'}, 'test': {'threshold': 0.4}}))
    assert model_mpp(parse_model_ref(str(run)), {}) == 4.0  # a run saved before config.json carried it
    saved = tmp_path / 'saved'  # as training saves an IDC model: the mpp in config.json, which the Hub export keeps
    save_model_folder(timm.create_model('patchconvnet_test_p4', num_classes=2), saved, ['a', 'b'], mpp=4.0)
    assert json.loads((saved / 'config.json').read_text())['mpp'] == 4.0
    assert model_mpp(parse_model_ref(f'local-dir:{saved}'), {}) == 4.0
    loaded = timm.create_model(f'local-dir:{saved}', pretrained=True)  # timm still loads it, and it says where from
    assert loaded.num_classes == 2 and model_mpp(None, loaded.pretrained_cfg) == 4.0


# ---------------------------------------------------------------------------------------------------------------
# Hostile input: one line naming the file, or a documented result


def _one_line_error(path: Path, **options) -> str:
    with pytest.raises(WsiError) as caught:
        predict_wsi(timm.create_model('patchconvnet_test_p4', num_classes=2).eval(), path, model_mpp=MODEL_MPP,
                    **options)
    message = str(caught.value)
    assert '\n' not in message and str(path) in message
    return message


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[:len(data) * 6 // 10])
    return target


def test_a_truncated_file_a_non_slide_and_an_unsupported_format_are_one_line_errors(slides, tmp_path):
    assert 'truncated' in _one_line_error(_truncated(slides['0.5'], tmp_path / 'truncated.tif'))
    (tmp_path / 'notes.svs').write_text('not a slide')
    assert 'not a slide format' in _one_line_error(tmp_path / 'notes.svs')
    import tifffile
    tifffile.imwrite(tmp_path / 'stripped.tif', np.zeros((64, 64, 3), np.uint8))  # untiled: no slide format
    assert 'not a slide format' in _one_line_error(tmp_path / 'stripped.tif')
    assert 'no such file' in _one_line_error(tmp_path / 'absent.svs')


def test_a_header_claiming_a_million_pixels_square_is_refused(tmp_path):
    import tifffile
    path = write_pyramid_slide(tmp_path / 'huge.tif', 256, 256, 0.25, levels=1, **CONTENT)
    with tifffile.TiffFile(path, mode='r+b') as tif:  # one tile as large as the image: libtiff finds it consistent
        for tag in ('ImageWidth', 'ImageLength', 'TileWidth', 'TileLength'):
            tif.pages[0].tags[tag].overwrite(10 ** 6)
    assert 'claims 1000000 x 1000000 pixels' in _one_line_error(path)
    inconsistent = write_pyramid_slide(tmp_path / 'inconsistent.tif', 256, 256, 0.25, levels=1, **CONTENT)
    with tifffile.TiffFile(inconsistent, mode='r+b') as tif:  # its one tile no longer fits: libtiff refuses it
        for tag in ('ImageWidth', 'ImageLength'):
            tif.pages[0].tags[tag].overwrite(10 ** 6)
    assert 'cannot be read' in _one_line_error(inconsistent)


def test_a_missing_mpp_is_refused_unless_given(tmp_path, model):
    path = write_slide(tmp_path / 'nompp.tif', None)
    assert '--mpp' in _one_line_error(path)
    result = predict_wsi(model, path, model_mpp=MODEL_MPP, mpp=0.5)
    assert result.mpp == 0.5 and result.regions


def test_a_slide_smaller_than_a_tile_and_an_all_background_slide_give_empty_regions(tmp_path, model):
    tiny = write_pyramid_slide(tmp_path / 'tiny.tif', 40, 30, 0.25, **CONTENT)
    blank = write_pyramid_slide(tmp_path / 'blank.tif', 1024, 1024, 0.5, tissue_um=(0, 0, 0, 0),
                                tumour_um=(0, 0, 0, 0))
    for path in (tiny, blank):
        result = predict_wsi(model, path, model_mpp=MODEL_MPP)
        assert result.regions == [] and result.summary()['tiles'] == 0
        folder = result.save(tmp_path / path.stem)
        assert json.loads((folder / 'regions.geojson').read_text())['features'] == []
        assert json.loads((folder / 'summary.json').read_text())['region_mm2'] == 0


def test_the_command_runs_a_folder_lists_the_broken_slide_at_the_end_and_resumes(slides, model, tmp_path, capsys):
    run = tmp_path / 'model'
    save_model_folder(model, run, ['normal', 'tumour'])
    folder = tmp_path / 'slides'
    folder.mkdir()
    (folder / 'a.tif').write_bytes(slides['0.5'].read_bytes())
    _truncated(slides['0.5'], folder / 'b_broken.tif')
    (folder / 'c.tif').write_bytes(slides['0.5'].read_bytes())
    argv = ['--wsi', str(folder), '--model', str(run), '--model-mpp', str(MODEL_MPP), '--out', str(tmp_path / 'out'),
            '--workers', '1']
    assert slides_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f'error: {folder / "b_broken.tif"}')
    for name in ('a.tif', 'c.tif'):
        assert sorted(p.name for p in (tmp_path / 'out' / name).iterdir()) == sorted(OUTPUT_FILES)
        summary = json.loads((tmp_path / 'out' / name / 'summary.json').read_text())
        assert summary['class'] == 'tumour' and summary['regions'] >= 1
    assert slides_main(argv) == 2
    assert '0 written, 2 complete already, 1 failed' in capsys.readouterr().out


def test_the_command_without_the_slides_extra_names_it(tmp_path):
    code = ('import sys; sys.modules["openslide"] = None  # as if not installed\n'
            'from timm_patchconvnet.cli.slides import main\n'
            'sys.exit(main(["--wsi", "x.svs", "--model", "patchconvnet_test_p4"]))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith('error: whole-slide inference needs')
    assert "pip install 'timm-patchconvnet[slides]'" in done.stderr and "'openslide'" in done.stderr


@pytest.mark.parametrize('flags, named', [(['--mpp', '0'], '--mpp'), (['--model-mpp', '-4'], '--model-mpp'),
                                         (['--data-dir', '.'], '--data-dir'), (['--overlap', '1'], '--overlap'),
                                         (['--patient', '7'], '--patient'), (['--device', 'gpu'], '--device')])
def test_a_bad_wsi_command_line_is_one_error_line(flags, named, capsys):
    with pytest.raises(SystemExit) as stopped:
        slides_main(['--wsi', 'slide.svs', '--model', 'patchconvnet_test_p4', *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1 and lines[0].startswith(f'error: argument {named}'), lines


def test_slides_of_one_file_name_in_two_folders_are_refused(tmp_path, capsys):
    """Their outputs would share out/<file name>: the second would be 'done already' with the first's maps."""
    for site in ('site1', 'site2'):
        (tmp_path / site).mkdir()
        (tmp_path / site / 'slide_001.tif').write_bytes(b'not read')
    with pytest.raises(SystemExit) as stopped:
        slides_main(['--wsi', str(tmp_path / 'site1'), str(tmp_path / 'site2'), '--model', 'patchconvnet_test_p4'])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1 and 'share the file name slide_001.tif' in lines[0], lines


def test_a_slide_far_coarser_than_the_model_and_a_one_class_model_are_refused_before_reading(tmp_path):
    """--mpp 250 (nanometres typed for 0.25 microns) would ask for a level-0 mask and a grid of 4-pixel tiles."""
    path = write_slide(tmp_path / 'slide.tif', 0.5)
    assert 'coarser than the model' in _one_line_error(path, mpp=250)
    with pytest.raises(WsiError, match='out of range for a model of 1 classes'):
        predict_wsi(timm.create_model('patchconvnet_test_p4', num_classes=1).eval(), path, model_mpp=MODEL_MPP)

