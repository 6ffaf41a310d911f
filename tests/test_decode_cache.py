"""The decoded cache (`decode_cache`): pixels equal to the PIL path's, reuse, and every way it must refuse to be
trusted: a changed folder, another version, a damaged entry, a full disk, two builders at once."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from timm_patchconvnet.data import build_transform, load_splits
from timm_patchconvnet.dataset_specs import DATASETS
from timm_patchconvnet.data.decode_cache import (
    CACHE_VERSION, DecodeCacheError, DecodeSettings, DecodedImages, ImageReadError, decode_split, keep_batch,
    readable_files)
from timm_patchconvnet.data.device_transforms import BatchPreprocess

from datagen import IDC_EDGE_PATCH, write_cifar10_parquet, write_idc_kaggle_folder

SETTINGS = DecodeSettings(32, 32, 'bicubic')


def entries(root: Path) -> list:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def tiny_split(n: int = 40, size=(32, 32), seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['a', 'b']))
    return datasets.Dataset.from_dict({'image': images, 'label': [i % 2 for i in range(n)]}, features=features)


@pytest.mark.parametrize('dataset', ['cifar10', 'idc'])
def test_decoded_eval_batches_equal_the_pil_path(tmp_path, dataset):
    """Decoded, then normalised on the device: the same tensors as the PIL evaluation transform, to float
    rounding (IDC includes a 50x31 edge patch, resized the same way)."""
    if dataset == 'cifar10':
        splits = load_splits('cifar10', data_dir=str(write_cifar10_parquet(tmp_path / 'c', 60, 20)))
    else:
        splits = load_splits('idc', data_dir=str(write_idc_kaggle_folder(tmp_path / 'idc')))
    size = DATASETS[dataset].img_size
    mean, std = DATASETS[dataset].mean_std
    data_config = dict(input_size=(3, size, size), interpolation='bicubic', mean=mean, std=std)
    split = splits.test if dataset == 'cifar10' else splits.train
    decoded = decode_split(split, DecodeSettings.from_data_config(data_config), tmp_path / 'cache', splits.source_key)
    images, labels = decoded.__getitems__(list(range(len(decoded))))
    ours = BatchPreprocess.for_model(None, data_config)(images)
    transform = build_transform(splits.dataset, data_config, train=False)
    theirs = torch.stack([transform(example['image'].convert('RGB')) for example in split])
    assert torch.equal(labels, torch.as_tensor(split['label']))
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    if dataset == 'idc':
        edge = [i for i, path in enumerate(split.cast_column('image', datasets.Image(decode=False))['image'])
                if f'x{IDC_EDGE_PATCH[1]}_y{IDC_EDGE_PATCH[2]}' in path['path']]
        assert len(edge) == 1 and Image.open(split[edge[0]]['image'].filename).size == (50, 31)


def test_an_entry_is_reused_not_rebuilt(tmp_path):
    split = tiny_split()
    first = decode_split(split, SETTINGS, tmp_path)
    built = (first.folder / 'images.npy').stat().st_mtime_ns
    again = decode_split(split, SETTINGS, tmp_path)
    assert again.folder == first.folder and (again.folder / 'images.npy').stat().st_mtime_ns == built
    assert entries(tmp_path) == [first.folder.name]
    # other settings or other rows are other entries
    decode_split(split, DecodeSettings(16, 16, 'bicubic'), tmp_path)
    decode_split(split.select(range(10)), SETTINGS, tmp_path)
    assert len(entries(tmp_path)) == 3


def test_batches_come_whole_from_a_dataloader_and_workers(tmp_path):
    decoded = decode_split(tiny_split(), SETTINGS, tmp_path)
    for workers in (0, 2):  # workers get the folder, not the pixels, and reopen the memory map
        loader = torch.utils.data.DataLoader(decoded, batch_size=16, num_workers=workers, collate_fn=keep_batch)
        images, labels = next(iter(loader))
        assert images.dtype == torch.uint8 and images.shape == (16, 3, 32, 32)
        assert torch.equal(labels, torch.arange(16) % 2)
        assert torch.equal(images[3], decoded[3][0])


def test_a_changed_folder_is_decoded_again(tmp_path):
    """A file rewritten after its folder was cached: a new listing key, so the check and the pixels are redone."""
    root = write_idc_kaggle_folder(tmp_path / 'idc')
    cache = tmp_path / 'cache'
    first = load_splits('idc', data_dir=str(root), cache_dir=str(cache))
    row = 0
    path = Path(first.train.cast_column('image', datasets.Image(decode=False))[row]['image']['path'])
    settings = DecodeSettings(50, 50, 'bicubic')
    before = decode_split(first.train, settings, cache, first.source_key)
    Image.new('RGB', (50, 50), (1, 2, 3)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))  # a new mtime even on a coarse clock
    second = load_splits('idc', data_dir=str(root), cache_dir=str(cache))
    assert second.source_key != first.source_key
    after = decode_split(second.train, settings, cache, second.source_key)
    assert after.folder != before.folder
    assert (after[row][0] == torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1)).all()
    assert not (before[row][0] == torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1)).all()


def test_an_unreadable_file_found_later_is_counted(tmp_path):
    """The folder check is cached; a file broken after it changes the listing, so it is found and counted."""
    root = write_idc_kaggle_folder(tmp_path / 'idc')
    cache = tmp_path / 'cache'
    first = load_splits('idc', data_dir=str(root), cache_dir=str(cache))
    assert first.left_out.skipped_images == 1  # datagen's corrupt file
    victim = next((root / '10256' / '0').iterdir())
    victim.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    second = load_splits('idc', data_dir=str(root), cache_dir=str(cache))
    assert second.left_out.skipped_images == 2
    assert len(list((cache / 'timm_patchconvnet' / 'idc-folders').iterdir())) == 2


@pytest.mark.parametrize('damage', ['version', 'source', 'truncated', 'labels'])
def test_a_foreign_or_damaged_entry_is_rebuilt(tmp_path, damage, caplog):
    split = tiny_split()
    decoded = decode_split(split, SETTINGS, tmp_path)
    pixels = decoded.__getitems__(list(range(len(split))))[0].clone()
    meta = json.loads((decoded.folder / 'meta.json').read_text())
    if damage in ('version', 'source'):  # an entry written by another version, or copied in for another source
        meta['key']['version' if damage == 'version' else 'fingerprint'] = 'other'
        (decoded.folder / 'meta.json').write_text(json.dumps(meta))
    elif damage == 'truncated':
        with open(decoded.folder / 'images.npy', 'r+b') as f:
            f.truncate(1000)
    else:
        np.save(decoded.folder / 'labels.npy', np.zeros(3, dtype=np.int64))
    rebuilt = decode_split(split, SETTINGS, tmp_path)
    assert 'rebuilding' in caplog.text
    key = json.loads((rebuilt.folder / 'meta.json').read_text())['key']
    assert key['version'] == CACHE_VERSION and key['fingerprint'] == split._fingerprint
    assert torch.equal(rebuilt.__getitems__(list(range(len(split))))[0], pixels)
    assert entries(tmp_path) == [rebuilt.folder.name]


def test_unreadable_images_are_left_out_and_counted(tmp_path):
    """A broken image in the middle: left out, and every image after it still comes with its own label."""
    good = tiny_split(6)
    features = datasets.Features(image=datasets.Image(decode=False), label=datasets.ClassLabel(names=['a', 'b']))
    broken = datasets.Dataset.from_dict({'image': [{'bytes': b'not an image', 'path': None}], 'label': [1]},
                                        features=features).cast_column('image', datasets.Image())
    split = datasets.concatenate_datasets([good.select(range(3)), broken, good.select(range(3, 6))])
    decoded = decode_split(split, SETTINGS, tmp_path)
    assert decoded.unreadable == 1 and len(decoded) == 6
    images, labels = decoded.__getitems__([5, 2, 3])
    assert labels.tolist() == [good[5]['label'], good[2]['label'], good[3]['label']]
    for image, index in zip(images, (5, 2, 3)):
        assert torch.equal(image, torch.from_numpy(np.array(good[index]['image'])).permute(2, 0, 1))


def test_a_file_that_cannot_be_read_is_an_error_not_a_broken_image(tmp_path):
    """A missing file (deleted after listing; likewise no permission, an I/O error) may be fixed: it stops the
    run with its name and is never recorded as unreadable."""
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=['a', 'b']))
    split = datasets.Dataset.from_dict({'image': [str(tmp_path / 'gone.png')] * 2, 'label': [0, 1]},
                                       features=features)
    with pytest.raises(ImageReadError, match='Cannot read .*gone.png: No such file'):
        decode_split(split, SETTINGS, tmp_path / 'cache')
    assert entries(tmp_path / 'cache') == []
    with pytest.raises(ImageReadError, match='gone.png'):
        readable_files([tmp_path / 'gone.png'])


RUN_DECODE = textwrap.dedent('''
    import resource, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_decode_cache import SETTINGS, tiny_split
    import timm_patchconvnet.data.decode_cache as decode_cache
    builds, build = [], decode_cache._build
    decode_cache._build = lambda *args: (builds.append(1), build(*args))  # counts the builds of this process
    split = tiny_split({n})
    limit = {limit}
    if limit:  # files may not grow past `limit` bytes: writing more fails as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    time.sleep(max(0, {start} - time.time()))
    try:
        entry = decode_cache.decode_split(split, SETTINGS, Path({root!r}))
    except decode_cache.DecodeCacheError as err:
        print('ERROR', err)
    else:
        print('OK', entry.folder.name, len(entry), len(builds))
''')


def run_decode(root: Path, n: int, limit: int = 0, start: float = 0.) -> subprocess.Popen:
    script = RUN_DECODE.format(tests=str(Path(__file__).parent), n=n, limit=limit, start=start, root=str(root))
    return subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_full_disk_gives_one_clear_error_and_no_entry(tmp_path):
    process = run_decode(tmp_path, 200, limit=100_000)  # 200 images of 3 KB need 600 KB
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert out.startswith('ERROR Cannot write the decoded cache'), out + err
    assert 'free space, set --cache-dir' in out and 'Nothing half-written was kept' in out
    assert entries(tmp_path) == []  # neither an entry nor its staging folder
    retry = decode_split(tiny_split(200), SETTINGS, tmp_path)  # with room again, it builds (here: no limit to set)
    assert len(retry) == 200 and entries(tmp_path) == [retry.folder.name]


def test_two_builders_at_once_end_with_one_entry(tmp_path):
    start = time.time() + 8  # both start decoding at once, after their imports
    processes = [run_decode(tmp_path, 3000, start=start) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), results
    outputs = [out.split() for out, _ in results]
    assert all(o[0] == 'OK' and o[2] == '3000' for o in outputs), results
    assert outputs[0][1] == outputs[1][1] and entries(tmp_path) == [outputs[0][1]]
    assert sorted(int(o[3]) for o in outputs) == [0, 1]  # one decoded, the other waited for it and read it
    assert DecodedImages(tmp_path / outputs[0][1]).meta['unreadable'] == 0
    assert not list(tmp_path.glob('*.tmp-*'))


def test_an_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    with pytest.raises(DecodeCacheError, match='Cannot create the decoded cache'):
        decode_split(tiny_split(), SETTINGS, blocker / 'cache')


@pytest.mark.parametrize('cores, processes, cuda, expected', [
    (2, 1, False, 0), (16, 1, False, 4), (64, 1, False, 8), (16, 4, False, 1),
    (2, 1, True, 1), (16, 1, True, 8), (16, 4, True, 3), (1, 1, True, 0),
])
def test_pil_workers_follow_the_cores_and_the_device(cores, processes, cuda, expected, monkeypatch):
    from timm_patchconvnet.training.loaders import default_workers
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(cores)))
    assert default_workers(processes, cuda) == expected


# Issue 26: stale or tampered entries

def test_a_file_replaced_with_the_same_size_and_mtime_is_decoded_again(tmp_path):
    """The attack: an IDC patch replaced by another of the same size, its mtime restored. Its inode and change
    time differ, so the listing key does."""
    root = write_idc_kaggle_folder(tmp_path / 'idc')
    cache = tmp_path / 'cache'
    first = load_splits('idc', data_dir=str(root), cache_dir=str(cache))
    path = Path(first.train.cast_column('image', datasets.Image(decode=False))[0]['image']['path'])
    before, size = path.stat(), path.stat().st_size
    replacement = path.with_name('replacement.tmp')
    replacement.write_bytes(bytes(path.read_bytes()[::-1]))  # other bytes, the same size
    os.replace(replacement, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == size and path.stat().st_mtime_ns == before.st_mtime_ns
    second = load_splits('idc', data_dir=str(root), cache_dir=str(cache))
    assert second.source_key != first.source_key


@pytest.mark.parametrize('damage', ['readable', 'labels', 'pixels'])
def test_a_tampered_entry_is_found_and_rebuilt(tmp_path, damage, caplog):
    """A shorter index of readable rows (it dropped 35 of 40 images), labels changed in place, or a changed pixel
    block: the index and labels at every open, the pixels with `verify` (train.py's --verify-cache)."""
    split = tiny_split()
    decoded = decode_split(split, SETTINGS, tmp_path)
    pixels, labels = (t.clone() for t in decoded.__getitems__(list(range(len(split)))))
    if damage == 'readable':
        np.save(decoded.folder / 'readable.npy', np.arange(5))
    elif damage == 'labels':
        np.save(decoded.folder / 'labels.npy', 1 - np.load(decoded.folder / 'labels.npy'))
    else:
        images = np.load(decoded.folder / 'images.npy', mmap_mode='r+')
        images[7] = 255 - images[7]
        images.flush()
        del images
        assert not torch.equal(decode_split(split, SETTINGS, tmp_path)[7][0], pixels[7])  # unverified: served
    rebuilt = decode_split(split, SETTINGS, tmp_path, verify=damage == 'pixels')
    assert 'rebuilding' in caplog.text and len(rebuilt) == len(split)
    images, again = rebuilt.__getitems__(list(range(len(split))))
    assert torch.equal(images, pixels) and torch.equal(again, labels)


def test_a_killed_builds_staging_folder_is_removed_by_the_next_build(tmp_path):
    split = tiny_split()
    decoded = decode_split(split, SETTINGS, tmp_path)
    stale = [tmp_path / f'{decoded.folder.name}.tmp-0badf00d', tmp_path / 'other-0123.tmp-deadbeef']
    for folder in stale:
        folder.mkdir()
        (folder / 'images.npy').write_bytes(bytes(1000))
    decode_split(split.select(range(10)), SETTINGS, tmp_path)  # another entry's build
    assert not any(folder.exists() for folder in stale)


def test_a_cache_entry_that_is_a_link_is_a_clear_error(tmp_path):
    split = tiny_split()
    decoded = decode_split(split, SETTINGS, tmp_path / 'cache')
    elsewhere = tmp_path / 'elsewhere'
    decoded.folder.rename(elsewhere)
    decoded.folder.symlink_to(elsewhere)
    with pytest.raises(DecodeCacheError, match=f'{decoded.folder} in the decoded cache is a symbolic link'):
        decode_split(split, SETTINGS, tmp_path / 'cache')
    assert (elsewhere / 'images.npy').is_file()
