"""Running one claimed trial: ask Optuna, run the task, tell Optuna, settle the lease."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from storage.budget import (
    Claim,
    attach_trial,
    claim_after_finish,
    fail_study,
    finish_lease,
    lease_fail_reason,
    lock_study,
    release_lease,
)
from storage.halving import is_resumable, promote
from storage.optuna_asks import ask_trial, asking, suggest, tell_trial
from storage.optuna_store import (
    ATTR_ATTEMPT,
    ATTR_ERROR,
    ATTR_FAIL_REASON,
    ATTR_LEASE,
    ATTR_RETRY_OF,
    folder_root,
    study_id_of,
    trial_id_of,
)
from storage.orphans import fail_orphan
from storage.paths import trial_folder
from storage.reaper import enqueue_retry
from storage.search_space import to_distributions
from storage.seeds import new_trial_seed_attrs, trial_seed
from storage.spec import StudySpec
from storage.states import FailReason
from storage.stopping import Usage
from storage.tasks import get_declaration
from workers.context import TrialContext
from workers.heartbeat import CurrentTrial
from workers.outcome import TrialResult, lost, run_task
from workers.slot_env import FinishedTrial, SlotEnv
from workers.tasks import load_builtin
from workers.tasks.custom import load_custom

logger = logging.getLogger(__name__)


class LeaseTaken(Exception):
    """The lease was reaped while this worker was stopped; its trial must not run."""


def run_claim(env: SlotEnv, claim: Claim) -> TrialResult | None:
    """Run the trial of ``claim`` to its end; None when no trial could be asked."""
    spec = StudySpec.model_validate(claim.spec)
    # The lease is kept alive from its claim on (loading a study can take a while).
    env.heartbeat.current = CurrentTrial(claim.lease_id, claim.study_name)
    try:
        trial = _ask(env, claim, spec)
    except LeaseTaken:
        env.heartbeat.current = None
        logger.warning("the slot of %s was reaped before its trial started", claim.study_name)
        return None
    except Exception:
        env.heartbeat.current = None
        logger.exception("could not start a trial of %s; handing the slot back", claim.study_name)
        env.retrying(lambda: _release(env, claim))
        return None
    log = logging.LoggerAdapter(logger, {"study": claim.study_name, "trial": trial.number})
    ctx = _context(env, spec, trial, claim)
    started = time.monotonic()

    def usage() -> Usage:
        # One device per slot: the task's wall time is its device time.
        return Usage(time.monotonic() - started, ctx.train_examples)

    env.heartbeat.current = CurrentTrial(claim.lease_id, claim.study_name, trial.number, usage)
    log.info("trial %d of %s started on %s", trial.number, claim.study_name, env.device_label)
    try:
        with _trial_timer(env, spec):
            result = run_task(lambda: _task_function(env, spec)(ctx), ctx.objective_metrics)
    finally:
        env.heartbeat.current = None
    used = usage()
    ctx.set_info(compute_s=round(used.compute_s, 3), train_examples=used.train_examples)
    result = _settle(env, claim, spec, trial, result, usage=used)
    following = env.next_claim  # claimed with the settlement: alive until its trial starts
    if following is not None:
        env.heartbeat.current = CurrentTrial(following.lease_id, following.study_name)
    log.info(
        "trial %d of %s: %s%s%s",
        trial.number,
        claim.study_name,
        result.outcome.state.name,
        f" ({result.outcome.fail_reason})" if result.outcome.fail_reason else "",
        _values_text(spec, result.values),
    )
    env.after_trial(FinishedTrial(claim, spec, trial, ctx, result))
    return result


def _values_text(spec: StudySpec, values: list[float] | None) -> str:
    """`` val_accuracy=0.8312``: the result, so that a worker's log shows how trials did."""
    if not values:
        return ""
    metrics = [o.metric for o in spec.objective_list]
    return " " + " ".join(f"{m}={v:.6g}" for m, v in zip(metrics, values, strict=False))


def _ask(env: SlotEnv, claim: Claim, spec: StudySpec) -> optuna.Trial:
    study = env.study(claim, spec)
    if study_id_of(study) != claim.optuna_study_id:
        # Another Optuna study took the name (the first one was deleted behind the service).
        raise LookupError(MISSING_OPTUNA_STUDY)
    if is_resumable(study.pruner):
        env.retrying(lambda: _promote_paused(env, claim, study))
    with env.interrupter.critical():
        # The lease first (a new trial is created with it), so that a trial whose
        # worker dies from here on is known to be this lease's (storage.orphans);
        # the parameters are suggested after.
        attrs = {ATTR_LEASE: claim.lease_id, **new_trial_seed_attrs(spec.sampler.seed)}
        with asking(study):
            trial = ask_trial(study, attrs)
            for name, distribution in to_distributions(spec.search_space or {}).items():
                suggest(trial, name, distribution)
        attrs = trial.user_attrs
    retry_of = attrs.get(ATTR_RETRY_OF)
    attempt = int(attrs.get(ATTR_ATTEMPT, 0))
    if not env.retrying(lambda: _attach(env, claim, trial, retry_of, attempt)):
        frozen = env.optuna_storage.get_trial(trial_id_of(trial))
        why = "its lease was reaped before the trial was recorded on it"
        env.retrying(lambda: fail_orphan(env.optuna_storage, claim.study_name, frozen, why))
        raise LeaseTaken(claim.lease_id)
    return trial


def _promote_paused(env: SlotEnv, claim: Claim, study: optuna.Study) -> None:
    """Enqueue the continuation of a paused trial that now ranks among the best.

    Under the study's row lock, so that two workers never promote one trial.
    """
    with env.db.session_scope() as session:
        if lock_study(session, claim.study_id) is None:
            return
        parent = promote(study, claim.spec.get("sampler", {}).get("seed"))
    if parent is not None:
        logger.info(
            "trial %d of %s promoted: it goes on from its checkpoint", parent, study.study_name
        )


def _attach(
    env: SlotEnv, claim: Claim, trial: optuna.Trial, retry_of: int | None, attempt: int
) -> bool:
    with env.db.session_scope() as session:
        return attach_trial(
            session,
            claim.lease_id,
            env.worker_id,
            trial_number=trial.number,
            optuna_trial_id=trial_id_of(trial),
            retry_of=retry_of,
            attempt=attempt,
        )


def _release(env: SlotEnv, claim: Claim) -> None:
    """Hand the slot back; a study whose Optuna study is gone is failed instead of retried."""
    missing = not _optuna_study_exists(env, claim)
    with env.db.session_scope() as session:
        release_lease(session, claim.lease_id, FailReason.ASK_FAILED)
        if missing and fail_study(session, claim.study_id, MISSING_OPTUNA_STUDY):
            logger.error("study %s failed: %s", claim.study_name, MISSING_OPTUNA_STUDY)


# A trial that trains until a plateau sees at most this share of an examples budget.
TRIAL_SHARE_OF_BUDGET = 8
MISSING_OPTUNA_STUDY = "its Optuna study no longer exists (deleted outside the service)"


def _optuna_study_exists(env: SlotEnv, claim: Claim) -> bool:
    try:
        return env.optuna_storage.get_study_name_from_id(claim.optuna_study_id) == claim.study_name
    except KeyError:
        return False


def _context(env: SlotEnv, spec: StudySpec, trial: optuna.Trial, claim: Claim) -> TrialContext:
    declaration = get_declaration(spec.task.name)
    params = {**(declaration.defaults() if declaration else {}), **trial.params}
    ctx = TrialContext(
        trial=trial,
        params=params,
        config=dict(spec.task.config),
        objective_metrics=[o.metric for o in spec.objective_list],
        seed=trial_seed(trial, spec.sampler.seed) or 0,
        device=env.device,
        work_dir=trial_folder(env.settings.trials_dir, spec.name, folder_root(trial)),
        cache_dir=env.settings.data_dir / "cache",
        dataset_roots=env.settings.dataset_root_paths,
        critical=env.interrupter.critical,
        db_call=env.retrying,
        keep_checkpoint_when_pruned=is_resumable(env.study(claim, spec).pruner),
        max_trial_examples=trial_examples_share(spec),
    )
    ctx.report_hooks.append(lambda step, metrics: env.interrupter.check())
    ctx.save_checks.append(lambda: _check_still_ours(env))
    env.prepare_context(ctx, spec, claim)
    return ctx


def trial_examples_share(spec: StudySpec) -> int | None:
    """The most examples one trial that trains until a plateau may see: an eighth
    of the study's ``max_train_examples``, so the budget buys several trials."""
    budget = spec.budget.max_train_examples
    return None if budget is None else max(1, budget // TRIAL_SHARE_OF_BUDGET)


def _check_still_ours(env: SlotEnv) -> None:
    """A heartbeat now, not at the next beat: a worker that was stopped past the
    grace period finds out before it writes over the retry's trial folder."""
    env.heartbeat.beat()
    env.interrupter.check()


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
        timer = threading.Timer(limit, env.interrupter.request, (FailReason.TIMEOUT,))
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
    env: SlotEnv,
    claim: Claim,
    spec: StudySpec,
    trial: optuna.Trial,
    result: TrialResult,
    *,
    usage: Usage,
) -> TrialResult:
    """Tell Optuna and settle the lease, retrying while a database is unavailable.

    Returns the result as it stands: a lost one when the reaper took the
    trial over before this worker's result was recorded.
    """
    if result.lost:
        logger.warning(
            "trial %d of %s was taken over by the reaper", trial.number, claim.study_name
        )
        return result
    study = env.study(claim, spec)
    # Told before the lease is settled, outside the study's row lock, so that
    # workers do not queue behind each other's Optuna writes. A reaper that
    # takes the lease meanwhile sees the told result and counts it.
    try:
        told = env.retrying(lambda: _tell(env, study, trial, result, spec.sampler.seed))
    except KeyError:
        logger.error("trial %d of %s: %s", trial.number, claim.study_name, MISSING_OPTUNA_STUDY)
        env.retrying(lambda: _release(env, claim))
        return _lost_result()

    def finish() -> bool:
        request = env.claim_request() if env.claim_request is not None else None
        with env.db.session_scope() as session:
            done = finish_lease(
                session,
                claim.lease_id,
                env.worker_id,
                study_id=claim.study_id,
                outcome=result.outcome,
                final_state=told,
                fail_fast_trials=env.settings.fail_fast_trials,
                usage=usage,
                value=result.values[0] if result.values and len(result.values) == 1 else None,
                notify=request is None,
            )
            # The next slot in the same transaction (the runner takes it from env).
            env.next_claim = (
                claim_after_finish(session, claim.study_id, request)
                if done and request is not None
                else None
            )
            return done

    if env.retrying(finish):
        return result
    logger.warning(
        "trial %d of %s: the lease was reaped before it finished", trial.number, claim.study_name
    )
    if env.retrying(lambda: _reaped_as_lost(env, claim.lease_id)):
        return _lost_result()
    return result  # the reaper counted the result this worker told


def _reaped_as_lost(env: SlotEnv, lease_id: int) -> bool:
    with env.db.session_scope(read_only=True) as session:
        return lease_fail_reason(session, lease_id) == FailReason.LOST


def _lost_result() -> TrialResult:
    return lost("the trial was taken over by the reaper")


def _tell(
    env: SlotEnv,
    study: optuna.Study,
    trial: optuna.Trial,
    result: TrialResult,
    spec_seed: int | None,
) -> TrialState:
    """Tell Optuna once; a retried finish finds the trial already told."""
    storage = env.optuna_storage
    outcome = result.outcome
    try:
        if outcome.state == TrialState.FAIL:
            storage.set_trial_user_attr(trial_id_of(trial), ATTR_FAIL_REASON, outcome.fail_reason)
            storage.set_trial_user_attr(trial_id_of(trial), ATTR_ERROR, outcome.error)
        values = result.values if outcome.state == TrialState.COMPLETE else None
        told = tell_trial(study, trial, values, outcome.state)
    except optuna.exceptions.UpdateFinishedTrialError:
        told = storage.get_trial(trial_id_of(trial)).state
    if result.retry:
        attempt = int(trial.user_attrs.get(ATTR_ATTEMPT, 0))
        frozen = storage.get_trial(trial_id_of(trial))
        enqueue_retry(storage, study.study_name, frozen, attempt, base_seed=spec_seed)
    return told
