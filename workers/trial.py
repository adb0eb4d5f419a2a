"""Running one claimed trial: ask Optuna, run the task, tell Optuna, settle the lease."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from storage.budget import Claim, attach_trial, finish_lease, release_lease
from storage.optimizers import stream_seed
from storage.optuna_store import (
    ATTR_ATTEMPT,
    ATTR_ERROR,
    ATTR_FAIL_REASON,
    ATTR_RETRY_OF,
    ATTR_RETRY_ROOT,
    ATTR_SEED,
)
from storage.reaper import enqueue_retry
from storage.search_space import to_distributions
from storage.spec import StudySpec
from storage.tasks import get_declaration
from workers.context import TrialContext
from workers.heartbeat import CurrentTrial
from workers.outcome import TrialResult, run_task
from workers.slot_env import SlotEnv
from workers.tasks import load_builtin
from workers.tasks.custom import load_custom

logger = logging.getLogger(__name__)


def run_claim(env: SlotEnv, claim: Claim) -> TrialResult | None:
    """Run the trial of ``claim`` to its end; None when no trial could be asked."""
    spec = StudySpec.model_validate(claim.spec)
    try:
        trial = _ask(env, claim, spec)
    except Exception:
        logger.exception("could not start a trial of %s; handing the slot back", claim.study_name)
        env.retrying(lambda: _release(env, claim.lease_id))
        return None
    log = logging.LoggerAdapter(logger, {"study": claim.study_name, "trial": trial.number})
    ctx = _context(env, spec, trial, claim)
    env.heartbeat.current = CurrentTrial(claim.lease_id, claim.study_name, trial.number)
    log.info("trial %d of %s started on %s", trial.number, claim.study_name, env.device_label)
    try:
        with _trial_timer(env, spec):
            result = run_task(lambda: _task_function(env, spec)(ctx), ctx.objective_metrics)
    finally:
        env.heartbeat.current = None
    _settle(env, claim, spec, trial, result)
    log.info(
        "trial %d of %s: %s%s",
        trial.number,
        claim.study_name,
        result.outcome.state,
        f" ({result.outcome.fail_reason})" if result.outcome.fail_reason else "",
    )
    env.after_trial(claim, spec, trial, ctx, result)
    return result


def _ask(env: SlotEnv, claim: Claim, spec: StudySpec) -> optuna.Trial:
    study = env.study(claim, spec)
    with env.interrupter.critical():
        trial = study.ask(to_distributions(spec.search_space or {}))
        attrs = trial.user_attrs
        seed = attrs.get(ATTR_SEED)
        if seed is None:
            base = spec.sampler.seed
            seed = stream_seed(base, trial.number) if base is not None else random.randrange(2**31)
            trial.set_user_attr(ATTR_SEED, seed)
    retry_of = attrs.get(ATTR_RETRY_OF)
    attempt = int(attrs.get(ATTR_ATTEMPT, 0))
    env.retrying(lambda: _attach(env, claim, trial, retry_of, attempt))
    return trial


def _attach(
    env: SlotEnv, claim: Claim, trial: optuna.Trial, retry_of: int | None, attempt: int
) -> None:
    with env.db.session_scope() as session:
        attach_trial(
            session,
            claim.lease_id,
            trial_number=trial.number,
            optuna_trial_id=trial._trial_id,
            retry_of=retry_of,
            attempt=attempt,
        )


def _release(env: SlotEnv, lease_id: int) -> None:
    with env.db.session_scope() as session:
        release_lease(session, lease_id, "ask_failed")


def _context(env: SlotEnv, spec: StudySpec, trial: optuna.Trial, claim: Claim) -> TrialContext:
    declaration = get_declaration(spec.task.name)
    params = {**(declaration.defaults() if declaration else {}), **trial.params}
    root = trial.user_attrs.get(ATTR_RETRY_ROOT, trial.number)
    ctx = TrialContext(
        trial=trial,
        params=params,
        config=dict(spec.task.config),
        objective_metrics=[o.metric for o in spec.objective_list],
        seed=int(trial.user_attrs[ATTR_SEED]),
        device=env.device,
        work_dir=env.settings.trials_dir / spec.name / f"trial-{root:05d}",
        cache_dir=env.settings.data_dir / "cache",
        dataset_roots=env.settings.dataset_root_paths,
        critical=env.interrupter.critical,
        db_call=env.retrying,
    )
    ctx.report_hooks.append(lambda step, metrics: env.interrupter.check())
    env.prepare_context(ctx, spec, claim)
    return ctx


def _task_function(env: SlotEnv, spec: StudySpec) -> Callable[[TrialContext], Mapping[str, float]]:
    target = spec.task.python_target
    if target is not None:
        return load_custom(*target, env.settings.allowed_task_module_prefixes)
    return load_builtin(spec.task.name)


@contextmanager
def _trial_timer(env: SlotEnv, spec: StudySpec) -> Iterator[None]:
    """Arm the interrupter, with a timer for ``budget.trial_timeout_s``."""
    limit = spec.budget.trial_timeout_s
    timer = None
    if limit is not None:
        timer = threading.Timer(limit, env.interrupter.request, ("timeout",))
        timer.daemon = True
    with env.interrupter.armed():
        if timer is not None:
            timer.start()
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()


def _settle(
    env: SlotEnv, claim: Claim, spec: StudySpec, trial: optuna.Trial, result: TrialResult
) -> None:
    """Tell Optuna and settle the lease, retrying while a database is unavailable."""
    if result.lost:
        logger.warning(
            "trial %d of %s was taken over by the reaper", trial.number, claim.study_name
        )
        return
    study = env.study(claim, spec)
    # Told before the lease is settled, outside the study's row lock, so that
    # workers do not queue behind each other's Optuna writes. A reaper that
    # takes the lease meanwhile sees the told result and counts it.
    told = env.retrying(lambda: _tell(env, study, trial, result))

    def finish() -> bool:
        with env.db.session_scope() as session:
            return finish_lease(
                session,
                claim.lease_id,
                env.worker_id,
                study_id=claim.study_id,
                outcome=result.outcome,
                final_state=told,
                fail_fast_trials=env.settings.fail_fast_trials,
            )

    if not env.retrying(finish):
        logger.warning(
            "trial %d of %s: the lease was reaped before it finished",
            trial.number,
            claim.study_name,
        )


def _tell(env: SlotEnv, study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> str:
    """Tell Optuna once; a retried finish finds the trial already told."""
    storage = env.optuna_storage
    outcome = result.outcome
    state = TrialState[outcome.state]
    try:
        if outcome.state == "FAIL":
            storage.set_trial_user_attr(trial._trial_id, ATTR_FAIL_REASON, outcome.fail_reason)
            storage.set_trial_user_attr(trial._trial_id, ATTR_ERROR, outcome.error)
        values = result.values if state == TrialState.COMPLETE else None
        frozen = study.tell(trial.number, values, state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        frozen = storage.get_trial(trial._trial_id)
    if result.retry:
        attempt = int(frozen.user_attrs.get(ATTR_ATTEMPT, 0))
        enqueue_retry(storage, study.study_name, frozen, attempt)
    return frozen.state.name
