"""Bad input, end to end through the command line: one line naming the field or file and
how to fix it, exit code 2, nothing already saved lost. The full catalogue, with the
test of each case, is docs/bad-inputs.md; these are the cases no other file covers."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import one_line as _one_line
from conftest import tiny_benchmark
from test_datasets import make_folder

from tlbench import cli


def _folder_bench(tmp_path, **overrides) -> dict:
    return tiny_benchmark(
        name="bad",
        run="r",
        datasets=[{"name": "imagefolder", "path": "images", "val_fraction": 0.25, "test_fraction": 0.25}],
        **overrides,
    )


def test_an_image_that_cannot_be_decoded_stops_the_run_keeps_earlier_trials_and_is_retried(
    tmp_path, write_config, capsys
):
    make_folder(tmp_path / "images", {"a": 8, "b": 8}, size=64)
    config = write_config(_folder_bench(tmp_path, search={"n_trials": 1, "startup_trials": 1, "screen": False}))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    folder = tmp_path / "results" / "bad" / "r"
    kept = pd.read_csv(folder / "trials.csv")
    capsys.readouterr()

    # an image that is not the first of its split (validate decodes those) and so is first decoded in a trial
    from tlbench.host.builtins.datasets import load_imagefolder
    from tlbench.types import DatasetRequest

    options = {"path": "images", "val_fraction": 0.25, "test_fraction": 0.25}
    splits = load_imagefolder(DatasetRequest(options=options, seed=0, base_dir=tmp_path))
    broken = next(
        Path(i) for i in splits.train.ids[1:] if i not in {s.ids[0] for s in (splits.train, splits.val, splits.test)}
    )
    good = broken.read_bytes()
    broken.write_bytes(good[:200])  # a valid header, then nothing: only decoding finds out
    code = cli.main(["run", str(config), "--n-trials", "2", "--format", "csv"])
    _one_line(capsys, code, f"{broken.name} cannot be read", "delete or replace the file")
    after = pd.read_csv(folder / "trials.csv")
    pd.testing.assert_frame_equal(after.iloc[:1], kept, check_dtype=False)  # nothing saved is lost
    assert after["fail_reason"].iloc[1].startswith("interrupted: image")

    broken.write_bytes(good)  # fixed: going on retries that configuration once
    assert cli.main(["run", str(config), "--n-trials", "2", "--format", "csv"]) == 0
    final = pd.read_csv(folder / "trials.csv")
    assert final["state"].tolist() == ["COMPLETE", "FAIL", "COMPLETE"] and final["retry_of"].iloc[2] == 1


def test_a_file_that_is_no_image_is_refused_before_any_compute(tmp_path, write_config, capsys):
    make_folder(tmp_path / "images", {"a": 4, "b": 4})
    (tmp_path / "images" / "b" / "scan.jpg").write_text("this is text, not a JPEG")
    code = cli.main(["run", str(write_config(_folder_bench(tmp_path)))])
    _one_line(capsys, code, "scan.jpg cannot be read (UnidentifiedImageError); delete or replace the file")
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("study.db"))


def test_non_image_files_are_ignored_by_their_suffix(tmp_path, write_config, capsys):
    make_folder(tmp_path / "images", {"a": 4, "b": 4})
    (tmp_path / "images" / "a" / "README.txt").write_text("notes")
    (tmp_path / "images" / "b" / "labels.csv").write_text("x,y")
    assert cli.main(["validate", str(write_config(_folder_bench(tmp_path)))]) == 0
    assert "2 classes, 4/2/2 train/val/test" in capsys.readouterr().out


@pytest.mark.parametrize(
    "counts, dataset, expected",
    [
        ({"a": 1, "b": 1}, {}, "the val split is empty; add images or lower the held-out fractions"),
        ({"a": 4, "b": 4}, {"train_samples": 1}, "the train split has 1 example; training needs at least 2"),
    ],
)
def test_too_few_samples_for_the_splits(tmp_path, write_config, capsys, counts, dataset, expected):
    make_folder(tmp_path / "images", counts)
    data = _folder_bench(tmp_path)
    data["datasets"][0] |= dataset
    _one_line(capsys, cli.main(["validate", str(write_config(data))]), expected)


def test_a_last_batch_of_one_example_trains(write_config, capsys):
    # 9 training images in batches of 8: batch norm cannot train on the ninth alone
    data = tiny_benchmark(
        datasets=[
            {"name": "synthetic", "classes": 3, "size": 16, "train_samples": 9, "val_per_class": 2, "test_per_class": 2}
        ],
        strategies=[{"name": "finetune", "epochs": 1, "freeze": 0.0}],
        search={"n_trials": 1, "startup_trials": 1},
    )
    assert cli.main(["run", str(write_config(data)), "--format", "csv"]) == 0, capsys.readouterr().err


def test_two_different_benchmarks_on_one_study_name_are_refused(tmp_path, write_config, capsys):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = tiny_benchmark(
        name="same", run="r", search={"n_trials": 1, "startup_trials": 1, "storage": storage, "screen": False}
    )
    # another results folder, so that only the shared study tells the two apart
    second = first | {"strategies": [{"name": "finetune", "epochs": 1}], "results_dir": "elsewhere"}
    assert cli.main(["run", str(write_config(first, filename="a.yaml")), "--format", "csv"]) == 0
    capsys.readouterr()
    code = cli.main(["run", str(write_config(second, filename="b.yaml")), "--format", "csv"])
    _one_line(capsys, code, "study same/r/synthetic was made from a different config", "set another 'run:' name")
    trials = optuna.load_study(study_name="same/r/synthetic", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"]  # the first benchmark's trial, untouched
    assert not (tmp_path / "elsewhere").exists()  # a refused run leaves nothing behind


def test_a_database_server_that_is_not_there_is_one_line(write_config, capsys):
    config = write_config(tiny_benchmark())
    code = cli.main(["worker", str(config), "--storage", "postgresql://nobody@127.0.0.1:9/none"])
    _one_line(capsys, code, "search.storage: cannot open postgresql", "fix the URL or start the server")


@pytest.mark.parametrize("workers", ["0", "two"])
def test_a_bad_worker_count_is_refused(write_config, capsys, workers):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", str(write_config(tiny_benchmark())), "--workers", workers])
    assert exit_.value.code == 2
    assert f"--workers: must be a whole number of 1 or more, not '{workers}'" in capsys.readouterr().err


def test_the_catalogue_names_a_real_test_for_every_case():
    from pathlib import Path

    root = Path(__file__).parent.parent
    text = (root / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 95
    for row in rows:
        for named in row.split("`tests/")[1:]:  # every test a row names
            path, _, name = named.split("`")[0].partition("::")
            source = (root / "tests" / path).read_text(encoding="utf-8")
            assert f"def {name}(" in source, row
