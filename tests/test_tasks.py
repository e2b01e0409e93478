from pathlib import Path

import pytest

import hftl
from hftl.tasks import Task, get_task, load_task_card, register_task

REPO = Path(__file__).resolve().parents[1]


def test_builtin_tasks_come_from_the_shipped_cards():
    assert {"image", "text"} <= set(hftl.available_tasks())
    image, text = get_task("image"), get_task("text")
    assert image.auto_model == "AutoModelForImageClassification" and image.modality == "image"
    assert text.auto_model == "AutoModelForSequenceClassification" and "sentence" in text.input_columns
    assert image.defaults["model"] and image.defaults["dataset"] and text.defaults["dataset"]


def test_every_shipped_task_card_parses():
    for card in sorted((REPO / "tasks").glob("*.yaml")):
        task = load_task_card(card)
        assert task.model_class().__name__ == task.auto_model


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(hftl.ConfigError, match=r"unknown task 'imgae'.*image, text.*did you mean 'image'"):
        get_task("imgae")


def test_registering_a_task_is_one_call_and_duplicates_are_refused():
    task = Task(
        name="tiny-test-task",
        modality="text",
        auto_model="AutoModelForSequenceClassification",
        pipeline_tag="text-classification",
        input_columns=("body",),
    )
    register_task(task)
    assert get_task("tiny-test-task") is task
    with pytest.raises(hftl.ConfigError, match="already registered"):
        register_task(task)


def test_a_task_card_path_works_as_task(tmp_path):
    card = tmp_path / "reviews.yaml"
    card.write_text(
        "name: reviews\nmodality: text\nauto_model: AutoModelForSequenceClassification\n"
        "pipeline_tag: text-classification\ncolumns: {input: [review], label: [stars]}\n"
    )
    task = get_task(str(card))
    assert task.name == "reviews" and task.input_columns == ("review",) and task.label_columns == ("stars",)


def test_bad_task_card_names_the_file_and_key(tmp_path):
    card = tmp_path / "bad.yaml"
    card.write_text("name: bad\nmodality: audio\nauto_model: X\npipeline_tag: y\n")
    with pytest.raises(hftl.ConfigError, match=r"bad.yaml: modality must be"):
        load_task_card(card)


def test_task_cards_are_found_after_a_non_editable_install(tmp_path):
    """`pip install .` (no -e) must ship tasks/*.yaml inside the package."""
    import subprocess
    import sys

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "hftl" / "task_cards" / "image.yaml").is_file()
    code = "import hftl, sys; assert hftl.__file__.startswith(sys.argv[1]), hftl.__file__; print(hftl.available_tasks())"
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "'image'" in done.stdout and "'text'" in done.stdout
