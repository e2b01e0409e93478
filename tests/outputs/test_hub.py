"""Publishing to the Hub against a local stand-in of its HTTP API (tests/hub_standin.py): the exact files sent,
the adapter's head inside the upload, no checkpoint state and no token anywhere, failures that keep the run alive
with a retry command that works, main-process-only pushes, and ``hftl.load`` of a Hub id reproducing the logits."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load
from transformers import AutoModelForImageClassification

import hftl
import hftl.outputs.download
import hftl.outputs.hub
from hftl.cli import main as cli_main
from hftl.outputs.hub import PushError, describe, publish, publish_after_run, push
from tests.helpers import assert_pipeline_uses_label_names, free_port, quick_train
from tests.hub_standin import HubStandIn

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"
LORA_REPO = "tester/tiny-vit-lora"
REPORT_SET = {
    "classification_report.json",
    "confusion_matrix.png",
    "learning_curve.png",
}  # linked by the card
ADAPTER_SET = {
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",
    "model.safetensors",
    "metrics.json",
    "preprocessor_config.json",
    "run_config.yaml",
    "transfer_plan.json",
} | REPORT_SET
MODEL_SET = {
    "README.md",
    "config.json",
    "model.safetensors",
    "metrics.json",
    "preprocessor_config.json",
    "run_config.yaml",
    "transfer_plan.json",
} | REPORT_SET
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def hub():
    """The stand-in Hub, with huggingface_hub pointed at it, online, and a fake token in the environment."""
    standin = HubStandIn()
    server = standin.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", FAKE_TOKEN)
        patch.setattr(constants, "ENDPOINT", standin.url)
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield standin
    server.shutdown()


@pytest.fixture(scope="module")
def lora_run(hub, vit_dir, image_folder, tmp_path_factory):
    """A truncated ViT + LoRA run that pushes itself; its console output and log records are kept."""
    out = tmp_path_factory.mktemp("lora-push")
    console, records = io.StringIO(), _Records()
    logging.getLogger().addHandler(records)
    try:
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            result = quick_train(
                "image",
                "small_different",
                vit_dir,
                image_folder,
                out,
                strategy="lora",
                epochs=2,
                push_to_hub=LORA_REPO,
            )
    finally:
        logging.getLogger().removeHandler(records)
    return result, console.getvalue() + "\n".join(records.lines)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def write_repo(hub: HubStandIn, repo_id: str, root: Path) -> Path:
    """The files the stand-in received for ``repo_id``, as a folder (what a snapshot download would give)."""
    folder = root / repo_id.replace("/", "--")
    for name, data in hub.files(repo_id).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_lora_run_pushes_exactly_the_adapter_files(lora_run, hub):
    result, _ = lora_run
    assert set(hub.files(LORA_REPO)) == ADAPTER_SET
    assert result.metrics["hub"]["ok"] is True and set(result.metrics["hub"]["files"]) == ADAPTER_SET
    assert json.loads((result.output_dir / "metrics.json").read_text())["hub"]["ok"] is True
    assert json.loads((result.output_dir / "hub_push.json").read_text())["repo_id"] == LORA_REPO
    # what was sent is what is on disk, byte for byte; metrics.json gained the push outcome after sending, and the
    # sent adapter names the repo as its base (the local one names the local folder: both hold the frozen base)
    for name, data in hub.files(LORA_REPO).items():
        if name not in ("metrics.json", "adapter_config.json"):
            assert data == (result.output_dir / name).read_bytes(), name
    sent, local = (
        json.loads(hub.files(LORA_REPO)["adapter_config.json"]),
        json.loads((result.output_dir / "adapter_config.json").read_text()),
    )
    assert sent["base_model_name_or_path"] == LORA_REPO
    assert local["base_model_name_or_path"] == str(result.output_dir.resolve())
    assert {k: v for k, v in sent.items() if k != "base_model_name_or_path"} == {
        k: v for k, v in local.items() if k != "base_model_name_or_path"
    }
    local_metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert json.loads(hub.files(LORA_REPO)["metrics.json"]) == {
        k: v for k, v in local_metrics.items() if k != "hub"
    }
    # the adapter carries the new head (modules_to_save) and the LoRA weights, nothing of the optimizer
    tensors = load(hub.files(LORA_REPO)["adapter_model.safetensors"])
    assert any("classifier" in key and key.endswith("weight") for key in tensors)
    assert any("lora_A" in key for key in tensors)
    head = next(key for key in tensors if "classifier" in key and key.endswith("weight"))
    assert tensors[head].shape[0] == 3
    # the output dir still has what was not sent
    assert (result.output_dir / "checkpoints").is_dir() and (result.output_dir / "metrics.jsonl").is_file()


def test_push_sends_no_checkpoint_state_and_the_token_only_as_a_header(lora_run, hub):
    result, console = lora_run
    assert not any(
        name.startswith("checkpoints/") or name.endswith((".pt", ".jsonl")) for name in hub.files(LORA_REPO)
    )
    secret = FAKE_TOKEN.encode()
    for name, data in hub.files(LORA_REPO).items():
        assert secret not in data, name
    for path in result.output_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    assert FAKE_TOKEN not in console and f"Pushed the LoRA adapter ({len(ADAPTER_SET)} files)" in console
    # the token was used: every request to the stand-in carried it as a bearer token, and only there
    api_calls = [r for r in hub.requests if r["path"].startswith("/api/") and LORA_REPO in r["path"]]
    assert api_calls and all(r["headers"].get("authorization") == f"Bearer {FAKE_TOKEN}" for r in api_calls)
    created = next(c for c in hub.created if c["repo_id"] == LORA_REPO)
    assert "visibility" not in created  # not --hub-private: the namespace default


def test_hub_id_load_reproduces_the_trained_logits(lora_run, hub, monkeypatch, tmp_path):
    result, _ = lora_run
    served = write_repo(hub, LORA_REPO, tmp_path)
    asked = []

    def snapshot_download(repo_id, revision=None, **kwargs):
        asked.append(repo_id)
        return str(served)

    monkeypatch.setattr(hftl.outputs.download, "snapshot_download", snapshot_download)
    reloaded = hftl.load(LORA_REPO).eval()
    assert asked == [LORA_REPO]
    with torch.no_grad():
        expected = result.model.eval()(pixel_values=PIXELS).logits
        assert torch.allclose(reloaded(pixel_values=PIXELS).logits, expected, atol=1e-6)
        # and the local output dir gives the same model
        assert torch.allclose(
            hftl.load(result.output_dir).eval()(pixel_values=PIXELS).logits, expected, atol=1e-6
        )


def test_pushed_adapter_loads_by_repo_id_with_the_cards_snippets(lora_run, hub, tmp_path, monkeypatch):
    """The card's snippets, run as written: ``pipeline``, PEFT's ``AutoPeftModel`` and ``hftl.load`` of the repo
    id (served from a Hugging Face cache holding what was pushed) give the trained model and its labels, though
    the base had 7 labels and the repo's adapter carries a head for 3."""
    result, _ = lora_run
    cache_repo(hub, LORA_REPO, tmp_path / "hub-cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    card = hub.files(LORA_REPO)["README.md"].decode()
    assert (
        f'hftl.load("{LORA_REPO}")' in card
        and f'pipeline("image-classification", model="{LORA_REPO}")' in card
    )
    blocks = python_blocks(card)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    write_example_image(tmp_path / "example.jpg")
    with torch.no_grad():
        expected = result.model.eval()(pixel_values=PIXELS).logits
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        model = namespace["classify"].model if "classify" in namespace else namespace["model"]
        assert set(model.config.id2label.values()) == {"blue", "green", "red"}
        with torch.no_grad():
            assert torch.allclose(model.eval()(pixel_values=PIXELS).logits, expected, atol=1e-5)
    assert namespace["model"].__class__.__name__ == "PeftModel"


def test_merged_push_creates_merged_model_and_sends_no_adapter(lora_run, hub, tmp_path, monkeypatch):
    """Also the LFS route: weights go through the LFS batch API and a PUT, the rest inline in the commit."""
    result, _ = lora_run
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hub, "lfs_suffixes", (".safetensors",))
    folder = tmp_path / "run"
    shutil.copytree(result.output_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    assert not (folder / "merged").exists()
    pushed = push(folder, "tester/tiny-vit-merged", mode="merged")
    assert pushed.mode == "merged" and set(pushed.files) == MODEL_SET - REPORT_SET
    assert set(hub.files("tester/tiny-vit-merged")) == MODEL_SET - REPORT_SET
    puts = [r for r in hub.requests if r["method"] == "PUT"]
    assert len(puts) == 1 and "authorization" not in puts[0]["headers"]  # the storage URL gets no token
    served = write_repo(hub, "tester/tiny-vit-merged", tmp_path / "served")
    model = AutoModelForImageClassification.from_pretrained(served).eval()
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    with torch.no_grad():
        expected = result.model.eval()(pixel_values=PIXELS).logits
        assert torch.allclose(model(pixel_values=PIXELS).logits, expected, atol=1e-5)
    card = hub.files("tester/tiny-vit-merged")["README.md"].decode()
    assert "library_name: transformers" in card and 'pipeline("image-classification"' in card


def test_failed_push_keeps_the_run_and_its_retry_command_works(
    hub, vit_dir, image_folder, tmp_path, capfd, monkeypatch
):
    """No network (offline mode here): the run returns normally, nothing is lost, and the printed command,
    run once the Hub is reachable, publishes the full model."""
    out = tmp_path / "run dir"  # a space: the retry command must quote it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = quick_train(
        "image", "small_similar", vit_dir, image_folder, out, epochs=1, push_to_hub="tester/vit-head"
    )
    captured = capfd.readouterr()
    assert result.metrics["hub"]["ok"] is False and "OfflineModeIsEnabled" in result.metrics["hub"]["error"]
    retry = result.metrics["hub"]["retry"]
    assert retry == f"hftl push '{out}' --repo-id tester/vit-head"
    assert f"Retry with: {retry}" in captured.err and "Nothing was lost" in captured.err
    for name in ("model.safetensors", "config.json", "README.md", "metrics.json", "preprocessor_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "hub_push.json").read_text())["ok"] is False
    assert "tester/vit-head" not in hub.repos

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert cli_main(shlex.split(retry)[1:]) == 0
    assert set(hub.files("tester/vit-head")) == MODEL_SET
    assert json.loads((out / "hub_push.json").read_text())["ok"] is True
    assert FAKE_TOKEN not in capfd.readouterr().out


def test_refused_upload_is_a_push_error_with_the_retry_command(lora_run, hub, capsys):
    result, _ = lora_run
    hub.refuse.add("someone-else/model")
    with pytest.raises(PushError, match="403"):
        push(result.output_dir, "someone-else/model")
    outcome = publish(result.output_dir, "someone-else/model", private=True, mode="adapter")
    err = capsys.readouterr().err
    assert outcome["ok"] is False
    assert f"hftl push {result.output_dir} --repo-id someone-else/model --private --adapter-only" in err
    assert (result.output_dir / "adapter_model.safetensors").is_file()


def test_unreachable_hub_and_missing_token_are_push_errors(lora_run, hub, monkeypatch, tmp_path):
    result, _ = lora_run
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(PushError, match="ConnectError"):
        push(result.output_dir, "tester/anything")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(PushError, match="hf auth login"):
        push(result.output_dir, "tester/anything")


def test_private_flag_creates_a_private_repo(lora_run, hub):
    result, _ = lora_run
    push(result.output_dir, "tester/private-one", private=True)
    assert next(c for c in hub.created if c["repo_id"] == "tester/private-one")["visibility"] == "private"


def test_only_the_main_process_pushes(hub, tmp_path):
    class Config:
        push_to_hub = "tester/never"
        hub_private = False

    class Worker:
        is_main_process = False

    before = len(hub.requests)
    metrics: dict = {}
    publish_after_run(tmp_path, Config(), Worker(), metrics)
    assert len(hub.requests) == before and "hub" not in metrics and not (tmp_path / "hub_push.json").exists()


def test_torchrun_two_processes_share_the_work_and_push_once(hub, resnet_dir, image_folder, tmp_path):
    """Two CPU processes (gloo) split the batches, build the cut ResNet's feature cache once and both read it; only
    the main process saves and pushes."""
    out = tmp_path / "out"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": FAKE_TOKEN,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HOME": str(tmp_path),
    }
    args = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port(),
    ]
    # --strategy head: the textbook plan, a head on the cut network trained on cached features
    args += ["-m", "hftl.train", "--task", "image", "--case", "small_different", "--strategy", "head"]
    args += ["--model", str(resnet_dir), "--dataset", str(image_folder), "--output-dir", str(out)]
    args += ["--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--push-to-hub", "tester/resnet-ddp"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["global_step"] == 2 * 3  # 48 examples / (2 processes x batch 8) = 3 steps per epoch
    assert metrics["feature_cache"]["used"] and metrics["feature_cache"]["rows"]["train"] == 48
    assert done.stdout.count("Saved to") == 1
    assert_pipeline_uses_label_names(out)
    assert [c["repo_id"] for c in hub.created].count("tester/resnet-ddp") == 1
    assert [c["repo_id"] for c in hub.commits].count("tester/resnet-ddp") == 1
    assert done.stdout.count(f"Pushed the model ({len(MODEL_SET)} files)") == 1
    assert "model.safetensors" in hub.files("tester/resnet-ddp")
    assert FAKE_TOKEN not in done.stdout + done.stderr


def test_a_push_over_another_model_deletes_its_files_in_the_same_commit(lora_run, hub, tmp_path):
    """A full model pushed where a LoRA adapter was must not load as a mix of both: the adapter's files (and the
    earlier run's report) go in the same commit, with a note; the repo's other files stay; pushing the same thing
    again deletes nothing."""
    result, _ = lora_run
    folder = tmp_path / "run"
    shutil.copytree(result.output_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    repo = "tester/replaced"
    first = push(folder, repo)
    assert first.mode == "adapter" and not any("replaced" in note for note in first.notes)
    hub.repos[repo]["notes/howto.md"] = b"the owner's own file"
    second = push(folder, repo, mode="merged")
    assert set(hub.files(repo)) == (MODEL_SET - REPORT_SET) | {"notes/howto.md"}
    assert hub.commits[-1]["deleted"] == sorted(ADAPTER_SET - MODEL_SET | REPORT_SET)
    assert any("adapter_model.safetensors" in note and "history" in note for note in second.notes)
    assert second.removed == tuple(hub.commits[-1]["deleted"])
    served = write_repo(hub, repo, tmp_path / "served")
    loaded = hftl.load(served)
    assert type(loaded).__name__ == "ViTForImageClassification"  # no stale adapter applied over it
    with torch.no_grad():
        expected = result.model.eval()(pixel_values=PIXELS).logits
        assert torch.allclose(loaded.eval()(pixel_values=PIXELS).logits, expected, atol=1e-5)
    again = push(folder, repo, mode="merged")
    assert hub.commits[-1]["deleted"] == [] and not any("replaced" in note for note in again.notes)


def test_push_republishes_a_hub_repo_as_a_merged_model(lora_run, hub, monkeypatch, tmp_path):
    """`hftl push HUB_ID --merged`: the adapter is downloaded to a temporary folder, merged and pushed."""
    result, _ = lora_run

    def snapshot_download(repo_id, local_dir=None, **kwargs):
        return str(write_repo(hub, repo_id, Path(local_dir)))

    monkeypatch.setattr(hftl.outputs.download, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)  # LORA_REPO is no local path here
    assert cli_main(["push", LORA_REPO, "--repo-id", "tester/from-hub-merged", "--merged"]) == 0
    assert set(hub.files("tester/from-hub-merged")) == MODEL_SET - REPORT_SET
    served = write_repo(hub, "tester/from-hub-merged", tmp_path / "served")
    model = AutoModelForImageClassification.from_pretrained(served).eval()
    with torch.no_grad():
        expected = result.model.eval()(pixel_values=PIXELS).logits
        assert torch.allclose(model(pixel_values=PIXELS).logits, expected, atol=1e-5)


def test_cli_dry_run_lists_the_files_and_sends_nothing(lora_run, hub, capsys):
    result, _ = lora_run
    before = len(hub.requests)
    assert cli_main(["push", str(result.output_dir), "--repo-id", "tester/dry", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = {line.strip() for line in out.splitlines()[1:]}
    assert listed == ADAPTER_SET and len(hub.requests) == before


def test_cli_rejects_a_mode_that_does_not_fit_the_folder(hub, vit_dir, capsys):
    assert cli_main(["push", str(vit_dir), "--repo-id", "tester/x", "--merged"]) == 2
    err = capsys.readouterr().err
    assert "holds a full model, not a LoRA adapter" in err and "Traceback" not in err


def test_error_descriptions_mask_the_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    text = describe(RuntimeError(f"401 for header Authorization: Bearer {FAKE_TOKEN}\nmore"))
    assert FAKE_TOKEN not in text and text == "RuntimeError: 401 for header Authorization: Bearer ***"


def test_push_to_hub_repo_id_is_validated():
    with pytest.raises(hftl.ConfigError, match="invalid Hub repo id"):
        hftl.RunConfig(task="image", case="small_similar", push_to_hub="not/a/valid/id")


def test_load_of_an_unreachable_hub_id_is_a_clear_error():
    with pytest.raises(hftl.ModelError, match="no local folder, and the Hub could not provide it"):
        hftl.load("tester/not-downloaded-anywhere")


# --- helpers shared with test_card.py ------------------------------------------------------------------------
def cache_repo(hub: HubStandIn, repo_id: str, cache: Path) -> Path:
    """What the stand-in received for ``repo_id``, laid out as a Hugging Face cache snapshot: with
    ``HF_HUB_OFFLINE`` the stock loaders resolve the repo id to it, as they would after downloading it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    write_repo(hub, repo_id, repo / "snapshots")
    (repo / "snapshots" / repo_id.replace("/", "--")).rename(repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def python_blocks(card: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in card.splitlines():
        if line.strip() == "```python":
            inside, current = True, []
        elif line.strip() == "```" and inside:
            inside = False
            blocks.append("\n".join(current) + "\n")
        elif inside:
            current.append(line)
    return blocks


def write_example_image(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), (200, 40, 40), dtype=np.uint8)).save(path)
    return path


def _copy_run(result, folder: Path) -> Path:
    shutil.copytree(result.output_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("link", ["vocab.txt", "README.md", "merged"])
def test_push_never_reads_or_writes_through_a_link_that_leaves_the_folder(link, lora_run, hub, tmp_path):
    result, _ = lora_run
    folder = _copy_run(result, tmp_path / "run")
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("do not send or overwrite me")
    (folder / link).unlink(missing_ok=True)
    (folder / link).symlink_to(secret.parent if link == "merged" else secret)
    before = len(hub.requests)
    for dry_run in (True, False):
        mode = "merged" if link == "merged" else "auto"
        with pytest.raises(hftl.errors.ModelError, match=rf"{link} -> .*outside.* Replace each link"):
            push(folder, "tester/links", mode=mode, dry_run=dry_run)
    assert secret.read_text() == "do not send or overwrite me" and sorted(secret.parent.iterdir()) == [secret]
    assert len(hub.requests) == before
    assert cli_main(["push", str(folder), "--repo-id", "tester/links"]) == 2


def test_a_link_that_stays_inside_the_folder_is_fine(lora_run, hub, tmp_path):
    result, _ = lora_run
    folder = _copy_run(result, tmp_path / "run")
    (folder / "notes").mkdir()
    (folder / "notes" / "vocab.txt").write_text("a\nb\n")
    (folder / "vocab.txt").symlink_to(Path("notes") / "vocab.txt")
    assert "vocab.txt" in push(folder, "tester/inside", dry_run=True).files


@pytest.mark.parametrize("mode", ["auto", "merged"])
def test_dry_run_writes_nothing(mode, lora_run, hub, tmp_path):
    result, _ = lora_run
    folder = _copy_run(result, tmp_path / "run")
    (folder / "README.md").unlink()
    before = _tree(folder)
    pushed = push(folder, "tester/dry", mode=mode, dry_run=True)
    assert _tree(folder) == before and not (folder / "merged").exists()
    assert set(pushed.files) == (ADAPTER_SET if mode == "auto" else MODEL_SET - REPORT_SET)


def test_a_push_without_a_login_is_said_before_the_run_trains(monkeypatch, tmp_path):
    """The push is a run's last step: a missing token is said at the start, with the command that sends it later."""
    from hftl.outputs import hub as hub_module

    config = hftl.RunConfig(
        task="text", case="small_similar", output_dir=str(tmp_path / "run"), push_to_hub="me/model"
    )
    monkeypatch.setattr(hub_module, "get_token", lambda: None)
    warning = hub_module.token_warning(config)
    assert warning.startswith("--push-to-hub: no Hugging Face token") and "hftl push" in warning
    monkeypatch.setattr(hub_module, "get_token", lambda: "hf_token")
    assert hub_module.token_warning(config) is None
    assert hub_module.token_warning(config.replace(push_to_hub=None)) is None
