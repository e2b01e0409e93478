"""Model cards (README.md) that say what transfer was done, so a model on the Hub explains itself.

A card is built from the files a run leaves in OUTPUT_DIR (``run_config.yaml``, ``transfer_plan.json``,
``metrics.json``): Hub metadata through ``huggingface_hub.ModelCardData`` (base model, library, tags, dataset,
metrics, pipeline tag, eval results), then the task, the transfer case and plan, the training settings, the
validation metrics per epoch, the label names and a usage snippet that runs as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hftl.errors import ModelError, first_line
from hftl.outputs.artifacts import (
    BASE_CONFIG_DIR,
    CLASS_REPORT_FILE,
    CONFIG_FILE,
    CONFUSION_PNG,
    CURVE_PNG,
    MERGED_DIR,
    METRICS_FILE,
    PLAN_FILE,
    read_json_file,
    read_run_settings,
)
from hftl.outputs.card_usage import peft_snippet, pipeline_snippet, py_literal
from hftl.outputs.files import write_text
from hftl.sources.registry import looks_like_path
from hftl.tasks import Task, get_task
from hftl.transfer.plan import TransferPlan

CARD_FILE = "README.md"
CardKind = Literal["adapter", "merged", "full"]
# hftl's metric names -> the Hub's metric ids (metadata `metrics:` and model-index `type`)
HUB_METRIC_IDS = {"accuracy": "accuracy", "f1_macro": "f1", "f1_micro": "f1", "subset_accuracy": "accuracy"}


@dataclass(frozen=True)
class RunRecord:
    """What a finished run wrote about itself: settings, plan and metrics."""

    settings: dict[str, Any]
    plan: TransferPlan
    metrics: dict[str, Any]
    max_positions: int | None = None
    model_type: str | None = None

    @classmethod
    def read(cls, output_dir: Path) -> RunRecord:
        missing = [
            name for name in (CONFIG_FILE, PLAN_FILE, METRICS_FILE) if not (output_dir / name).is_file()
        ]
        if missing:
            raise ModelError(
                f"{output_dir} is not a finished hftl run: {', '.join(missing)} missing "
                "(a run writes them at its end; train with `hftl train ... --output-dir DIR` first)"
            )
        model_config = _model_config(output_dir)
        return cls(
            settings=read_run_settings(output_dir),
            plan=_plan(output_dir / PLAN_FILE),
            metrics=read_json_file(output_dir / METRICS_FILE),
            max_positions=model_config.get("max_position_embeddings"),
            model_type=model_config.get("model_type"),
        )

    @property
    def task(self) -> Task:
        return get_task(self.settings["task"])

    @property
    def multi_label(self) -> bool:
        return self.metrics.get("problem_type") == "multi_label_classification"

    @property
    def max_length(self) -> int:
        """Truncation length for text inputs: the run's ``max_length``, capped by the model's positions."""
        return min(self.settings.get("max_length") or 512, self.max_positions or 10**9)


def build_card(output_dir: str | Path, kind: CardKind, repo_id: str | None = None) -> ModelCard:
    """The card for the adapter, the merged model or the full model of the run in ``output_dir``. ``repo_id``
    is what the usage snippet loads; without it the snippet loads the local folder (so it runs as written)."""
    output_dir = Path(output_dir)
    record = RunRecord.read(output_dir)
    location = repo_id or str((output_dir / MERGED_DIR if kind == "merged" else output_dir).resolve())
    data = card_metadata(record, kind, repo_id or output_dir.resolve().name)
    base = record.settings.get("model") or ""
    sections = [
        f"# {repo_id or output_dir.resolve().name}",
        _summary(record, kind, base),
        _plan_section(record),
        _training_section(record),
        _metrics_section(record),
        _labels_section(record),
        *(report_section(output_dir) if kind != "merged" else []),  # merged pushes send no report files
        _usage_section(record, kind, location),
        _files_section(kind),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def write_cards(output_dir: str | Path, repo_id: str | None = None) -> list[Path]:
    """Write README.md into the run folder (and into ``merged/`` when it exists); returns the files written."""
    output_dir = Path(output_dir)
    kind: CardKind = "adapter" if (output_dir / "adapter_config.json").is_file() else "full"
    written = [output_dir / CARD_FILE]
    write_text(written[0], str(build_card(output_dir, kind, repo_id)))
    if kind == "adapter" and (output_dir / MERGED_DIR / "config.json").is_file():
        written.append(output_dir / MERGED_DIR / CARD_FILE)
        write_text(written[1], str(build_card(output_dir, "merged")))
    return written


def card_metadata(record: RunRecord, kind: CardKind, model_name: str) -> ModelCardData:
    """Hub metadata: Hub ids only (a local path is no valid ``base_model`` or ``datasets`` entry)."""
    settings, plan, task = record.settings, record.plan, record.task
    base_model = settings.get("model")
    dataset = settings.get("dataset")
    hub_dataset = dataset if is_hub_id(dataset) else None
    tags = ["hftl", "transfer-learning", plan.case.replace("_", "-"), plan.family, task.pipeline_tag]
    if plan.strategy == "lora":
        tags.append("lora")
    if plan.contrastive is not None:
        tags += ["few-shot", "contrastive"]
    metric_names = [
        key.removeprefix("eval_")
        for key in record.metrics.get("best", {})
        if key.startswith("eval_") and key != "eval_loss"
    ]
    # the Hub's results table: the test split's scores when the data had one, else the best validation epoch's
    test = record.metrics.get("test") or {}
    split, prefix, scores = (
        ("test", "test_", test) if test else ("validation", "eval_", record.metrics["best"])
    )
    eval_results = None
    if hub_dataset:
        eval_results = [
            EvalResult(
                task_type=task.pipeline_tag,
                dataset_type=hub_dataset,
                dataset_name=hub_dataset,
                dataset_config=settings.get("dataset_config"),
                dataset_split=split,
                metric_type=HUB_METRIC_IDS.get(name, name),
                metric_name=name,
                metric_value=scores[f"{prefix}{name}"],
            )
            for name in metric_names
            if f"{prefix}{name}" in scores
        ]
    return ModelCardData(
        base_model=base_model if is_hub_id(base_model) else None,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag=task.pipeline_tag,
        tags=tags,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=list(dict.fromkeys(HUB_METRIC_IDS.get(name, name) for name in metric_names)) or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def is_hub_id(name: Any) -> bool:
    """True for ``owner/name`` or ``name`` strings that are no local path (what Hub metadata may reference)."""
    if not isinstance(name, str) or not name or name.startswith("<") or ":" in name or looks_like_path(name):
        return False
    return not Path(name).expanduser().exists()


# --- body sections -------------------------------------------------------------------------------------------
def _summary(record: RunRecord, kind: CardKind, base: str) -> str:
    plan, task, metrics = record.plan, record.task, record.metrics
    what = {
        "adapter": "a PEFT LoRA adapter (with its new classification head)",
        "merged": "the LoRA adapter merged into its base model",
        "full": "a full model",
    }[kind]
    best = metrics.get("best", {})
    scores = ", ".join(
        f"{key.removeprefix('eval_')} {value:.4f}"
        for key, value in best.items()
        if key.startswith("eval_") and key != "eval_loss"
    )
    dataset = record.settings.get("dataset")
    multi = (
        f"- **multi-label**: any number of labels per input, each with its own sigmoid score; a label is "
        f"predicted above {metrics.get('threshold')}\n"
        if record.multi_label
        else ""
    )
    return (
        f"This is {what} for {task.pipeline_tag} (hftl task `{task.name}`), "
        f"transferred from `{base}` with hftl on `{dataset}`.\n\n"
        f"- transfer case: **{plan.case}**, strategy **{plan.strategy}**, init **{plan.init}**\n"
        f"{multi}"
        f"- best validation epoch {best.get('epoch')}: {scores or 'no metrics'}\n"
        f"- labels: {', '.join(metrics.get('labels', []))}"
    )


def _plan_section(record: RunRecord) -> str:
    plan, params = record.plan, record.metrics.get("parameters", {})
    rows = ["| block | kind | action | parameters |", "| --- | --- | --- | --- |"]
    rows += [
        f"| `{block.name}` | {block.kind} | {block.action} | {block.params:,} |" for block in plan.blocks
    ]
    share = ""
    if params.get("total"):
        share = (
            f"\n\nTrainable parameters: {params['trainable']:,} of {params['total']:,} "
            f"({params.get('percent', 100.0 * params['trainable'] / params['total']):.2f}%)."
        )
    kept = (
        f"the first {plan.keep_layers} of {plan.num_layers} {plan.layer_word}s were kept (the rest removed)"
        if plan.truncated
        else f"all {plan.num_layers} {plan.layer_word}s were kept"
        if plan.num_layers
        else f"no {plan.layer_word} stack (nothing to cut)"
    )
    why = "".join(f"\n- {reason}" for reason in plan.reasons)
    frozen = (
        "Frozen blocks were first tuned on sentence pairs of the training examples (stage 1, below), then "
        "frozen while the head trained"
        if plan.contrastive is not None
        else "Frozen blocks keep their pretrained weights"
    )
    return (
        f"## Transfer plan\n\nFrom `{plan.model}` ({plan.family}): {kept}. {frozen}; `lora` blocks are frozen "
        f"with trained low-rank adapters; `new` is the re-initialised head."
        f"\n\n" + "\n".join(rows) + share + (f"\n\nWhy:{why}" if why else "")
    )


def _training_section(record: RunRecord) -> str:
    settings, plan, metrics = record.settings, record.plan, record.metrics
    processes = metrics.get("num_processes", 1)
    rows = [
        ("dataset", f"`{settings.get('dataset')}`"),
        (
            "train / validation examples",
            f"{metrics.get('train_examples') or 'a stream'} / {metrics.get('validation_examples')}",
        ),
        ("epochs", settings.get("epochs"))
        if not settings.get("streaming")
        else (
            "optimizer steps",
            f"{settings.get('max_steps')} (streamed; an epoch is one evaluation period)",
        ),
        (
            "batch size",
            f"{settings.get('batch_size')} per device x {processes} process(es) x "
            f"{settings.get('gradient_accumulation_steps')} accumulation step(s)",
        ),
        (
            "learning rate",
            f"{plan.lr:g} ({settings.get('scheduler')} schedule, warmup {settings.get('warmup_ratio')})",
        ),
        ("weight decay", settings.get("weight_decay")),
        ("gradient clipping", settings.get("max_grad_norm")),
        (
            "label weights (BCE pos_weight)" if record.multi_label else "class weights",
            ", ".join(f"`{k}` {v:g}" for k, v in metrics["class_weights"].items())
            + f" (--class-weights {settings.get('class_weights')})"
            if metrics.get("class_weights")
            else "none",
        ),
        ("mixed precision", settings.get("mixed_precision") or "no"),
        ("seed", settings.get("seed")),
    ]
    if record.task.modality == "text":
        rows.append(("max length", settings.get("max_length")))
    if record.task.modality == "image":
        rows.append(("augmentation", settings.get("augment")))
    if plan.lora is not None:
        rows.append(
            (
                "LoRA",
                f"r={plan.lora.r}, alpha={plan.lora.alpha}, dropout={plan.lora.dropout}, "
                f"{len(plan.lora.target_modules)} target modules",
            )
        )
    if plan.contrastive is not None:
        rows.append(
            ("contrastive stage (before the head)", contrastive_text(plan, metrics.get("contrastive", {})))
        )
    rows.append(
        (
            "steps / training time",
            f"{metrics.get('global_step')} / {metrics.get('train_seconds')} s on {metrics.get('device')}",
        )
    )
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"## Training\n\n| setting | value |\n| --- | --- |\n{table}"


def contrastive_text(plan: TransferPlan, done: dict[str, Any]) -> str:
    """What stage 1 of ``--strategy contrastive`` did: the pairs, the loss, the settings."""
    spec = plan.contrastive
    assert spec is not None
    ran = (
        f"{done['pairs']} sentence pairs ({done['positive_pairs']} same-label), {done['steps']} steps in "
        f"{done['seconds']} s, "
        if done
        else ""
    )
    return (
        f"{ran}{spec.iterations} rounds of one same-label and one different-label partner per example, "
        f"{spec.loss} on {spec.pooling}-pooled embeddings, {spec.epochs} epoch(s), lr {spec.lr:g}, "
        f"batch {spec.batch_size}"
    )


def _metrics_section(record: RunRecord) -> str:
    history = record.metrics.get("history", [])
    if not history:
        return "## Validation metrics\n\nNo evaluation was recorded."
    names = [key for key in history[0] if key.startswith("eval_")]
    best_epoch = record.metrics.get("best", {}).get("epoch")
    header = "| epoch | step | " + " | ".join(name.removeprefix("eval_") for name in names) + " |"
    rows = [header, "|" + " --- |" * (len(names) + 2)]
    for entry in history:
        mark = " (best)" if entry.get("epoch") == best_epoch else ""
        values = " | ".join(f"{entry[name]:.4f}" if name in entry else "-" for name in names)
        rows.append(f"| {entry.get('epoch')}{mark} | {entry.get('step')} | {values} |")
    evaluation = record.metrics.get("evaluation", {})
    origin = f" ({evaluation['selection']})" if evaluation.get("selection") else ""
    text = (
        f"## Validation metrics\n\nPer epoch, on the validation split{origin}; the weights published here are "
        f"the best epoch's (by `{record.settings.get('metric_for_best')}`).\n\n" + "\n".join(rows)
    )
    test = record.metrics.get("test")
    if test:
        scores = ", ".join(
            f"{k.removeprefix('test_')} {v:.4f}" for k, v in test.items() if k.startswith("test_")
        )
        text += (
            f"\n\n## Test metrics\n\nThe test split ({test['examples']} examples), scored once with the published "
            f"weights; it was never used to choose them: {scores}."
        )
    return text


def report_section(output_dir: Path) -> list[str]:
    """Per-class scores on the validation split and the run report's plots, when the run wrote them."""
    path = output_dir / CLASS_REPORT_FILE
    if not path.is_file():
        return []
    report = read_json_file(path)
    rows = [
        f"| `{name}` | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1-score']:.4f} | {int(v['support'])} |"
        for name, v in report.items()
        if isinstance(v, dict) and "precision" in v and not name.endswith(" avg")
    ]
    kind = "label" if report.get("multi_label") else "class"
    threshold = f", labels predicted above {report['threshold']}" if report.get("multi_label") else ""
    text = (
        f"## Per-{kind} scores ({report.get('split', 'validation')} split, the published weights{threshold})\n\n"
        f"| {kind} | precision | recall | F1 | support |\n| --- | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
    )
    plots = [name for name in (CONFUSION_PNG, CURVE_PNG) if (output_dir / name).is_file()]
    if plots:
        text += "\n\n" + " ".join(
            f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in plots
        )
    return [text]


def _labels_section(record: RunRecord) -> str:
    labels = record.metrics.get("labels", [])
    return "## Labels\n\n" + "\n".join(f"- {i}: `{label}`" for i, label in enumerate(labels))


def _usage_section(record: RunRecord, kind: CardKind, location: str) -> str:
    task = record.task
    register = ""
    if str(record.model_type).startswith("hftl-"):  # hftl's own model type: transformers must learn it
        register = f"import hftl\n\nhftl.register_auto_classes()  # the {record.model_type} model type\n"
    every = f"top_k={len(record.metrics.get('labels', []))}" if record.multi_label else ""
    pipeline_code = register + pipeline_snippet(task, location, record.max_length, every)
    if kind != "adapter":
        return "## Usage\n\n```python\n" + pipeline_code + "```"
    return (
        "## Usage\n\nThe frozen base (this run's labels, truncation and head shape) is stored beside the LoRA "
        "adapter, so transformers (with PEFT installed) loads both:\n\n```python\n"
        + pipeline_code
        + "```\n\n"
        "With PEFT, as a `PeftModel` (PEFT warns that it found an adapter already: transformers attached this "
        "one while loading the base, and PEFT loads it again in its place):\n\n"
        "```python\n"
        + register
        + peft_snippet(
            task,
            location,
            record.max_length,
            record.metrics.get("threshold", 0.5) if record.multi_label else None,
        )
        + "```\n\n"
        "With hftl (a `PeftModel` too):\n\n```python\nimport hftl\n\n"
        f"model = hftl.load({py_literal(location)}).eval()\n```"
    )


def _files_section(kind: CardKind) -> str:
    weights = {
        "adapter": "`adapter_model.safetensors` + `adapter_config.json` (LoRA weights and the new head), "
        "`model.safetensors` + `config.json` (the frozen base the adapter was trained on, with this run's "
        "labels and truncation)",
        "merged": "`model.safetensors` + `config.json` (LoRA merged into the base weights)",
        "full": "`model.safetensors` + `config.json`",
    }[kind]
    return (
        f"## Files\n\n{weights}; the image processor or tokenizer; `run_config.yaml` (every setting of the run, "
        "for `hftl train --config run_config.yaml`), `transfer_plan.json` and `metrics.json`."
    )


def _model_config(output_dir: Path) -> dict[str, Any]:
    """The saved model's config.json (a LoRA run's frozen base; ``base_config/`` in older runs), or {}."""
    for config in (output_dir / "config.json", output_dir / BASE_CONFIG_DIR / "config.json"):
        if config.is_file():
            return read_json_file(config)
    return {}


def _plan(path: Path) -> TransferPlan:
    """A run's transfer_plan.json, a ModelError naming it where it is not the plan a run writes."""
    record = read_json_file(path)
    try:
        return TransferPlan.from_dict(record)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(
            f"{path}: not a transfer plan hftl wrote ({first_line(error)}): copy the run again"
        ) from error
