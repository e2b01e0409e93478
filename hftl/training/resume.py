"""Resuming: only a checkpoint of this same run (same data, model, plan and optimisation: ``run_fingerprint``), after
clearing what an interrupted checkpoint write left behind; and which output folder a run may take
(``check_run_folder``): never one holding another run, nor the model it starts from; ``claim_output_dir`` locks it and
clears the previous run where told to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from hftl.config import RunConfig, resolved_local_path
from hftl.data.preprocess import ModelInputs
from hftl.errors import ConfigError, HftlError
from hftl.outputs.artifacts import METRICS_FILE, read_run_settings
from hftl.outputs.run_folder import RunLock, check_output_dir, clear_previous_run, previous_run
from hftl.training.checkpoints import (
    DATA_READER,
    Progress,
    check_same_run,
    checkpoint_dir,
    frozen_digest,
    list_checkpoints,
    load_checkpoint,
    read_progress,
    remove_partial,
    resolve_resume,
)
from hftl.transfer.plan import TransferPlan


def run_fingerprint(
    config: RunConfig, plan: TransferPlan | None, inputs: ModelInputs, model: nn.Module | None = None
) -> dict[str, Any]:
    """What makes a run this run: a checkpoint resumes only into the same data, model, plan and optimisation.
    ``model`` (built, not yet trained): its frozen weights, which a checkpoint does not hold, are fingerprinted too."""
    fingerprint = {
        "model": resolved_local_path(str(config.model)),
        "data_reader": DATA_READER,
        "revision": config.revision,
        "train_data": inputs.stream.fingerprint if inputs.stream is not None else inputs.train._fingerprint,
        "validation_data": inputs.validation._fingerprint,
        "plan": None
        if plan is None
        else [
            plan.case,
            plan.strategy,
            plan.init,
            plan.keep_layers,
            [[b.name, b.action] for b in plan.blocks],
        ],
        "lr": config.lr if config.lr is not None else (plan.lr if plan is not None else None),
        "seed": config.seed,
        "effective_batch_size": config.batch_size * config.gradient_accumulation_steps,
        "weight_decay": config.weight_decay,
        "warmup_ratio": config.warmup_ratio,
        "scheduler": config.scheduler,
        "max_grad_norm": config.max_grad_norm,
        "class_weights": config.class_weights,
        # multi-label: the threshold scores every epoch (and so picks the best); single-label runs keep the
        # fingerprint they always had, so their older checkpoints still resume
        **(
            {"problem_type": config.problem_type, "threshold": config.threshold}
            if config.problem_type == "multi_label"
            else {}
        ),
    }
    if (
        plan is not None and plan.contrastive is not None
    ):  # the stage that made the frozen body (absent before it)
        fingerprint["contrastive"] = asdict(plan.contrastive)
    if model is not None and (digest := frozen_digest(model)) is not None:
        fingerprint["frozen_weights"] = digest
    fingerprint["training"] = training_settings(config, plan)
    if inputs.image_stats is not None and config.augment:
        # augmented crops are rounded back to uint8 (batches reach the model raw): checkpoints of runs trained on
        # float crops do not resume into this one; un-augmented image runs see the same pixels as before
        fingerprint["augmentation"] = "crops rounded to uint8"
    return fingerprint


def training_settings(config: RunConfig, plan: TransferPlan | None) -> dict[str, Any]:
    """The rest of what a resumed run must share with the checkpoint's: each block's rate and the epoch it thaws,
    the LoRA and conservative settings (an adapter's rank and scaling, L2-SP's pull, layer decay, the head's rate),
    how the best epoch is chosen, the class weights' values (a file edited in place keeps its path), and whether a
    frozen part's features are cached (a cached run trains on fixed views; ``--cache-views`` of them). As JSON
    reads it back."""
    weights = config.class_weights
    if weights not in ("none", "auto"):
        path = Path(weights).expanduser()
        weights = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else weights
    settings = {
        "blocks": None if plan is None else [[b.name, b.lr, b.unfreeze_epoch] for b in plan.blocks],
        "lora": None if plan is None or plan.lora is None else asdict(plan.lora),
        "conservative": None if plan is None or plan.conservative is None else asdict(plan.conservative),
        "metric_for_best": config.metric_for_best,
        "class_weights": weights,
        # only a frozen part is ever cached: elsewhere the switch changes nothing, and may change on resume
        "feature_cache": [config.feature_cache, config.cache_views]
        if plan is not None and any(block.action == "frozen" for block in plan.blocks)
        else None,
    }
    return json.loads(json.dumps(settings))  # tuples as the checkpoint's JSON holds them: lists


def resume(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    config: RunConfig,
    fingerprint: dict[str, Any],
) -> tuple[Progress, str | None]:
    """Clear half-written checkpoints, then load the one ``--resume`` names (or the newest, for ``auto``), if it
    was made by this same run (``run_fingerprint``)."""
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        for name in remove_partial(output_dir / "checkpoints"):
            accelerator.print(f"Removed a half-written checkpoint ({name}) left by an interrupted run")
    accelerator.wait_for_everyone()
    if not config.resume:
        return Progress(fingerprint=fingerprint), None
    checkpoint = resolve_resume(config.resume, output_dir)
    if checkpoint is None:
        accelerator.print(f"--resume auto: no complete checkpoint in {output_dir}, starting fresh")
        return Progress(fingerprint=fingerprint), None
    check_same_run(read_progress(checkpoint).fingerprint, fingerprint, checkpoint)
    progress = load_checkpoint(accelerator, model, optimizer, scheduler, checkpoint)
    accelerator.print(f"Resumed from {checkpoint} (epoch {progress.epoch}, step {progress.global_step})")
    return progress, str(checkpoint)


def check_resume_folder(folder: Path, resume: str | None, overwrite: bool) -> bool:
    """``--resume`` continues the run OUTPUT_DIR holds, never another: where the folder holds a run, the checkpoint
    must be one of its own, or the resumed run would write over that run, mix its log into it, and restore its best
    epoch from that run's checkpoints. True where ``auto`` finds a run that was interrupted before its first complete
    checkpoint (a preempted job, requeued): it starts afresh, and what that run wrote is cleared first; a finished
    run (its metrics.json) with no checkpoint left is refused. Checksums are verified later, once, by
    ``check_resume_target``: complete checkpoints that all fail them are refused there, never cleared."""
    found = previous_run(folder)
    if not resume or overwrite or not found:
        return False
    if resume != "auto":
        if not Path(resume).resolve().is_relative_to(checkpoint_dir(folder).resolve()):
            raise ConfigError(
                f"--resume {resume}: that checkpoint belongs to another folder, and {folder} holds a run of its "
                f"own ({', '.join(found)}); resume into the checkpoint's own folder or an empty --output-dir"
            )
        return False
    if list_checkpoints(checkpoint_dir(folder)):
        return False
    if not (folder / METRICS_FILE).exists():
        return True
    raise nothing_to_continue(resume, folder, found)


def nothing_to_continue(resume: str, folder: Path, found: list[str]) -> ConfigError:
    return ConfigError(
        f"--resume {resume}: {folder} holds a run ({', '.join(found)}) but no complete, undamaged checkpoint to "
        "continue it from; replace that run with --overwrite-output-dir, or choose another --output-dir"
    )


def check_run_folder(config: RunConfig) -> bool:
    """OUTPUT_DIR may take this run (``check_output_dir``, ``check_resume_folder``: True where ``--resume auto``
    starts afresh) and is not where the model it starts from lives, which replacing the old run's files would
    delete (a merged model in ``OUT/merged``, say)."""
    folder = Path(config.output_dir)
    check_output_dir(folder, config.resume, config.overwrite_output_dir)
    afresh = check_resume_folder(folder, config.resume, config.overwrite_output_dir)
    model = Path(str(config.model)).expanduser()
    if model.is_dir() and folder.exists():
        model, out = model.resolve(), folder.resolve()
        if model == out or (config.overwrite_output_dir and model.is_relative_to(out)):
            raise ConfigError(
                f"--model {config.model} is inside --output-dir {folder}: the run would write over (or clear) the "
                "model it starts from; choose another --output-dir, or copy the model out first"
            )
    check_outside_dataset(config)
    return afresh


def check_outside_dataset(config: RunConfig) -> None:
    """What a run (or ``hftl advise``) writes, ``--output-dir`` and ``--feature-cache-dir``, is not inside a local
    ``--dataset`` folder, where the next run on it would read those files as data."""
    dataset = Path(str(config.dataset)).expanduser() if config.dataset else None
    if dataset is None or not dataset.is_dir():
        return
    cache = Path(config.feature_cache_dir).expanduser() if config.feature_cache_dir else None
    for flag, written in (("--output-dir", Path(config.output_dir)), ("--feature-cache-dir", cache)):
        if written is not None and written.resolve().is_relative_to(dataset.resolve()):
            raise ConfigError(
                f"{flag} {written} is inside --dataset {config.dataset}: the run's files would be read as data by "
                f"the next run on it; choose a {flag} outside the dataset folder"
            )


def check_resume_target(config: RunConfig, fingerprint: dict[str, Any]) -> None:
    """Before anything is written: refuse ``--resume`` into a checkpoint of another run, and ``auto`` where the
    folder's run has checkpoints but none passes its checksums."""
    if not config.resume:
        return
    checkpoint = resolve_resume(config.resume, config.output_dir)
    if checkpoint is not None:
        check_same_run(read_progress(checkpoint).fingerprint, fingerprint, checkpoint)
    elif not config.overwrite_output_dir and (found := previous_run(Path(config.output_dir))):
        # every checkpoint of the folder's run is damaged
        raise nothing_to_continue(config.resume, Path(config.output_dir), found)


def claim_output_dir(config: RunConfig, accelerator: Accelerator) -> RunLock | None:
    """The main process locks OUTPUT_DIR for the run, refuses a folder holding another run (unless resuming or
    told to overwrite it) and, with --overwrite-output-dir, clears what the previous run wrote."""
    folder = Path(config.output_dir)
    afresh = check_run_folder(config)  # every process: all stop together
    lock = None
    if accelerator.is_main_process:
        try:
            lock = RunLock(folder).acquire()
        except OSError as error:  # read-only, not a folder, no space: say so before any data is prepared
            raise ConfigError(
                f"cannot write to the output folder {folder} ({type(error).__name__}: {error.strerror or error}); "
                "choose a writable --output-dir"
            ) from error
        if (config.overwrite_output_dir and not config.resume) or afresh:
            removed = clear_previous_run(folder)
            why = "an interrupted run with no complete checkpoint" if afresh else "the previous run"
            if removed:
                accelerator.print(
                    f"{'--resume auto' if afresh else '--overwrite-output-dir'}: removed {why}'s {', '.join(removed)}"
                )
    accelerator.wait_for_everyone()
    return lock


def resumed_augment(config: RunConfig) -> bool | None:
    """Whether the run a ``--resume`` without ``--augment``/``--no-augment`` continues augmented: its checkpoints
    were trained that way, whatever the rule would choose at other epochs; None when there is nothing to read (the
    rule then decides, as for a new run)."""
    augment = _resumed_setting(config, "augment")
    return augment if isinstance(augment, bool) else None


def resumed_epochs(config: RunConfig) -> int | None:
    """The epochs of the run a ``--resume`` without ``--epochs`` continues (None when there is none to read, or it
    is damaged: the default then applies, as for a new run)."""
    epochs = _resumed_setting(config, "epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None


def _resumed_setting(config: RunConfig, name: str) -> Any:
    """A setting the command line left out, as the run a ``--resume`` continues had it (its ``run_config.yaml``);
    None when it was given, there is no resume, or no readable file."""
    if getattr(config, name) is not None or not config.resume:
        return None
    try:
        return read_run_settings(config.output_dir).get(name)
    except HftlError:  # no run_config.yaml yet, or a damaged one
        return None
