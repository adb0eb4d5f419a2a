"""The shared training loop: schedules, batching, checkpoints, resume, pruning, OOM."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from workers.context import TrialContext
from workers.errors import OutOfMemory, TaskError
from workers.tasks import load_builtin
from workers.training import CHECKPOINT_DIR, MODEL_DIR, TrainSettings
from workers.training.batching import StepPlan, bucketed_batches, pad_sequences
from workers.training.checkpoint import Position, load_checkpoint, save_checkpoint
from workers.training.optim import build_optimizer, build_scheduler, lr_factor

ContextFactory = Callable[..., TrialContext]
ConfigFactory = Callable[..., dict[str, Any]]


class Interrupt(BaseException):
    """Stands in for a worker killed right after the first evaluation."""


def _record(ctx: TrialContext) -> list[tuple[int, dict[str, float]]]:
    reports: list[tuple[int, dict[str, float]]] = []
    ctx.report_hooks.append(lambda step, metrics: reports.append((step, dict(metrics))))
    return reports


def _settings(**overrides: Any) -> TrainSettings:
    values: dict[str, Any] = {"learning_rate": 1e-3, "batch_size": 4, "max_epochs": 1, "seed": 0}
    return TrainSettings(**{**values, **overrides})


def _tiny_model() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return BertForSequenceClassification(config)


# --- helpers beside the loop ---------------------------------------------------------


def test_schedules_warm_up_then_decay() -> None:
    def curve(schedule: str) -> list[float]:
        return [
            lr_factor(s, total_steps=100, warmup_steps=10, schedule=schedule) for s in range(100)
        ]

    linear, cosine, constant = curve("linear"), curve("cosine"), curve("constant")
    assert linear[:10] == sorted(linear[:10]) and 0 < linear[0] < 0.1
    assert linear[10] == cosine[10] == constant[10] == 1.0
    assert linear[-1] < 0.02 and cosine[-1] < 0.001 and constant[-1] == 1.0
    assert cosine[55] == pytest.approx(0.5, abs=0.02)
    assert linear[55] == pytest.approx(0.5, abs=0.02)


def test_weight_decay_spares_biases_and_layer_norms() -> None:
    model = _tiny_model()
    optimizer = build_optimizer(model, _settings(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(
        names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in plain["params"]
    )
    assert any("attention" in names[id(p)] for p in decayed["params"])
    assert not any(names[id(p)].endswith("bias") for p in decayed["params"])
    sgd = build_optimizer(model, _settings(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8


def test_settings_reject_nonsense() -> None:
    with pytest.raises(TaskError, match="optimizer"):
        _settings(optimizer="adagrad")
    with pytest.raises(TaskError, match="warmup_ratio"):
        _settings(warmup_ratio=1.5)
    with pytest.raises(TaskError, match="report_step"):
        _settings(report_step="epochs")


def test_bucketed_batches_cover_everything_with_little_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(2000)]
    batches = bucketed_batches(lengths, 16, seed=1)
    assert sorted(i for batch in batches for i in batch) == list(range(2000))
    assert batches == bucketed_batches(lengths, 16, seed=1)
    assert batches != bucketed_batches(lengths, 16, seed=2)

    def padding(batches: list[list[int]]) -> int:
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    shuffled = list(range(2000))
    random.Random(1).shuffle(shuffled)
    plain = [shuffled[i : i + 16] for i in range(0, 2000, 16)]
    assert padding(batches) < padding(plain) / 5
    # The order of batches carries no length trend (no accidental curriculum).
    trends = []
    for seed in range(20):
        means = [np.mean([lengths[i] for i in b]) for b in bucketed_batches(lengths, 16, seed=seed)]
        trends.append(np.corrcoef(np.arange(len(means)), means)[0, 1])
    assert abs(np.mean(trends)) < 0.1


def test_dynamic_padding() -> None:
    input_ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, multiple_of=4)
    assert input_ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_step_plan_with_accumulation_and_max_steps() -> None:
    lengths = [10] * 100  # 25 batches of 4
    plan = StepPlan(lengths, _settings(grad_accum_steps=3, max_epochs=2))
    steps = list(plan.steps())
    assert plan.steps_per_epoch == 9 and len(steps) == 18
    assert [len(s.micro_batches) for s in steps[:9]] == [3] * 8 + [1]
    assert steps[8].ends_epoch and steps[9].epoch == 1
    limited = StepPlan(lengths, _settings(grad_accum_steps=3, max_epochs=2, max_steps=11))
    assert [s.step for s in limited.steps()][-1] == 11
    resumed = list(plan.steps(from_epoch=0, from_step_in_epoch=5, done=5))
    assert resumed[0].step == 6 and resumed[0].micro_batches == steps[5].micro_batches


def test_checkpoint_round_trip_restores_state_and_rng(tmp_path: Path) -> None:
    model = _tiny_model()
    settings = _settings()
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings, total_steps=10)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([1])).loss.backward()
    optimizer.step()
    scheduler.step()
    folder = tmp_path / "checkpoint"
    save_checkpoint(
        folder,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        position=Position(7, 1, 2),
        fingerprint="run-a",
    )
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    fresh = _tiny_model()
    fresh_optimizer = build_optimizer(fresh, settings)
    fresh_scheduler = build_scheduler(fresh_optimizer, settings, total_steps=10)
    assert (
        load_checkpoint(
            folder,
            model=fresh,
            optimizer=fresh_optimizer,
            scheduler=fresh_scheduler,
            fingerprint="run-b",
        )
        is None
    )
    position = load_checkpoint(
        folder,
        model=fresh,
        optimizer=fresh_optimizer,
        scheduler=fresh_scheduler,
        fingerprint="run-a",
    )
    assert position == Position(7, 1, 2)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert torch.equal(fresh.classifier.weight, model.classifier.weight)
    assert fresh_scheduler.last_epoch == 1
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# --- the loop through the text-classification task -----------------------------------


def test_max_steps_eval_every_and_final_artifacts(
    make_context: ContextFactory, builtin_config: ConfigFactory, tiny_params: dict[str, Any]
) -> None:
    ctx = make_context(
        config=builtin_config(max_epochs=5, eval_every_steps=4, max_steps=10),
        params={
            **tiny_params,
            "grad_accum_steps": 2,
            "l1_penalty": 1e-5,
            "optimizer": "sgd",
            "lr_schedule": "cosine",
        },
    )
    reports = _record(ctx)
    metrics = load_builtin("text-classification")(ctx)
    assert [step for step, _ in reports] == [4, 8, 10]
    assert metrics["params_m"] == pytest.approx(0.1, rel=0.5)
    assert {"val_accuracy", "val_f1_macro", "val_loss", "train_loss"} <= set(metrics)
    assert ctx.model_dir == ctx.work_dir / MODEL_DIR
    assert not (ctx.work_dir / CHECKPOINT_DIR).exists()
    assert ctx.info["n_train"] == 400 and ctx.info["num_labels"] == 2


def test_steps_can_be_reported_as_examples_seen(
    make_context: ContextFactory, builtin_config: ConfigFactory, tiny_params: dict[str, Any]
) -> None:
    # Trials with different batch sizes are then compared after the same data.
    ctx = make_context(
        config=builtin_config(
            max_epochs=5, eval_every_steps=4, max_steps=10, report_step="examples"
        ),
        params={**tiny_params, "grad_accum_steps": 2},
    )
    reports = _record(ctx)
    load_builtin("text-classification")(ctx)
    per_step = int(tiny_params["batch_size"]) * 2
    assert [step for step, _ in reports] == [4 * per_step, 8 * per_step, 10 * per_step]


def test_l1_penalty_shrinks_weights(
    make_context: ContextFactory,
    builtin_config: ConfigFactory,
    tiny_params: dict[str, Any],
    tmp_path: Path,
) -> None:
    def weight_l1(penalty: float) -> float:
        ctx = make_context(
            config=builtin_config(max_steps=15),
            params={**tiny_params, "l1_penalty": penalty, "weight_decay": 0.0},
            work_dir=tmp_path / f"l1-{penalty}",
        )
        load_builtin("text-classification")(ctx)
        model = BertForSequenceClassification.from_pretrained(ctx.work_dir / MODEL_DIR)
        return sum(float(p.detach().abs().sum()) for p in model.parameters() if p.dim() >= 2)

    assert weight_l1(1e-3) < 0.9 * weight_l1(0.0)


def test_out_of_memory_becomes_a_task_error(
    make_context: ContextFactory,
    builtin_config: ConfigFactory,
    tiny_params: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(BertForSequenceClassification, "forward", forward)
    ctx = make_context(config=builtin_config(max_steps=3), params=tiny_params)
    with pytest.raises(OutOfMemory, match=r"out of memory.*batch_size=32.*2\.00 GiB"):
        load_builtin("text-classification")(ctx)


def test_interrupted_run_resumes_from_its_checkpoint(
    make_context: ContextFactory,
    builtin_config: ConfigFactory,
    tiny_params: dict[str, Any],
    tmp_path: Path,
) -> None:
    config = builtin_config(max_epochs=2, eval_every_steps=8)  # 13 steps an epoch, 26 in all
    run = load_builtin("text-classification")

    uninterrupted = make_context(config=config, params=tiny_params, work_dir=tmp_path / "a")
    expected = run(uninterrupted)

    first = make_context(config=config, params=tiny_params, work_dir=tmp_path / "b")

    def crash(step: int, metrics: Any) -> None:
        raise Interrupt(f"killed after step {step}")

    first.report_hooks.append(crash)
    with pytest.raises(Interrupt, match="after step 8"):
        run(first)
    assert (tmp_path / "b" / CHECKPOINT_DIR).is_dir()
    assert not (tmp_path / "b" / MODEL_DIR).exists()

    retry = make_context(config=config, params=tiny_params, work_dir=tmp_path / "b")
    reports = _record(retry)
    resumed = run(retry)
    assert [step for step, _ in reports] == [16, 24, 26]
    # Same weights, optimizer, schedule, batches and RNG: the same result as without the crash.
    assert resumed["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4)
    assert resumed["val_accuracy"] == expected["val_accuracy"]
    model_dir = tmp_path / "b" / MODEL_DIR
    assert retry.model_dir == model_dir
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert not (tmp_path / "b" / CHECKPOINT_DIR).exists()


def test_absurd_learning_rate_is_pruned(
    make_context: ContextFactory,
    builtin_config: ConfigFactory,
    tiny_params: dict[str, Any],
) -> None:
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2)
    )
    config = builtin_config(n_train=8000, n_validation=200, max_steps=250, eval_every_steps=50)
    run = load_builtin("text-classification")
    for seed in (0, 1):
        ctx = make_context(config=config, params=tiny_params, study=study, seed=seed)
        study.tell(ctx.trial, run(ctx)["val_accuracy"])
    good = [t.intermediate_values for t in study.trials]
    assert all(values[250] > 0.6 for values in good), good

    absurd = make_context(
        config=config, params={**tiny_params, "learning_rate": 10.0}, study=study, seed=2
    )
    reports = _record(absurd)
    with pytest.raises(optuna.TrialPruned):
        run(absurd)
    assert reports, "pruned only after an evaluation"
    assert all(math.isnan(m["val_accuracy"]) or m["val_accuracy"] < 0.6 for _, m in reports)
    assert not (absurd.work_dir / CHECKPOINT_DIR).exists()


def test_the_final_evaluation_is_never_pruned(
    make_context: ContextFactory, builtin_config: ConfigFactory, tiny_params: dict[str, Any]
) -> None:
    # A pruner that prunes every report: only the evaluations before the last can stop it.
    everything = optuna.pruners.ThresholdPruner(lower=2.0)
    config = builtin_config(max_epochs=5, eval_every_steps=4, max_steps=8)
    study = optuna.create_study(direction="maximize", pruner=everything)
    early = make_context(config=config, params=tiny_params, study=study)
    with pytest.raises(optuna.TrialPruned):
        load_builtin("text-classification")(early)
    assert early.trial.study.trials[-1].intermediate_values.keys() == {4}

    only_final = make_context(config=builtin_config(max_steps=3), params=tiny_params, study=study)
    metrics = load_builtin("text-classification")(only_final)
    assert only_final.model_dir is not None and "val_accuracy" in metrics
    assert not only_final.should_prune()
