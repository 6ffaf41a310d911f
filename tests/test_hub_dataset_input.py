"""The IDC export for the Hub (`hub_dataset.export_idc_dataset`) on hostile Kaggle folders, as tests/test_hub.py
exports the plain one: a decompression bomb is skipped and counted, misnamed files are reported."""
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard

from datagen import save_png_declaring, save_random_png, write_idc_kaggle_folder
from timm_patchconvnet.hub import dataset as hub_dataset

datasets.disable_progress_bars()


def test_a_decompression_bomb_is_skipped_and_counted_in_the_export(tmp_path: Path):
    kaggle = write_idc_kaggle_folder(tmp_path / 'kaggle')
    save_png_declaring(kaggle / '10255' / '1' / '10255_idx5_x700_y700_class1.png', 60000, 60000)
    export = hub_dataset.export_idc_dataset(str(kaggle), str(tmp_path / 'idc'), split_by_patient=False)
    assert export.skipped_images == 2 and export.num_rows == {'train': 81}  # the corrupt file and the bomb
    reloaded = datasets.load_dataset('parquet', data_dir=str(export.folder), cache_dir=str(tmp_path / 'cache'))
    assert (('10255', 700) not in set(zip(reloaded['train']['patient_id'], reloaded['train']['x'])))
    assert 'Unreadable image files left out: 2.' in DatasetCard.load(export.folder / 'README.md').text


def test_misnamed_files_are_reported_in_the_card_of_a_split_export(tmp_path: Path):
    kaggle = write_idc_kaggle_folder(tmp_path / 'kaggle')
    save_random_png(kaggle / '10253' / '0' / '10253_idx5_x900_y0_class0.PNG')
    export = hub_dataset.export_idc_dataset(str(kaggle), str(tmp_path / 'idc'))
    assert sum(export.num_rows.values()) == 81
    assert '1 file(s) whose names are not IDC patch names' in export.protocol
    assert '1 file(s) whose names are not IDC patch names' in DatasetCard.load(export.folder / 'README.md').text
