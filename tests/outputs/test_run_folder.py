"""One run per output folder: a finished run is not trained over by accident, --overwrite-output-dir replaces
only what hftl wrote, --resume continues, and two runs never share a folder at once."""

from __future__ import annotations

import json
import shutil

import pytest

from hftl.errors import ConfigError, OutputError
from hftl.outputs.run_folder import LOCK_FILE, RunLock, clear_previous_run, previous_run
from tests.helpers import quick_train


@pytest.fixture
def finished(glove_model, text_folder, tmp_path):
    out = tmp_path / "run"
    quick_train("text", "small_similar", glove_model, text_folder, out, epochs=1)
    (out / "notes.txt").write_text("the user's own file")
    return out


@pytest.fixture(scope="module")
def glove_model(glove_file):
    return f"vectors:{glove_file}"


def test_a_new_run_in_a_finished_runs_folder_is_refused(finished, glove_model, text_folder):
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    with pytest.raises(
        ConfigError,
        match=r"already holds a run \(metrics.json, metrics.jsonl, checkpoints\).*--resume auto.*--overwrite-output-dir",
    ):
        quick_train("text", "small_similar", glove_model, text_folder, finished, epochs=2, lr=0.5)
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before


def test_overwrite_replaces_only_what_hftl_wrote(finished, glove_model, text_folder):
    result = quick_train(
        "text", "small_similar", glove_model, text_folder, finished, epochs=2, overwrite_output_dir=True
    )
    log = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "eval_accuracy" in r] == [1, 2]  # the new run's evaluations only
    assert len(result.metrics["history"]) == 2
    assert (finished / "notes.txt").read_text() == "the user's own file"
    checkpoints = sorted(p.name for p in (finished / "checkpoints").iterdir())
    assert checkpoints and all(name.startswith("checkpoint-") for name in checkpoints)


def test_resume_may_continue_a_finished_run(finished, glove_model, text_folder):
    result = quick_train("text", "small_similar", glove_model, text_folder, finished, epochs=2, resume="auto")
    assert [h["epoch"] for h in result.metrics["history"]] == [1, 2] and result.metrics["resumed_from"]


def test_a_second_run_in_a_folder_in_use_stops_at_once_naming_the_holder(glove_model, text_folder, tmp_path):
    holder = RunLock(tmp_path / "busy").acquire()
    try:
        with pytest.raises(ConfigError, match=r"busy is in use by another hftl run \(\{\"pid\": \d+"):
            quick_train("text", "small_similar", glove_model, text_folder, tmp_path / "busy", epochs=1)
        assert previous_run(tmp_path / "busy") == []  # it stopped before writing anything
    finally:
        holder.release()
    # released: the folder is free again (a crashed holder's lock is released by the operating system)
    quick_train("text", "small_similar", glove_model, text_folder, tmp_path / "busy", epochs=1)
    assert (tmp_path / "busy" / LOCK_FILE).exists() and (tmp_path / "busy" / "metrics.json").exists()


def test_clearing_never_touches_unknown_files_or_follows_links(tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (folder / "logs").symlink_to(outside)  # a link named like a run file: the link goes, not its target
    (folder / "my_data.csv").write_text("a,b")
    (folder / "onnx").mkdir()  # an export of the old weights (hftl export) would not match the new ones
    (folder / "onnx" / "model.onnx").write_bytes(b"graph")
    assert sorted(clear_previous_run(folder)) == ["checkpoints", "logs", "metrics.json", "onnx"]
    assert sorted(p.name for p in folder.iterdir()) == ["my_data.csv"] and (outside / "keep.txt").exists()


def test_an_output_folder_that_cannot_be_written_is_one_clear_error(glove_model, text_folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(
        ConfigError, match=r"cannot write to the output folder .*a-file/run .*writable --output-dir"
    ):
        quick_train("text", "small_similar", glove_model, text_folder, blocker / "run", epochs=1)


def test_a_link_leading_out_of_the_output_folder_is_refused_and_nothing_is_written_through_it(
    glove_model, text_folder, tmp_path
):
    outside = tmp_path / "victim.txt"
    outside.write_text("the user's file")
    out = tmp_path / "run"
    out.mkdir()
    for name in (LOCK_FILE, "run_config.yaml", "transfer_plan.json"):
        (out / name).symlink_to(outside)
    with pytest.raises(OutputError, match=r"holds links that lead out of it \(.*victim.txt"):
        quick_train("text", "small_similar", glove_model, text_folder, out, epochs=1)
    assert outside.read_text() == "the user's file"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LOCK_FILE, "run_config.yaml", "transfer_plan.json"]
    )


def test_the_lock_is_never_taken_through_a_link(tmp_path):
    """Even one planted after the folder was checked: the lock file is opened without following links."""
    outside = tmp_path / "victim.txt"
    outside.write_text("keep")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).symlink_to(outside)
    with pytest.raises(ConfigError, match=r"\.hftl\.lock is a link"):
        RunLock(tmp_path / "run").acquire()
    assert outside.read_text() == "keep"


def test_a_saved_model_folder_is_not_a_run_to_write_over(glove_model, text_folder, finished, tmp_path):
    saved = tmp_path / "someones-model"
    saved.mkdir()
    (saved / "config.json").write_text("{}")
    (saved / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(
        ConfigError, match=r"holds a saved model \(config.json, model.safetensors\) that no hftl run"
    ):
        quick_train("text", "small_similar", glove_model, text_folder, saved, epochs=1)
    assert (saved / "model.safetensors").read_bytes() == b"weights"
    quick_train("text", "small_similar", glove_model, text_folder, saved, epochs=1, overwrite_output_dir=True)
    assert (saved / "metrics.json").is_file()  # replaced when asked to


def test_files_a_run_would_write_over_are_the_users_until_a_run_has_used_the_folder(
    glove_model, text_folder, tmp_path
):
    """A README.md or run_config.yaml in a folder no run has locked is the user's: refused, not overwritten; in a
    folder a run used (its lock is there: an early crash left its plan and config) they are the run's own."""
    mine = tmp_path / "notes-folder"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    (mine / "run_config.yaml").write_text("mine: true\n")
    with pytest.raises(
        ConfigError,
        match=r"holds files a run would write over \(README.md, run_config.yaml\) and no hftl run",
    ):
        quick_train("text", "small_similar", glove_model, text_folder, mine, epochs=1)
    assert (mine / "README.md").read_text() == "my notes"
    scheduled = (
        tmp_path / "scheduled"
    )  # a job scheduler's log folder, made before the run starts, is not a run file
    (scheduled / "logs").mkdir(parents=True)
    (scheduled / "logs" / "job.out").write_text("started\n")
    quick_train("text", "small_similar", glove_model, text_folder, scheduled, epochs=1)
    assert (scheduled / "metrics.json").is_file()
    crashed = tmp_path / "crashed-early"
    crashed.mkdir()
    (crashed / LOCK_FILE).write_text("")
    (crashed / "run_config.yaml").write_text("task: text\n")
    quick_train("text", "small_similar", glove_model, text_folder, crashed, epochs=1)
    assert (crashed / "metrics.json").is_file()
    quick_train("text", "small_similar", glove_model, text_folder, mine, epochs=1, overwrite_output_dir=True)
    assert (mine / "metrics.json").is_file()  # replaced when asked to


def test_the_output_folder_is_never_inside_the_dataset_folder(glove_model, text_folder, tmp_path):
    data = shutil.copytree(text_folder, tmp_path / "data")
    with pytest.raises(
        ConfigError, match=r"--output-dir .*runs is inside --dataset .*: the run's files would be read"
    ):
        quick_train("text", "small_similar", glove_model, data, data / "runs", epochs=1)
    with pytest.raises(ConfigError, match=r"--feature-cache-dir .*features is inside --dataset"):
        quick_train(
            "text",
            "small_similar",
            glove_model,
            data,
            tmp_path / "out",
            feature_cache_dir=str(data / "features"),
        )
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in text_folder.iterdir())


def test_the_model_folder_is_never_the_output_folder(text_folder, bert_dir, tmp_path):
    model = shutil.copytree(bert_dir, tmp_path / "model")
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"is inside --output-dir"):
        quick_train("text", "small_similar", model, text_folder, model, epochs=1, overwrite_output_dir=True)
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before
    # nor inside it where replacing the old run would clear it (a merged model in OUT/merged)
    out = tmp_path / "out"
    merged = shutil.copytree(bert_dir, out / "merged")
    with pytest.raises(ConfigError, match=r"is inside --output-dir"):
        quick_train("text", "small_similar", merged, text_folder, out, epochs=1, overwrite_output_dir=True)
    assert (merged / "config.json").is_file()


def test_resume_never_starts_over_a_run_it_cannot_continue(finished, glove_model, text_folder):
    shutil.rmtree(finished / "checkpoints")
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    with pytest.raises(
        ConfigError,
        match=r"holds a run \(metrics.json, metrics.jsonl\) but no complete, undamaged checkpoint",
    ):
        quick_train("text", "small_similar", glove_model, text_folder, finished, epochs=2, resume="auto")
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before


def test_resume_auto_never_deletes_complete_checkpoints_that_fail_their_checksums(
    finished, glove_model, text_folder
):
    """A transient read error must not cost a run its checkpoints: damaged but complete ones are refused, not
    cleared, even where the run never finished."""
    (finished / "metrics.json").unlink()  # as if it had been interrupted after its checkpoints
    for checkpoint in (finished / "checkpoints").iterdir():
        (checkpoint / "trainable.safetensors").write_bytes(b"damaged")
    with pytest.raises(ConfigError, match=r"no complete, undamaged checkpoint"):
        quick_train("text", "small_similar", glove_model, text_folder, finished, epochs=2, resume="auto")
    assert all(
        (c / "trainable.safetensors").read_bytes() == b"damaged" for c in (finished / "checkpoints").iterdir()
    )


def test_resume_auto_starts_afresh_where_a_run_was_interrupted_before_its_first_checkpoint(
    glove_model, text_folder, tmp_path
):
    """A preempted job requeued with --resume auto: nothing to continue, so it starts over, without the old log."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 3, "loss": 9.9}\n')  # what the interrupted run logged
    (out / "checkpoints").mkdir()
    (out / "notes.txt").write_text("the user's own file")
    result = quick_train("text", "small_similar", glove_model, text_folder, out, epochs=1, resume="auto")
    assert not result.metrics.get("resumed_from")
    assert '"loss": 9.9' not in (out / "metrics.jsonl").read_text()
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_resume_never_continues_another_folders_run_over_this_one(
    finished, glove_model, text_folder, tmp_path
):
    other = tmp_path / "other"
    quick_train("text", "small_similar", glove_model, text_folder, other, epochs=1, seed=7)
    checkpoint = sorted((other / "checkpoints").iterdir())[-1]
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"belongs to another folder, and .*run holds a run of its own"):
        quick_train(
            "text",
            "small_similar",
            glove_model,
            text_folder,
            finished,
            epochs=2,
            seed=7,
            resume=str(checkpoint),
        )
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before
    # into an empty folder it continues (the usual way to branch a run off a checkpoint)
    result = quick_train(
        "text",
        "small_similar",
        glove_model,
        text_folder,
        tmp_path / "branch",
        epochs=2,
        seed=7,
        resume=str(checkpoint),
    )
    assert result.metrics["resumed_from"]


def test_case_auto_checks_the_folder_before_its_trials(text_folder, bert_dir, tmp_path):
    import hftl

    model = shutil.copytree(bert_dir, tmp_path / "model")
    with pytest.raises(ConfigError, match=r"is inside --output-dir"):
        hftl.train(
            task="text",
            case="auto",
            model=str(model),
            dataset=str(text_folder),
            output_dir=str(model),
            overwrite_output_dir=True,
            epochs=1,
        )
    assert not (model / ".hftl-trials").exists() and not (model / "advice.json").exists()


def test_a_recipe_folder_with_a_link_leading_out_is_refused_before_anything_is_written(tmp_path):
    """``hftl demo`` and ``hftl compare`` write (and replace) their runs and logs in their folder: a link there that
    leads out (``logs/source.log -> ~/notes.txt``, ``source -> ~/my_model``) is refused, as a run's folder's is."""
    from hftl.outputs.run_folder import check_recipe_folder

    outside = tmp_path / "notes.txt"
    outside.write_text("the user's notes")
    folder = tmp_path / "demo"
    (folder / "logs").mkdir(parents=True)
    (folder / "logs" / "source.log").symlink_to(outside)
    with pytest.raises(
        OutputError, match=r"holds links that lead out of it \(logs/source.log -> .*notes.txt"
    ):
        check_recipe_folder(folder, "demo", ("results.json",), True, "Pass --overwrite")
    assert outside.read_text() == "the user's notes"


def test_the_demo_log_is_never_written_through_a_link(tmp_path):
    from hftl.recipes.demo import quiet_output

    outside = tmp_path / "notes.txt"
    outside.write_text("the user's notes")
    log = tmp_path / "logs" / "source.log"
    log.parent.mkdir()
    log.symlink_to(outside)
    with pytest.raises(OSError), quiet_output(log):
        print("never written")
    assert outside.read_text() == "the user's notes"


def test_hftl_advise_refuses_a_link_leading_out_and_a_training_runs_folder(finished, tmp_path):
    """Advice goes beside nothing it could replace: not through a link, not over a training run's own advice."""
    from hftl.outputs.run_folder import check_advice_folder

    check_advice_folder(tmp_path / "new")  # nothing there yet: fine
    outside = tmp_path / "victim"
    outside.mkdir()
    advice = tmp_path / "advice"
    advice.mkdir()
    (advice / ".hftl-trials").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match=r"holds links that lead out of it \(\.hftl-trials"):
        check_advice_folder(advice)
    with pytest.raises(ConfigError, match=r"holds a training run; its advice.json would be replaced"):
        check_advice_folder(finished)
