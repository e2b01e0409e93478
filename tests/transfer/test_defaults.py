"""The measured defaults' budget: runs shorter than the calibrated ones are told so."""


def test_a_run_shorter_than_the_measured_budgets_is_told_how_many_epochs_reach_them():
    from hftl.config import RunConfig
    from hftl.transfer.defaults import FEW_STEPS, few_steps_warning

    config = RunConfig(task="image", case="small_different", epochs=3, batch_size=32)
    warning = few_steps_warning(200, config)  # 7 batches x 3 epochs: hftl's default on 20 digits per class
    assert warning is not None and "takes 21 optimizer steps (3 epochs of 200 examples)" in warning
    assert "--epochs 6 or more" in warning and "docs/calibration.md" in warning
    assert few_steps_warning(200, config.replace(epochs=6)) is None  # 42 steps
    assert "12 optimizer steps" in few_steps_warning(200, config, processes=2)  # 4 batches per process
    accumulated = config.replace(epochs=6, gradient_accumulation_steps=2)
    assert "24 optimizer steps" in few_steps_warning(200, accumulated)
    assert few_steps_warning(FEW_STEPS * 32, config.replace(epochs=1)) is None


def test_without_epochs_small_data_trains_to_the_measured_step_floor_and_large_data_three_epochs():
    from hftl.config import RunConfig
    from hftl.transfer.defaults import DEFAULT_EPOCHS, FEW_STEPS, MAX_DEFAULT_EPOCHS, default_epochs

    config = RunConfig(task="image", case="small_different", batch_size=32)
    assert config.epochs is None
    epochs, why = default_epochs(config, 200)  # 7 batches: 3 epochs would be 21 steps
    assert epochs == 6 and 6 * 7 >= FEW_STEPS > 5 * 7
    assert why is not None and "3 epochs of 200 examples would be 21 optimizer steps" in why
    assert default_epochs(config, 200, processes=2)[0] == 10  # 4 batches per process
    assert default_epochs(config.replace(gradient_accumulation_steps=7), 200)[0] == 30  # one step per epoch
    assert default_epochs(config, 8) == (MAX_DEFAULT_EPOCHS, default_epochs(config, 8)[1])  # capped
    assert default_epochs(config, 20_000) == (DEFAULT_EPOCHS, None)  # large data: the default, nothing to say
    assert default_epochs(config, None) == (DEFAULT_EPOCHS, None)  # a stream of unknown length
    assert default_epochs(config.replace(epochs=2), 200) == (2, None)  # given: kept, however small


def test_a_run_without_epochs_trains_and_records_the_raised_ones(bert_dir, text_folder, tmp_path, capsys):
    import yaml

    from tests.helpers import quick_train

    result = quick_train(
        "text", "small_similar", bert_dir, text_folder, tmp_path / "run", epochs=None, batch_size=16
    )
    assert [h["epoch"] for h in result.metrics["history"]] == list(
        range(1, 11)
    )  # 64 examples: 4 steps an epoch
    assert result.config.epochs == 10
    recorded = yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text(encoding="utf-8"))
    assert recorded["epochs"] == 10
    printed = capsys.readouterr().out
    assert "--epochs not given: 10 epochs" in printed and "Warning: this run takes" not in printed


def test_a_resume_keeps_its_runs_epochs_and_given_epochs_are_kept_with_a_warning_when_few():
    from hftl.config import RunConfig
    from hftl.transfer.defaults import settle_epochs

    config = RunConfig(task="image", case="small_different", batch_size=32)
    epochs, note = settle_epochs(config, 200, resumed=3)
    assert epochs == 3 and "the 3 epochs the run started with" in note
    epochs, note = settle_epochs(config.replace(epochs=2), 200, resumed=9)  # --epochs wins over the run's
    assert epochs == 2 and note.startswith("Warning: this run takes 14 optimizer steps")
    assert settle_epochs(config.replace(epochs=2), None) == (2, None)  # a stream: nothing to count
    assert settle_epochs(config, 200)[0] == 6
    epochs, note = settle_epochs(config, 8)  # at the cap: one note, no warning
    assert epochs == 30 and "Warning" not in note
