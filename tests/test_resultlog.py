"""A restored trial keeps every epoch's record: the result files a restart continues.

The mechanism of the lost records, shown on Ray's own logger: when a trial restarts from a
checkpoint, Ray copies the run dir's ``result.json`` over the driver's staging copy; the run dir's
copy is only as fresh as the last sync, so a stale one erased the epochs written since."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
from ray.tune.logger import JsonLoggerCallback

from search.resultlog import (ProgressCsvLogger, ResultJsonLogger, checkpoint_iteration,
                              merged_records)


def json_lines(*epochs: int) -> str:
    return "".join(json.dumps({"epoch": e, "training_iteration": e, "val_acc": 50.0 + e}) + "\n"
                   for e in epochs)


def csv_text(*epochs: int) -> str:
    return "epoch,training_iteration,val_acc\n" + "".join(f"{e},{e},{50 + e}\n" for e in epochs)


def iterations(text: str) -> list[int]:
    return [json.loads(line)["training_iteration"] for line in text.splitlines() if line.strip()]


def fake_trial(tmp_path: Path, *, staged: str | None, stored: str | None, checkpoint_at: int | None,
               name: str = "result.json") -> SimpleNamespace:
    """What the loggers read of a trial: its staging dir, its run-dir copy and its checkpoint."""
    staging, run_dir = tmp_path / "staging" / "trial", tmp_path / "run" / "trial"
    for folder, text in ((staging, staged), (run_dir, stored)):
        folder.mkdir(parents=True, exist_ok=True)
        if text is not None:
            (folder / name).write_text(text)
    checkpoint = (None if checkpoint_at is None else
                  SimpleNamespace(checkpoint=object(), metrics={"training_iteration": checkpoint_at}))
    return SimpleNamespace(local_path=str(staging), latest_checkpoint_result=checkpoint,
                           checkpoint=checkpoint and checkpoint.checkpoint,
                           storage=SimpleNamespace(trial_fs_path=str(run_dir),
                                                   storage_filesystem=pyarrow.fs.LocalFileSystem()))


def test_rays_own_restore_loses_the_records_a_stale_run_dir_copy_lacks(tmp_path):
    # Epochs 1-3 were written to the staging copy; the last sync to the run dir came before
    # epoch 1 (an empty file). The worker died after epoch 3; its checkpoint is epoch 2.
    trial = fake_trial(tmp_path, staged=json_lines(1, 2, 3), stored="", checkpoint_at=2)
    JsonLoggerCallback()._restore_from_remote("result.json", trial)
    assert iterations(Path(trial.local_path, "result.json").read_text()) == []  # 1 and 2 are gone


def test_our_restore_keeps_every_record_up_to_the_checkpoint(tmp_path):
    trial = fake_trial(tmp_path, staged=json_lines(1, 2, 3), stored="", checkpoint_at=2)
    ResultJsonLogger()._restore_from_remote("result.json", trial)
    # Epoch 3 is dropped because the restarted trial reports it again: each epoch once.
    assert iterations(Path(trial.local_path, "result.json").read_text()) == [1, 2]


def test_a_resumed_driver_continues_from_the_run_dir_copy(tmp_path):
    # A new driver session has an empty staging dir: the run dir's copy is all there is.
    trial = fake_trial(tmp_path, staged=None, stored=json_lines(1, 2, 3, 4), checkpoint_at=4)
    ResultJsonLogger()._restore_from_remote("result.json", trial)
    assert iterations(Path(trial.local_path, "result.json").read_text()) == [1, 2, 3, 4]


def test_a_restart_without_a_checkpoint_starts_the_file_afresh(tmp_path):
    trial = fake_trial(tmp_path, staged=json_lines(1), stored=None, checkpoint_at=None)
    assert checkpoint_iteration(trial) == 0
    ResultJsonLogger()._restore_from_remote("result.json", trial)
    assert Path(trial.local_path, "result.json").read_text() == ""


def test_a_torn_last_line_is_dropped_with_the_records_after_the_checkpoint():
    torn = json_lines(1, 2) + '{"epoch": 3, "training_'
    assert iterations(merged_records("result.json", torn, "", keep_until=5)) == [1, 2]


def test_progress_csv_keeps_its_header_and_one_row_per_epoch(tmp_path):
    trial = fake_trial(tmp_path, staged=csv_text(1, 2, 3), stored=csv_text(1),
                       checkpoint_at=2, name="progress.csv")
    ProgressCsvLogger()._restore_from_remote("progress.csv", trial)
    assert Path(trial.local_path, "progress.csv").read_text() == csv_text(1, 2)


def test_the_same_file_on_both_sides_is_left_as_it_is(tmp_path):
    trial = fake_trial(tmp_path, staged=None, stored=json_lines(1, 2), checkpoint_at=2)
    trial.local_path = trial.storage.trial_fs_path  # staging and storage are one folder
    ResultJsonLogger()._restore_from_remote("result.json", trial)
    assert iterations(Path(trial.local_path, "result.json").read_text()) == [1, 2]
