"""`backprop jobs ...`, `backprop sweeps ...` and `backprop datasets ...`: the service from a terminal, through the SDK.

They talk to BACKPROP_URL (default http://127.0.0.1:8000) with BACKPROP_API_KEY, or --url and
--api-key after `jobs`/`datasets`. Every command takes `-o/--output table|json`: json prints the
API's answer on stdout for scripts. `jobs submit --wait` and `jobs watch` draw a progress bar on
stderr from the job's event stream and exit with the job's outcome (`sweeps submit --wait`
polls the sweep, printing its trial counts, and exits with the sweep's):

    0  succeeded       3  failed       4  cancelled
    1  the request failed (the server's message is printed)     2  a usage error

`jobs download` writes the model to --out/-O PATH (default ./model-<id>.npz; --part encoder: an
autoencoder's encoder, ./encoder-<id>.npz); -o stays the output format. `jobs history --fold K`
shows one fold of a cross-validated job.
"""
from __future__ import annotations

import functools
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from service.client import DEFAULT_URL, ENV_API_KEY, ENV_URL, BackpropError, Client, InvalidRequest
from service.specs import JobPublic, SweepPublic, TrialPublic

EXIT_ERROR, EXIT_FAILED, EXIT_CANCELLED = 1, 3, 4
OUTCOME_EXIT = {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
OUTPUTS = ("table", "json")

jobs_app = typer.Typer(help="training jobs: submit, list, show, history, watch, cancel, download", no_args_is_help=True)
datasets_app = typer.Typer(help="datasets: upload, list, show", no_args_is_help=True)
sweeps_app = typer.Typer(help="hyperparameter sweeps: submit, list, show, cancel", no_args_is_help=True)

# piped (a script, a file): never cut a line; in a terminal, its width
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)
stderr = Console(stderr=True, highlight=False)


def _connection(ctx: typer.Context,
                url: Annotated[str, typer.Option(envvar=ENV_URL, help="the API's base URL")] = DEFAULT_URL,
                api_key: Annotated[Optional[str], typer.Option(envvar=ENV_API_KEY, show_default=False,
                                                               help="an API key (bpk_...)")] = None) -> None:
    ctx.obj = {"url": url, "api_key": api_key}


jobs_app.callback()(_connection)
datasets_app.callback()(_connection)
sweeps_app.callback()(_connection)


def _output(value: str) -> str:
    if value not in OUTPUTS:
        raise typer.BadParameter(f"{value!r} is not a format: use table or json (to choose where "
                                 "`jobs download` saves the model, use --out/-O PATH)")
    return value


Output = Annotated[str, typer.Option("--output", "-o", callback=_output, help="table or json (on stdout)")]
PARTS = ("model", "encoder")  # GET /v1/jobs/{id}/model?part=


def _part(value: str) -> str:
    if value not in PARTS:
        raise typer.BadParameter(f"{value!r} is not a part: use model or encoder")
    return value


def client_command(app: typer.Typer, name: str, help: str):
    """Register a command taking `bp: Client` first (built from the group's options); a refused
    request prints the server's message on stderr and exits 1."""

    def register(function: Callable[..., Any]):
        @functools.wraps(function)
        def command(ctx: typer.Context, *args, **kwargs):
            try:
                with Client(ctx.obj["url"], api_key=ctx.obj["api_key"] or "") as bp:
                    return function(bp, *args, **kwargs)
            except InvalidRequest as error:
                lines = [f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in error.errors]
                stderr.print(f"error: {error.status}: " + ("\n  ".join(["", *lines]) if lines else error.message),
                             markup=False)
                raise typer.Exit(EXIT_ERROR) from None
            except BackpropError as error:
                stderr.print(f"error: {error}", markup=False)
                raise typer.Exit(EXIT_ERROR) from None

        # typer reads the signature: the command takes the context where the function takes `bp`
        signature = inspect.signature(function, eval_str=True)
        parameters = list(signature.parameters.values())[1:]
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        command.__signature__ = signature.replace(parameters=[context, *parameters])
        del command.__wrapped__
        app.command(name, help=help)(command)
        return function

    return register


def emit(value: Any) -> None:
    """JSON on stdout: a model, a list of models, or plain data."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in value]
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def folds_line(job: JobPublic) -> str | None:
    """A cross-validated job's estimate: `3 folds, val_acc 0.9533 ± 0.0189` (folds done so far until then)."""
    summary = job.cross_validation
    if summary is None:
        return None
    if summary.mean is None:
        return f"{len(summary.folds)} of {job.spec.cross_validation.folds} folds done"
    name = "val_accuracy" if "val_accuracy" in summary.mean else "val_loss"
    label = "val_acc" if name == "val_accuracy" else name
    return (f"{len(summary.folds)} folds, {label} {_number(summary.mean.get(name))} ± {_number(summary.std.get(name))}, "
            f"refit {summary.refit_epochs} epochs")


def best_metric(job: JobPublic) -> str:
    best = job.best_metrics
    if best is None:
        return "-"
    if best.val_accuracy is not None:
        return f"val_acc {best.val_accuracy:.4f}"
    if best.val_loss is not None:
        return f"val_loss {best.val_loss:.4g}"
    return f"loss {_number(best.train_loss)}"


def summary(job: JobPublic) -> str:
    reason = f" ({job.stop_reason})" if job.stop_reason else ""
    text = f"job {job.id} {job.status}{reason}, epoch {job.progress.epoch}/{job.progress.epochs}"
    if job.best_epoch is not None:
        text += f", best epoch {job.best_epoch}: {best_metric(job)}"
    if job.error:
        text += f"\nerror: {job.error}"
    return text


# ---------------------------------------------------------------- jobs


def spec_loader():
    """YAML's safe loader, reading `1e-4` as a number as JSON (and YAML 1.2) do, not as text."""
    import yaml

    class SpecLoader(yaml.SafeLoader):
        pass

    SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return SpecLoader


def load_spec(path: Path) -> dict:
    """A job (or sweep) spec from .json, .yaml/.yml, or - (stdin, JSON or YAML)."""
    import yaml

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="SPEC") from None
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=spec_loader())
    except (ValueError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}",
                                 param_hint="SPEC") from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(f"{path} must hold one object (the job spec)", param_hint="SPEC")
    return spec


def follow(bp: Client, job: JobPublic) -> JobPublic:
    """Draw the job's progress on stderr from its event stream until it ends; returns the finished job."""
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
               TextColumn("{task.fields[losses]}"), TextColumn("ETA"), TimeRemainingColumn())
    finished = job
    with Progress(*columns, console=stderr) as progress:
        task = progress.add_task(f"{job.name or job.id[:8]} {job.status}", total=job.progress.epochs,
                                 completed=job.progress.epoch, losses="")
        for event in bp.events(job.id):
            if event.event == "epoch":
                metrics = event.data
                losses = f"train {_number(metrics.train_loss)}"
                if metrics.val_loss is not None:
                    losses += f"  val {_number(metrics.val_loss)}"
                progress.update(task, completed=metrics.epoch, losses=losses)
            else:
                finished = event.data
                progress.update(task, description=f"{finished.name or finished.id[:8]} {finished.status}")
    return finished


def outcome(job: JobPublic, output: str) -> None:
    emit(job) if output == "json" else stdout.print(summary(job), markup=False)
    raise typer.Exit(OUTCOME_EXIT.get(job.status, EXIT_ERROR))


@client_command(jobs_app, "submit", "submit a job spec (.json, .yaml or - for stdin); --wait follows it to the end")
def jobs_submit(bp: Client, spec: Annotated[Path, typer.Argument(help="the job spec file")],
                wait: Annotated[bool, typer.Option("--wait", help="follow the job; exit 0/3/4 as it succeeds, "
                                                   "fails or is cancelled")] = False,
                output: Output = "table") -> None:
    job = bp.submit_job(load_spec(spec))
    if not wait:
        emit(job) if output == "json" else stdout.print(f"submitted job {job.id} ({job.status})", markup=False)
        return
    stderr.print(f"submitted job {job.id}", markup=False)
    outcome(follow(bp, job), output)


@client_command(jobs_app, "watch", "follow a job's progress until it ends; exit 0/3/4 as it succeeds, fails or is cancelled")
def jobs_watch(bp: Client, job_id: Annotated[str, typer.Argument(metavar="ID")], output: Output = "table") -> None:
    outcome(follow(bp, bp.get_job(job_id)), output)


@client_command(jobs_app, "list", "list your jobs, newest first")
def jobs_list(bp: Client,
              status: Annotated[Optional[str], typer.Option(help="queued, running, succeeded, failed or cancelled")] = None,
              tag: Annotated[Optional[str], typer.Option()] = None,
              name: Annotated[Optional[str], typer.Option()] = None,
              dataset: Annotated[Optional[str], typer.Option(help="a dataset id, e.g. builtin:digits")] = None,
              sweep: Annotated[Optional[str], typer.Option(help="the trials of this sweep (its id)")] = None,
              limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
              output: Output = "table") -> None:
    page = bp.list_jobs(status=status, tag=tag, name=name, dataset=dataset, limit=limit, sweep_id=sweep)
    if output == "json":
        return emit(page)
    table = Table(Column("ID", no_wrap=True, min_width=32), "NAME", "STATUS", "PROGRESS", "BEST", "CREATED", box=None)
    for job in page.items:
        table.add_row(job.id, job.name, job.status, f"{job.progress.epoch}/{job.progress.epochs}", best_metric(job),
                      job.created_at.isoformat(timespec="seconds"))
    stdout.print(table)
    if page.next_cursor:
        stderr.print(f"(more than {limit}: use --limit or filters)")


@client_command(jobs_app, "show", "one job: status, progress, metrics, spec")
def jobs_show(bp: Client, job_id: Annotated[str, typer.Argument(metavar="ID")], output: Output = "table") -> None:
    job = bp.get_job(job_id)
    if output == "json":
        return emit(job)
    table = Table(box=None, show_header=False)
    for key, value in (("id", job.id), ("name", job.name), ("status", job.status),
                       ("stop reason", job.stop_reason), ("error", job.error),
                       ("progress", f"{job.progress.epoch}/{job.progress.epochs}"),
                       ("best epoch", job.best_epoch), ("best", best_metric(job)),
                       ("cross-validation", folds_line(job)),
                       ("dataset", job.dataset_id), ("attempt", job.attempt),
                       ("created", job.created_at), ("started", job.started_at), ("finished", job.finished_at),
                       ("spec", json.dumps(job.spec.model_dump(mode="json", exclude_defaults=True)))):
        table.add_row(key, "-" if value is None else str(value))
    stdout.print(table)


@client_command(jobs_app, "history", "every epoch's metrics (--csv: the server's CSV)")
def jobs_history(bp: Client, job_id: Annotated[str, typer.Argument(metavar="ID")],
                 csv: Annotated[bool, typer.Option("--csv", help="print CSV")] = False,
                 fold: Annotated[Optional[int], typer.Option("--fold", min=0, help="a cross-validated job: only "
                                                             "this fold's epochs (the folds' count: the refit)")] = None,
                 output: Output = "table") -> None:
    if csv:
        sys.stdout.write(bp.history_csv(job_id, fold=fold))
        return
    history = bp.history(job_id, fold=fold)
    if output == "json":
        return emit(history)
    columns = ("epoch", "fold", "fold_epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_r2",
               "val_mae", "lr", "seconds")
    counters = ("epoch", "fold", "fold_epoch")
    shown = [c for c in columns if c == "epoch" or any(getattr(e, c) is not None for e in history.epochs)]
    table = Table(*(c.upper() for c in shown), box=None)
    for epoch in history.epochs:
        table.add_row(*(str(getattr(epoch, c)) if c in counters else _number(getattr(epoch, c)) for c in shown))
    stdout.print(table)


@client_command(jobs_app, "cancel", "cancel a job (a running one stops at its next batch)")
def jobs_cancel(bp: Client, job_id: Annotated[str, typer.Argument(metavar="ID")], output: Output = "table") -> None:
    job = bp.cancel_job(job_id)
    emit(job) if output == "json" else stdout.print(
        f"job {job.id} {job.status}" + (" (cancel requested)" if job.status == "running" else ""), markup=False)


@client_command(jobs_app, "download", "download the job's model (sha256 checked)")
def jobs_download(bp: Client, job_id: Annotated[str, typer.Argument(metavar="ID")],
                  out: Annotated[Optional[Path], typer.Option("--out", "-O", help="file or folder "
                                                              "(default: ./<part>-<id>.npz)")] = None,
                  part: Annotated[str, typer.Option("--part", callback=_part, help="model, or encoder: an "
                                                    "autoencoder's layers up to its narrowest, as their own "
                                                    "model file")] = "model",
                  output: Output = "table") -> None:
    saved = bp.download_model(job_id, out, part=part)
    if output == "json":
        return emit({"path": str(saved.path), "sha256": saved.sha256, "size_bytes": saved.size_bytes})
    stdout.print(f"saved {saved.path} ({saved.size_bytes} bytes, sha256 {saved.sha256} verified)", markup=False)


# ---------------------------------------------------------------- datasets


@client_command(datasets_app, "upload", "upload a .npz (X, y, optional X_val, y_val) or a .csv with a header")
def datasets_upload(bp: Client, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                    name: Annotated[Optional[str], typer.Option(help="default: the file name without extension")] = None,
                    target: Annotated[Optional[str], typer.Option(help=".csv: the label column")] = None,
                    task: Annotated[Optional[str], typer.Option(help="classification or regression")] = None,
                    output: Output = "table") -> None:
    dataset = bp.upload_dataset(file, name=name, target=target, task=task)
    emit(dataset) if output == "json" else stdout.print(
        f"uploaded dataset {dataset.id} ({dataset.name}: {dataset.rows} rows, {dataset.features} features, "
        f"{dataset.task})", markup=False)


@client_command(datasets_app, "list", "built-in datasets, then yours")
def datasets_list(bp: Client, output: Output = "table") -> None:
    datasets = bp.list_datasets()
    if output == "json":
        return emit(datasets)
    table = Table(Column("ID", no_wrap=True), "NAME", "ROWS", "FEATURES", "TASK", "CLASSES", box=None)
    for dataset in datasets:
        table.add_row(dataset.id, dataset.name, str(dataset.rows), str(dataset.features), dataset.task,
                      str(len(dataset.classes)) if dataset.classes else "-")
    stdout.print(table)


@client_command(datasets_app, "show", "one dataset")
def datasets_show(bp: Client, dataset_id: Annotated[str, typer.Argument(metavar="ID")], output: Output = "table") -> None:
    dataset = bp.get_dataset(dataset_id)
    if output == "json":
        return emit(dataset)
    table = Table(box=None, show_header=False)
    for key, value in dataset.model_dump().items():
        table.add_row(key, str(value))
    stdout.print(table)


# ---------------------------------------------------------------- sweeps


def counts_text(sweep: SweepPublic) -> str:
    return ", ".join(f"{count} {status}" for status, count in sweep.counts.items() if count)


def params_text(trial: TrialPublic) -> str:
    return " ".join(f"{path}={_number(value) if isinstance(value, float) else value}"
                    for path, value in trial.params.items())


def sweep_summary(sweep: SweepPublic) -> str:
    text = f"sweep {sweep.id} {sweep.status}: {counts_text(sweep)}"
    if sweep.best is not None:
        text += (f"\nbest: trial {sweep.best.index} (job {sweep.best.job_id}) {sweep.metric} "
                 f"{_number(sweep.best.metric)}: {params_text(sweep.best)}")
    return text


@client_command(sweeps_app, "submit", "submit a sweep spec (.json, .yaml or - for stdin); --wait polls it to the end")
def sweeps_submit(bp: Client, spec: Annotated[Path, typer.Argument(help="the sweep spec file")],
                  wait: Annotated[bool, typer.Option("--wait", help="poll the sweep; exit 0/3/4 as it succeeds, "
                                                     "fails or is cancelled")] = False,
                  output: Output = "table") -> None:
    sweep = bp.create_sweep(load_spec(spec))
    if not wait:
        emit(sweep) if output == "json" else stdout.print(
            f"submitted sweep {sweep.id} ({len(sweep.trials)} trials)", markup=False)
        return
    stderr.print(f"submitted sweep {sweep.id}", markup=False)
    shown: list[str] = []

    def report(now: SweepPublic) -> None:  # the counts on stderr, each time they change
        if not shown or counts_text(now) != shown[-1]:
            shown.append(counts_text(now))
            stderr.print(shown[-1], markup=False)

    finished = bp.wait_sweep(sweep.id, on_poll=report)
    emit(finished) if output == "json" else stdout.print(sweep_summary(finished), markup=False)
    raise typer.Exit(OUTCOME_EXIT.get(finished.status, EXIT_ERROR))


@client_command(sweeps_app, "list", "list your sweeps, newest first")
def sweeps_list(bp: Client, limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
                output: Output = "table") -> None:
    page = bp.list_sweeps(limit=limit)
    if output == "json":
        return emit(page)
    table = Table(Column("ID", no_wrap=True, min_width=32), "NAME", "STATUS", "TRIALS", "BEST", "CREATED", box=None)
    for sweep in page.items:
        best = f"{sweep.metric} {_number(sweep.best.metric)}" if sweep.best else "-"
        table.add_row(sweep.id, sweep.name, sweep.status, counts_text(sweep), best,
                      sweep.created_at.isoformat(timespec="seconds"))
    stdout.print(table)
    if page.next_cursor:
        stderr.print(f"(more than {limit}: use --limit)")


@client_command(sweeps_app, "show", "one sweep: status, counts, trials best first")
def sweeps_show(bp: Client, sweep_id: Annotated[str, typer.Argument(metavar="ID")], output: Output = "table") -> None:
    sweep = bp.get_sweep(sweep_id)
    if output == "json":
        return emit(sweep)
    stdout.print(sweep_summary(sweep), markup=False)
    table = Table("TRIAL", Column("JOB", no_wrap=True), "STATUS", sweep.metric.upper(), "PARAMS", box=None)
    for trial in sweep.trials:
        status = f"{trial.status} ({trial.stop_reason})" if trial.stop_reason else trial.status
        table.add_row(str(trial.index), trial.job_id or "-", status, _number(trial.metric), params_text(trial))
    stdout.print(table)


@client_command(sweeps_app, "cancel", "cancel a sweep: its queued and held trials now, running ones at their next batch")
def sweeps_cancel(bp: Client, sweep_id: Annotated[str, typer.Argument(metavar="ID")], output: Output = "table") -> None:
    sweep = bp.cancel_sweep(sweep_id)
    emit(sweep) if output == "json" else stdout.print(sweep_summary(sweep), markup=False)
