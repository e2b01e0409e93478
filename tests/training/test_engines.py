"""The accelerate configs say what their comments say, and an engine this machine cannot run is one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

import hftl
from hftl.errors import ConfigError
from hftl.training import engines

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "accelerate"


def launcher_environment(name: str) -> dict[str, str]:
    """What ``accelerate launch --config_file configs/accelerate/NAME.yaml`` hands its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "hftl.train"]
    )
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_every_accelerate_config_is_valid_yaml_with_a_comment_that_says_how_to_use_it():
    for path in sorted(CONFIGS.glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("#"), path.name
        assert yaml.safe_load(text)["distributed_type"], path.name


def test_the_fsdp_config_gives_fsdp2_sharded_checkpoints_and_layer_wrapping():
    env = launcher_environment("fsdp")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.transformer_cls_names_to_wrap is None  # hftl names each family's layer class
    assert not plugin.activation_checkpointing and not plugin.cpu_ram_efficient_loading


@pytest.mark.parametrize("stage", [2, 3])
def test_the_deepspeed_configs_give_their_zero_stage_and_leave_accumulation_and_clipping_to_hftl(stage):
    env = launcher_environment(f"deepspeed_zero{stage}")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    with mock.patch.dict(os.environ, env):
        ds_config = DeepSpeedPlugin().deepspeed_config
    assert ds_config["zero_optimization"]["stage"] == stage
    assert ds_config["gradient_accumulation_steps"] == "auto" and ds_config["gradient_clipping"] == "auto"
    assert "optimizer" not in ds_config and "scheduler" not in ds_config  # hftl's AdamW and schedule
    # ZeRO-3 keeps no whole copy of the weights anywhere: the final model is gathered in 16-bit
    assert ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)


def test_deepspeed_without_the_package_is_refused_in_one_line():
    with pytest.raises(
        ConfigError, match="asks for DeepSpeed, which is not installed: pip install deepspeed"
    ):
        engines.check_requested_engine({"ACCELERATE_USE_DEEPSPEED": "true"}, installed=False)
    engines.check_requested_engine({"ACCELERATE_USE_DEEPSPEED": "true"}, installed=True)
    engines.check_requested_engine({}, installed=False)


def test_an_fsdp_or_deepspeed_config_that_accelerate_turns_into_ddp_is_refused():
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2)
    with pytest.raises(ConfigError, match="asks for FSDP, but Accelerate set up MULTI_CPU with 2 process"):
        engines.check_engine_started(ddp, {"ACCELERATE_USE_FSDP": "true"})
    engines.check_engine_started(ddp, {})
    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=2)
    engines.check_engine_started(fsdp, {"ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(
        ConfigError, match="asks for DeepSpeed, but Accelerate set up MULTI_CPU with 2 process"
    ):
        engines.check_engine_started(ddp, {"ACCELERATE_USE_DEEPSPEED": "true"})
    deepspeed = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=2)
    engines.check_engine_started(deepspeed, {"ACCELERATE_USE_DEEPSPEED": "true"})


def test_the_cli_refuses_deepspeed_without_the_package_before_loading_anything(monkeypatch, capsys, tmp_path):
    from hftl.train import main

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setattr(engines, "deepspeed_installed", lambda: False)
    out = tmp_path / "out"
    assert main(["--task", "image", "--case", "small_similar", "--output-dir", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("hftl: error: the accelerate config asks for DeepSpeed")
    assert not out.exists()  # refused before anything was written


def test_zero3_init_is_refused_hftl_reshapes_the_whole_pretrained_model_first():
    def deepspeed(stage: int, init: bool) -> SimpleNamespace:
        plugin = SimpleNamespace(zero_stage=stage, zero3_init_flag=init)
        state = SimpleNamespace(deepspeed_plugin=plugin)
        return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=2, state=state)

    plain = hftl.RunConfig(task="image", case="large_similar")
    with pytest.raises(ConfigError, match="zero3_init_flag: true.*set zero3_init_flag: false"):
        engines.check_sharded_settings(plain, deepspeed(3, True))
    engines.check_sharded_settings(plain, deepspeed(3, False))
    engines.check_sharded_settings(plain, deepspeed(2, False))


def sharded() -> SimpleNamespace:
    return SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=2)


@pytest.mark.parametrize(
    "setting, flag",
    [
        ({"regularizer": ["l2sp"]}, "--regularizer"),
        ({"unfreeze_schedule": 1}, "--unfreeze-schedule"),
        ({"auto_batch_size": True}, "--auto-batch-size"),
        ({"merge_lora": True}, "--merge-lora"),
        ({"lr": "auto"}, "--lr auto"),
        ({"strategy": "contrastive", "task": "text"}, "--strategy contrastive"),
    ],
)
def test_settings_that_need_the_whole_model_on_each_process_are_refused_under_fsdp(setting, flag):
    config = hftl.RunConfig(**{"task": "image", "case": "large_similar", **setting})
    with pytest.raises(ConfigError, match=f"{flag} is not supported with FSDP"):
        engines.check_sharded_settings(config, sharded())
    engines.check_sharded_settings(
        config, SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1)
    )


def test_each_backbone_layer_becomes_one_fsdp_unit_for_every_plan(vit_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from hftl.backbones import backbone_for
    from tests.conftest import make_bert

    bert_dir = make_bert(tmp_path / "bert")  # random weights will do: only the structure matters here

    for folder, auto, layer in (
        (vit_dir, AutoModelForImageClassification, "ViTLayer"),
        (bert_dir, AutoModelForSequenceClassification, "BertLayer"),
    ):
        model = auto.from_pretrained(folder)
        backbone = backbone_for(model.config)
        targets = backbone.lora_targets(model, within=backbone.layers(model))
        lora = get_peft_model(auto.from_pretrained(folder), LoraConfig(target_modules=targets))
        for candidate in (model, lora):
            plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
            accelerator = SimpleNamespace(**vars(sharded()), state=SimpleNamespace(fsdp_plugin=plugin))
            assert engines.wrap_each_layer(accelerator, candidate, backbone) == [layer]
    # classes named by the accelerate config are left as they are
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["BertSelfAttention"],
    )
    accelerator = SimpleNamespace(**vars(sharded()), state=SimpleNamespace(fsdp_plugin=plugin))
    assert engines.wrap_each_layer(accelerator, model, backbone) is None
    assert plugin.transformer_cls_names_to_wrap == ["BertSelfAttention"]


def test_report_to_names_a_tracker_accelerate_knows_or_is_one_error():
    """A misspelt tracker failed inside Accelerate ("Unsupported logging capability") after the data had loaded."""
    import hftl
    from hftl.training.engines import trackers

    assert trackers("none") is None and trackers("tensorboard, wandb") == ["tensorboard", "wandb"]
    with pytest.raises(hftl.ConfigError, match=r"unknown --report-to tracker 'wandbb'.*did you mean 'wandb'"):
        trackers("wandbb")
