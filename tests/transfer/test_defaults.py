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
