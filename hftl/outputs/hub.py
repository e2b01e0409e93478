"""Publishing to the Hugging Face Hub: ``push`` an output folder (LoRA adapter, merged or full model, with its card).
Getting a Hub repo back as a folder is ``hftl.outputs.download``.

Only what belongs to the model is sent, named file by file: weights, config, processor or tokenizer, the card, the
run config, plan and metrics. The same commit deletes such files that an earlier push left in the repo and this one
does not send (a LoRA adapter over a full model would load as a mix of both runs); the repo's history keeps them, and
its other files are left alone. Never checkpoints (optimizer, scheduler and RNG state), the training log, or a token.
The token comes from the standard Hugging Face login (``hf auth login``) or ``HF_TOKEN``; hftl never prints or
writes it. A failed upload raises ``PushError``; ``publish`` turns that into a message with the exact command to
retry, so a training run never fails because the Hub could not be reached.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.utils import filter_repo_objects

from hftl.errors import HftlError, ModelError, unknown_choice
from hftl.outputs.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    CHECKPOINTS,
    CLASS_REPORT_FILE,
    CONFIG_FILE,
    CONFUSION_PNG,
    CURVE_PNG,
    MERGED_DIR,
    METRICS_FILE,
    MODEL_FILES,
    PLAN_FILE,
    PROCESSOR_FILES,
    PUSH_LOG,
    RUN_LOG,
    adapter_config_text,
    holds_base,
    write_metrics,
)
from hftl.outputs.card import CARD_FILE, build_card
from hftl.outputs.download import describe, local_folder
from hftl.outputs.files import check_no_link_leaves, write_text
from hftl.settings import check_repo_id

MODES = ("auto", "adapter", "merged", "full")
Mode = Literal["auto", "adapter", "merged", "full"]
MODE_WORDS = {"adapter": "LoRA adapter", "merged": "merged model", "full": "model"}
RUN_FILES = (CARD_FILE, CONFIG_FILE, PLAN_FILE, METRICS_FILE)
REPORT_PUSHED = (CLASS_REPORT_FILE, CONFUSION_PNG, CURVE_PNG)  # the card links them, when the run drew them
# what a repo's model is read from: an earlier push's copies that this one does not replace are deleted with it
# (weights in the other formats too: transformers and PEFT would read a stale one where this push sends none)
MODEL_DEFINING = (
    *ADAPTER_FILES,
    *MODEL_FILES,
    *PROCESSOR_FILES,
    *RUN_FILES,
    *REPORT_PUSHED,
    "adapter_model.bin",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
)
# a second guard after the explicit file list: none of these is ever uploaded
NEVER_SEND = (
    f"{CHECKPOINTS}/",
    "*optimizer*",
    "*scheduler*",
    "*scaler*",
    "rng-*",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.ckpt",
    RUN_LOG,
    PUSH_LOG,
)


class PushError(HftlError):
    """The upload failed (no network, no permission, timeout, not logged in); the local files are untouched."""


@dataclass(frozen=True)
class PushResult:
    """What was (or, for a dry run, would be) sent where."""

    repo_id: str
    mode: str
    url: str
    files: tuple[str, ...]
    commit_url: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # an earlier push's model files this one deleted (still in the repo's history)
    removed: tuple[str, ...] = ()


def push(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    mode: Mode = "auto",
    commit_message: str | None = None,
    dry_run: bool = False,
) -> PushResult:
    """Publish a run folder (or a Hub repo made by hftl) to ``repo_id``. ``mode``: ``adapter`` (LoRA runs'
    default: the PEFT adapter with its new head, beside the frozen base it adapts), ``merged`` (LoRA merged into
    the base; ``merged/`` is created if missing), ``full`` (full and head-only runs); ``auto`` picks adapter or
    full. Writes the model card first."""
    check_repo_id(repo_id)
    if not dry_run:
        require_token()  # before any work (a merge can take minutes)
    with local_folder(output_dir) as folder:
        check_no_link_leaves(folder)  # nothing outside the run folder is read, written or sent
        kind = resolve_mode(folder, mode)
        notes = _notes(folder, kind)
        url = f"{HfApi().endpoint}/{repo_id}"
        if dry_run:  # writes nothing: no card, no merged/ folder
            return PushResult(repo_id, kind, url, planned_files(folder, kind), notes=notes)
        upload_dir = prepare_upload(folder, kind, repo_id)
        files = select_files(upload_dir, kind)
        message = commit_message or f"hftl: upload {kind}"
        commit_url, removed = _upload(
            upload_dir, repo_id, files, private, message, pointed_at(upload_dir, kind, repo_id)
        )
        if removed:
            notes += (
                f"replaced the repo's earlier model: removed {', '.join(removed)} (still in the repo's history)",
            )
        return PushResult(repo_id, kind, url, files, commit_url, notes, removed)


def publish(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    mode: Mode = "auto",
    commit_message: str | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """``push`` that does not raise: on failure it prints why and the exact retry command. The outcome is returned
    and logged to OUTPUT_DIR/hub_push.json; the run's files stay as they are either way. ``strict`` re-raises
    usage errors (wrong mode for the folder, not an hftl run) instead, for the command line."""
    outcome: dict[str, Any] = {"repo_id": repo_id, "mode": mode, "private": private, "time": _now()}
    try:
        result = push(output_dir, repo_id, private=private, mode=mode, commit_message=commit_message)
    except Exception as error:  # whatever went wrong, the trained model must survive it
        if strict and isinstance(error, HftlError) and not isinstance(error, PushError):
            raise
        outcome.update(
            ok=False, error=describe(error), retry=retry_command(output_dir, repo_id, private, mode)
        )
        print(failure_message(output_dir, outcome), file=sys.stderr, flush=True)
    else:
        outcome.update(
            ok=True,
            mode=result.mode,
            url=result.url,
            commit_url=result.commit_url,
            files=result.files,
            removed=result.removed,
        )
        print(success_message(result), flush=True)
    _write_log(output_dir, outcome)
    return outcome


def token_warning(config: Any) -> str | None:
    """Said before a ``--push-to-hub`` run trains: without a login its push, the last step, will fail (the run
    still trains and saves, and ``hftl push`` sends it later)."""
    if not getattr(config, "push_to_hub", None):
        return None
    try:
        require_token()
    except PushError as error:
        return (
            f"--push-to-hub: {error}. The run trains and saves as usual, then its push fails: log in now, or "
            f"push later with `{retry_command(config.output_dir, config.push_to_hub, config.hub_private)}`"
        )
    return None


def publish_after_run(output_dir: Path, config: Any, accelerator: Any, metrics: dict[str, Any]) -> None:
    """The last step of a run with ``--push-to-hub``: main process only, after every process has finished and
    everything is saved. The outcome goes into ``metrics['hub']`` and metrics.json."""
    if not getattr(config, "push_to_hub", None) or not accelerator.is_main_process:
        return
    metrics["hub"] = publish(output_dir, config.push_to_hub, private=config.hub_private)
    write_metrics(output_dir, metrics)


# --- steps -----------------------------------------------------------------------------------------------------
def resolve_mode(folder: Path, mode: str) -> Literal["adapter", "merged", "full"]:
    """``auto`` -> ``adapter`` for LoRA runs, else ``full``; a mode that does not fit the folder is an error."""
    if mode not in MODES:
        raise unknown_choice("push mode", mode, MODES)
    is_adapter = (folder / "adapter_config.json").is_file()
    if mode == "auto":
        return "adapter" if is_adapter else "full"
    if mode in ("adapter", "merged") and not is_adapter:
        raise ModelError(
            f"{folder} holds a full model, not a LoRA adapter: --adapter-only and --merged are for LoRA runs; "
            "push it without either flag"
        )
    if mode == "full" and is_adapter:
        raise ModelError(f"{folder} holds a LoRA adapter: push it as is (adapter) or with --merged")
    return mode  # type: ignore[return-value]


def prepare_upload(folder: Path, kind: str, repo_id: str | None) -> Path:
    """Write the card for ``repo_id`` and return the folder to upload (``merged/`` for merged pushes, which gets
    the run's files copied in so it documents itself)."""
    if kind != "merged":
        write_text(folder / CARD_FILE, str(build_card(folder, kind, repo_id)))  # type: ignore[arg-type]
        return folder
    merged = ensure_merged(folder)
    for name in (CONFIG_FILE, PLAN_FILE, METRICS_FILE):
        write_text(merged / name, (folder / name).read_text(encoding="utf-8"))
    write_text(merged / CARD_FILE, str(build_card(folder, "merged", repo_id)))
    return merged


def ensure_merged(folder: Path) -> Path:
    """OUTPUT_DIR/merged: the adapter merged into its base, with the processor; made once, if missing."""
    merged = folder / MERGED_DIR
    if (merged / "config.json").is_file() and any(merged.glob("model*.safetensors")):
        return merged
    from transformers import AutoImageProcessor, AutoTokenizer

    from hftl.outputs.loading import load, task_of

    print(f"Merging the LoRA adapter into its base model: {merged}", flush=True)
    model = load(folder).merge_and_unload()
    model.save_pretrained(merged)
    processor_class = AutoImageProcessor if task_of(str(folder)).modality == "image" else AutoTokenizer
    processor_class.from_pretrained(folder).save_pretrained(merged)
    return merged


def planned_files(folder: Path, kind: str) -> tuple[str, ...]:
    """What a push of ``kind`` would send, found without writing anything (for ``--dry-run``): the card counts as
    sent (it is written at push time); a merged model not made yet counts as its config and weights."""
    if kind != "merged":
        return tuple(sorted({*select_files(folder, kind), CARD_FILE}))
    merged = folder / MERGED_DIR
    if (merged / "config.json").is_file() and any(merged.glob("model*.safetensors")):
        return tuple(sorted({*select_files(merged, kind), *RUN_FILES}))
    made = {"config.json", "model.safetensors"}
    return tuple(sorted(made | set(_matching(folder, (*PROCESSOR_FILES, *RUN_FILES))) | {CARD_FILE}))


def _matching(folder: Path, patterns: tuple[str, ...]) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for pattern in patterns
        for path in folder.glob(pattern)
        if path.is_file()
    }


def select_files(folder: Path, kind: str) -> tuple[str, ...]:
    """The exact files to send (paths relative to ``folder``): weights for ``kind``, processor, card, run files."""
    weights = ADAPTER_FILES if kind == "adapter" else MODEL_FILES
    found = _matching(folder, (*weights, *PROCESSOR_FILES, *RUN_FILES, *REPORT_PUSHED))
    needed = "adapter_model.safetensors" if kind == "adapter" else "model.safetensors"
    if not any(name.startswith(needed.split(".")[0]) and name.endswith(".safetensors") for name in found):
        raise ModelError(f"no {needed} in {folder}: nothing to push as {kind}")
    return tuple(sorted(found))


def pointed_at(folder: Path, kind: str, repo_id: str) -> dict[str, bytes]:
    """Files sent with other contents than on disk: an adapter that holds its frozen base names the repo as its
    base in the pushed adapter_config.json (the local one names the local folder), so ``pipeline`` and
    ``AutoPeftModel`` build the base from the same repo."""
    if kind != "adapter" or not holds_base(folder):
        return {}
    return {ADAPTER_CONFIG: adapter_config_text(folder, repo_id).encode()}


def _upload(
    folder: Path,
    repo_id: str,
    files: tuple[str, ...],
    private: bool,
    message: str,
    replaced: dict[str, bytes] | None = None,
) -> tuple[str, tuple[str, ...]]:
    """One commit of ``files`` from ``folder`` (``replaced``: names sent with these bytes instead) that also
    deletes the model files an earlier push left and this one does not replace; returns its URL and those."""
    api = HfApi()  # huggingface_hub resolves the token itself (login file or HF_TOKEN); hftl never holds it
    replaced = replaced or {}
    sent = list(filter_repo_objects(files, ignore_patterns=list(NEVER_SEND)))
    operations: list[Any] = [
        CommitOperationAdd(name, replaced.get(name) or str(folder / name)) for name in sent
    ]
    try:
        # private=None keeps the namespace's default visibility (and never changes an existing repo)
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        stale = stale_model_files(api.list_repo_files(repo_id, repo_type="model"), sent)
        operations += [CommitOperationDelete(name) for name in stale]
        commit = api.create_commit(repo_id, operations, commit_message=message, repo_type="model")
    except Exception as error:  # network, HTTP (401/403/404/5xx), timeout, offline mode
        raise PushError(f"upload to {repo_id} failed: {describe(error)}") from error
    return commit.commit_url, stale


def stale_model_files(in_repo: list[str], sent: list[str]) -> tuple[str, ...]:
    """The repo's model files (``MODEL_DEFINING``) that this push does not send: left, they would load with it."""
    kept = set(sent)
    return tuple(
        sorted(
            name
            for name in filter_repo_objects(in_repo, allow_patterns=list(MODEL_DEFINING))
            if name not in kept
        )
    )


def require_token() -> None:
    """Fail early, and clearly, when no login is found; the token itself stays inside huggingface_hub."""
    try:
        found = get_token() is not None
    except Exception as error:  # e.g. a failed OIDC exchange
        raise PushError(f"could not read the Hugging Face token: {describe(error)}") from error
    if not found:
        raise PushError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN")


# --- messages --------------------------------------------------------------------------------------------------
def retry_command(output_dir: str | Path, repo_id: str, private: bool = False, mode: str = "auto") -> str:
    flags = {"adapter": ["--adapter-only"], "merged": ["--merged"]}.get(mode, [])
    words = [
        "hftl",
        "push",
        str(output_dir),
        "--repo-id",
        repo_id,
        *(["--private"] if private else []),
        *flags,
    ]
    return shlex.join(words)


def failure_message(output_dir: str | Path, outcome: dict[str, Any]) -> str:
    return (
        f"hftl: pushing to the Hub failed: {outcome['error']}\n"
        f"  Nothing was lost: the run's files are in {output_dir}.\n"
        f"  Retry with: {outcome['retry']}"
    )


def success_message(result: PushResult) -> str:
    lines = [f"Pushed the {MODE_WORDS[result.mode]} ({len(result.files)} files) to {result.url}"]
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)


def _notes(folder: Path, kind: str) -> tuple[str, ...]:
    if kind != "adapter" or holds_base(folder):  # an adapter with its base needs no other model
        return ()
    base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    from hftl.outputs.card import is_hub_id

    if is_hub_id(base):
        return ()
    return (
        f"the adapter's base model is the local folder {base}: others need that model to use the adapter "
        "(train from a Hub id, or push with --merged)",
    )


def _write_log(output_dir: str | Path, outcome: dict[str, Any]) -> None:
    folder = Path(output_dir)
    if folder.is_dir():
        write_text(folder / PUSH_LOG, json.dumps(outcome, indent=2, default=list) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
