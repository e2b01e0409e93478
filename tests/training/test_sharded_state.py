"""The sharded checkpoint path (``accelerator.save_state`` on every process, FSDP/ZeRO) in one fast process: exact
resume, the engine record, checksums over the shard folders, screened DCP metadata and refusals. The same path with
real FSDP2 shards in two processes: test_fsdp_cpu.py (slow)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from hftl.errors import ConfigError, OutputError
from hftl.sources.safety import UnsafePickle
from hftl.training import engines, loop
from hftl.training.checkpoints import damage, list_checkpoints, write_checksums
from hftl.training.sharded_state import check_every_rank_wrote, check_same_engine, screen_metadata
from tests.helpers import assert_resume_matches, quick_train, saved_state


def test_the_sharded_path_resumes_exactly_and_saves_the_gathered_model_in_shards(
    monkeypatch, vit_dir, image_folder, tmp_path
):
    """Every step a sharded run takes (save_state into the temporary folder, load_state on resume, the best epoch
    restored from the shard files, the final state gathered and split by --max-shard-size) on one process."""
    monkeypatch.setattr(engines, "is_sharded", lambda accelerator: True)
    resumed = assert_resume_matches(
        "image",
        "large_similar",
        vit_dir,
        image_folder,
        tmp_path,
        at_step=4,
        augment=False,
        max_shard_size="20KB",
    )
    assert not resumed.metrics["feature_cache"]["used"]
    checkpoint = list_checkpoints(tmp_path / "split" / "checkpoints")[-1]
    files = set(json.loads((checkpoint / "checksums.json").read_text()))
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "rng-0.pt"} <= files
    assert not (checkpoint / "trainable.safetensors").exists()  # not the single-process format
    assert json.loads((checkpoint / "engine.json").read_text()) == {"engine": "single", "processes": 1}
    out = tmp_path / "split"
    assert (out / "model.safetensors.index.json").is_file() and len(
        list(out.glob("model-*-of-*.safetensors"))
    ) > 1
    on_disk, in_memory = saved_state(out), resumed.model.state_dict()
    assert on_disk.keys() == in_memory.keys()
    assert all(torch.equal(on_disk[name], in_memory[name]) for name in on_disk)


def test_sharded_checkpoints_under_eval_strategy_end_and_the_best_epoch_read_back_only_when_earlier(
    monkeypatch, bert_dir, text_folder, tmp_path
):
    """--eval-strategy end: every epoch still writes its sharded checkpoint (resume), none is scored before the
    last, and the last one, the best, is not read back from its shards (the model holds it). An earlier best
    epoch (--eval-strategy epoch, a learning rate too small to change any score) is read back."""
    monkeypatch.setattr(engines, "is_sharded", lambda accelerator: True)
    reads = []
    real = loop.restore_sharded_weights
    monkeypatch.setattr(
        loop,
        "restore_sharded_weights",
        lambda acc, model, folder: (reads.append(folder.name), real(acc, model, folder)),
    )
    end = quick_train(
        "text", "small_similar", bert_dir, text_folder, tmp_path / "end", epochs=2, eval_strategy="end"
    )
    assert [h["epoch"] for h in end.metrics["history"]] == [2] and end.metrics["best"]["epoch"] == 2
    checkpoints = list_checkpoints(tmp_path / "end" / "checkpoints")
    assert [c.name.split("-e")[1] for c in checkpoints] == ["1b0", "2b0"]
    assert all((c / "model.safetensors").is_file() and (c / "engine.json").is_file() for c in checkpoints)
    assert reads == []
    earlier = quick_train(
        "text",
        "small_similar",
        bert_dir,
        text_folder,
        tmp_path / "epoch",
        epochs=2,
        lr=1e-12,
        save_total_limit=5,
    )
    assert earlier.metrics["best"]["epoch"] == 1
    assert len(reads) == 1 and reads[0].endswith("-e1b0")


def fake(engine: DistributedType, processes: int) -> SimpleNamespace:
    return SimpleNamespace(distributed_type=engine, num_processes=processes)


def engine_folder(tmp_path: Path, record: dict | None) -> Path:
    folder = tmp_path / f"checkpoint-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    if record is not None:
        (folder / "engine.json").write_text(json.dumps(record))
    return folder


def test_a_checkpoint_resumes_only_under_the_engine_that_wrote_it(tmp_path):
    unsharded = engine_folder(tmp_path, None)
    fsdp2 = engine_folder(tmp_path, {"engine": "fsdp", "processes": 2})
    zero2 = engine_folder(tmp_path, {"engine": "deepspeed", "processes": 2})
    with pytest.raises(ConfigError, match="written without sharding"):
        check_same_engine(unsharded, fake(DistributedType.FSDP, 2))
    with pytest.raises(ConfigError, match="holds fsdp shards from 2 process.*this launch is ddp"):
        check_same_engine(fsdp2, fake(DistributedType.MULTI_GPU, 2))
    with pytest.raises(ConfigError, match="DeepSpeed reloads them only with as many"):
        check_same_engine(zero2, fake(DistributedType.DEEPSPEED, 4))
    check_same_engine(unsharded, fake(DistributedType.MULTI_GPU, 2))
    check_same_engine(fsdp2, fake(DistributedType.FSDP, 4))  # DCP reshards to another process count
    check_same_engine(zero2, fake(DistributedType.DEEPSPEED, 2))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_distributed_checkpoint_metadata_is_unpickled_through_an_allow_list(tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    real = tmp_path / "real" / "pytorch_model_fsdp_0"
    dcp.save(
        {"model": {"w": torch.ones(3), "b": torch.zeros(2, dtype=torch.bfloat16)}}, checkpoint_id=str(real)
    )
    screen_metadata(real.parent)  # what torch writes passes

    forged = tmp_path / "forged" / "optimizer_0"
    forged.mkdir(parents=True)
    (forged / ".metadata").write_bytes(pickle.dumps({"state": _RunsCode()}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafePickle, match="posix.system|os.system"):
        screen_metadata(forged.parent)
    assert not (tmp_path / "PWNED").exists()


def test_checksums_cover_shard_subfolders_and_name_nothing_outside(tmp_path):
    folder = tmp_path / "checkpoint"
    (folder / "optimizer_0").mkdir(parents=True)
    (folder / "optimizer_0" / "__0_0.distcp").write_bytes(b"shard")
    (folder / "progress.json").write_text("{}")
    write_checksums(folder)
    assert set(json.loads((folder / "checksums.json").read_text())) == {
        "optimizer_0/__0_0.distcp",
        "progress.json",
    }
    assert damage(folder) is None
    (folder / "optimizer_0" / "__0_0.distcp").write_bytes(b"shaRd")
    assert damage(folder) == "optimizer_0/__0_0.distcp does not match its checksum"
    (folder / "checksums.json").write_text(json.dumps({"../secret": {"size": 1, "blake2b": "x"}}))
    assert "not a file inside the checkpoint" in damage(folder)


def test_a_checkpoint_missing_another_process_files_says_it_needs_a_shared_filesystem(tmp_path):
    (tmp_path / "rng-0.pt").write_bytes(b"")
    with pytest.raises(OutputError, match=r"process\(es\) \[1\].*a filesystem every node shares"):
        check_every_rank_wrote(tmp_path, processes=2)
    (tmp_path / "rng-1.pt").write_bytes(b"")
    check_every_rank_wrote(tmp_path, processes=2)


def test_max_shard_size_takes_the_sizes_save_pretrained_reads():
    from transformers.utils.hub import convert_file_size_to_int

    import hftl

    for size in ("5GB", "500MB", "2GiB", "20KB", 1000000, "1000000"):
        kept = hftl.RunConfig(task="image", case="small_similar", max_shard_size=size).max_shard_size
        assert kept == (
            int(size) if str(size).isdigit() else size
        )  # bytes as a number: "1000000" failed there
        assert convert_file_size_to_int(kept) > 0
    with pytest.raises(ConfigError, match="--max-shard-size '5 parsecs': give a size such as 500MB"):
        hftl.RunConfig(task="image", case="small_similar", max_shard_size="5 parsecs")
