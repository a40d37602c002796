"""The study: Optuna proposes each trial's values, `dvc exp run` runs it, Optuna records its result.

Embedded by default: the study is a journal file in .search/ (git-ignored), beside the trials' logs. With
`--storage postgresql://...` many machines share one study (Optuna's RDB storage); a heartbeat marks a trial
whose machine died as failed after a minute, and its values are given to the next machine that asks.
"""

import sys
import time
import warnings
from pathlib import Path

from digitlab.shared.errors import UserError

import optuna
import sqlalchemy.exc
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from digitlab.search.space import Choice, Search
from digitlab.search.trials import describe, metric, push_experiment, run_trial

STATE_DIR = Path(".search")
HEARTBEAT_S = 20  # a running trial says it is alive this often, and is taken for dead after three silent ones


class TrialFailed(Exception):
    """A trial's `dvc exp run` failed: recorded as a failed trial, and the search goes on."""


def storage(url: str | None, study: str, heartbeat: int = HEARTBEAT_S):
    """Optuna's storage: a journal file in .search/ by default, or a database URL (PostgreSQL for many machines),
    where a trial silent for three heartbeats is failed and its values given to the next machine that asks."""
    if url is None:
        STATE_DIR.mkdir(exist_ok=True)
        return JournalStorage(JournalFileBackend(str(STATE_DIR / f"{study}.journal")))
    if url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "sqlite"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna 5 calls heartbeats so
        retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
        for attempt in range(3):
            try:
                return RDBStorage(
                    url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat, heartbeat_stale_trial_callback=retry
                )
            except ImportError as error:
                raise UserError(
                    f"--storage {url}: no database driver ({error}); install the postgres extra: "
                    "`uv sync --frozen --extra postgres`"
                ) from None
            except sqlalchemy.exc.SQLAlchemyError as error:
                # Machines started together all create Optuna's tables in an empty database: one wins, and
                # the others find the tables on their next try.
                if attempt == 2:
                    raise UserError(f"--storage {url}: {str(error).splitlines()[0]}") from None
                time.sleep(1 + attempt)
    raise UserError(
        f"--storage {url}: expected a database URL (postgresql://user@host/db), or none for the study in .search/"
    )


def sampler(search: Search, shared: bool) -> optuna.samplers.BaseSampler:
    """Optuna's TPE: it models good and bad trials apart and works from a handful of trials, where a Gaussian
    process needs PyTorch and grids or random search waste this machine's few trials (docs/search.md). Seeded
    for a study of one machine; in a shared one each machine draws its own, or all would propose alike."""
    return optuna.samplers.TPESampler(
        seed=None if shared else search.seed,
        multivariate=True,
        n_startup_trials=min(5, max(2, search.trials // 3)),
        constant_liar=True,
    )  # trials running elsewhere count as poor: propose apart


def suggest(trial: optuna.Trial, key: str, dimension) -> object:
    """The trial's value for one key of the search space, proposed by the sampler."""
    if isinstance(dimension, Choice):
        return trial.suggest_categorical(key, dimension.choices)
    if dimension.integer:
        return trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)


def open_study(search: Search, name: str, url: str | None, heartbeat: int = HEARTBEAT_S) -> optuna.Study:
    directions = [objective.direction for objective in search.objectives]
    study = optuna.create_study(
        study_name=name,
        storage=storage(url, name, heartbeat),
        sampler=sampler(search, url is not None),
        directions=directions,
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"the study {name} was made with other objectives; give another --study")
    return study


def finished(study: optuna.Study) -> tuple[int, int, int]:
    """Trials complete, trials whose run failed (not those interrupted or left by a dead machine), and trials
    running (on other machines too)."""
    trials = study.get_trials(deepcopy=False)
    complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
    failed = sum(trial.state == TrialState.FAIL and "error" in trial.user_attrs for trial in trials)
    return complete, failed, sum(trial.state == TrialState.RUNNING for trial in trials)


def best_line(study: optuna.Study, search: Search) -> str:
    best = study.best_trials
    if not best:
        return "no trial complete yet"
    if len(search.objectives) == 1:
        trial = best[0]
        return f"best {search.objectives[0].metric} {trial.values[0]:.5g} ({trial.user_attrs['experiment']})"
    return f"{len(best)} on the Pareto front"


def search_study(
    search: Search, name: str, url: str | None, progress=None, push: str | None = None, heartbeat: int = HEARTBEAT_S
) -> optuna.Study:
    """Run trials until `search.trials` are complete (as many more may fail); Ctrl-C stops cleanly. With `push`
    (a git remote), each complete trial's experiment is pushed there and to the DVC remote, for other machines."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module says what happened, a line per trial
    study = open_study(search, name, url, heartbeat)
    files = sorted({objective.file for objective in search.objectives})
    logs = STATE_DIR / name / "logs"
    durations: list[float] = []
    stopped: list[optuna.Trial] = []

    def objective(trial: optuna.Trial) -> list[float]:
        values = {key: suggest(trial, key, dimension) for key, dimension in search.space.items()}
        experiment = f"{name}-{trial.number}"
        trial.set_user_attr("experiment", experiment)
        print(f"search: trial {trial.number} ({experiment}) runs with {describe(values)}", flush=True)
        try:
            outcome = run_trial(experiment, {**search.fixed, **values, "seed": search.seed}, files, logs)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # Optuna then marks it failed
            stopped.append(trial)
            raise
        trial.set_user_attr("seconds", round(outcome.seconds, 1))
        if outcome.metrics is None:
            trial.set_user_attr("log", str(outcome.log))
            trial.set_user_attr("error", outcome.error)
            print(
                f"search: trial {trial.number} failed after {outcome.seconds:.0f} s: {outcome.error} "
                f"(log: {outcome.log})",
                flush=True,
            )
            raise TrialFailed(outcome.error)
        durations.append(outcome.seconds)
        values = [metric(outcome.metrics, o.file, o.metric) for o in search.objectives]
        if push:
            push_experiment(push, experiment)
        return values

    def after_each(study: optuna.Study, trial: FrozenTrial) -> None:
        complete, failed, running = finished(study)
        if trial.state == TrialState.COMPLETE:
            result = ", ".join(f"{o.metric} {v:.5g}" for o, v in zip(search.objectives, trial.values))
            left = (search.trials - complete) * sum(durations) / len(durations)
            print(
                f"search: trial {trial.number} {result} in {trial.user_attrs['seconds']:.0f} s; "
                f"{best_line(study, search)}; {complete} of {search.trials} complete, about "
                f"{left / 60:.0f} min left",
                flush=True,
            )
        if progress is not None:
            progress.update(complete - progress.n)
        # Trials running on other machines count: if they complete, the study has what it asked for.
        if complete + running >= search.trials or failed >= search.trials:
            study.stop()

    if url is not None:
        optuna.storages.fail_stale_trials(study)  # a dead machine's trial is not running: its values go again
    complete, failed, running = finished(study)
    interrupted = sum(bool(trial.user_attrs.get("interrupted")) for trial in study.get_trials(deepcopy=False))
    if complete >= search.trials:
        print(f"search: the study {name} has its {search.trials} complete trials already", flush=True)
        return study
    if complete + running >= search.trials:
        print(
            f"search: the study {name} has {complete} complete trials and {running} running elsewhere, of "
            f"{search.trials}",
            flush=True,
        )
        return study
    if complete or failed or interrupted:
        print(
            f"search: resuming the study {name}: {complete} complete, {failed} failed, {interrupted} interrupted",
            flush=True,
        )
    started = time.perf_counter()
    try:
        study.optimize(objective, callbacks=[after_each], catch=(TrialFailed,))
    except KeyboardInterrupt:
        for trial in stopped:  # run its values first when the search resumes
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            print(
                f"search: interrupted; trial {trial.number} ({trial.user_attrs['experiment']}) was stopped and "
                "marked failed, and its values come first when you run the same command again",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(130) from None
    complete, failed, _ = finished(study)
    print(
        f"search: {complete} trials complete, {failed} failed, in {(time.perf_counter() - started) / 60:.1f} min",
        flush=True,
    )
    return study
