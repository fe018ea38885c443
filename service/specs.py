"""The public contract: the job spec users send, and the models the API answers with.

Field names follow the v1 API. Everything has a default where one makes sense and an example in
the OpenAPI schema. `resolve_spec` checks a spec against its dataset and fills the defaults that
depend on the data (loss, output activation), so what is stored is explicit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from worker.nn import check_layer_shapes, layer_shapes_from_meta
from worker.nn import names as engine  # the engine's registries: the one source of these names
from worker.nn.metrics import METRICS, unmeasured_reason

# Caps that keep one job's resource use bounded. These are the schema's bounds (in OpenAPI) and the
# defaults (and ceilings) of the Settings that may tighten them per deployment: see JobLimits.
MAX_EPOCHS = 10_000
MAX_HIDDEN_LAYERS = 16
MAX_UNITS = 4096
MAX_BATCH_SIZE = 65_536
MAX_PARAMETERS = 5_000_000
MAX_TAGS = 32
MAX_PREDICT_ROWS = 10_000  # rows in one POST /v1/jobs/{id}/predict (Settings.max_predict_rows may lower it)
MAX_FOLDS = 20  # cross_validation.folds (Settings.max_folds may lower it)
MAX_TRIALS = 1000  # trials of one sweep (Settings.max_trials_per_sweep may lower it)
MAX_SPACE_PATHS = 32  # parameters one sweep searches over
MAX_CHOICES = 1000  # values of one `choice`

# Choices derived from the engine's registries (tests/service/test_spec_names.py ties the
# optimizer and schedule unions below to them too): adding an activation is one edit there.
HiddenActivation = Literal[engine.HIDDEN_ACTIVATIONS]
OutputActivation = Literal[engine.OUTPUT_ACTIVATIONS]
LossName = Literal[engine.LOSSES]
InitName = Literal[engine.INITIALIZER_NAMES]
Monitor = Literal[engine.MONITORS]
Mode = Literal["auto", "min", "max"]
Task = Literal["classification", "regression"]  # what a dataset's targets are
JobTask = Literal[engine.TASKS]  # what a job learns: a dataset's task, or "autoencoder" (any dataset)
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StopReason = Literal["completed", "early_stopped", "diverged", "cancelled", "max_runtime", "error", "pruned"]
BuiltinName = Literal["xor", "digits", "iris", "moons", "circles", "sine"]

TERMINAL_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
BUILTIN_PREFIX = "builtin:"  # a built-in dataset's id is BUILTIN_PREFIX + its name


# NUL (PostgreSQL text cannot hold it) and lone surrogates (not encodable as UTF-8): JSON can
# escape both ("\u0000", "\ud800"), no stored or echoed text may hold them
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(value: str) -> str | None:
    """Why `value` cannot be stored or echoed (naming the character and where it is), or None."""
    found = UNSTORABLE_CHARACTER.search(value)
    if found is None:
        return None
    return (f"text must be Unicode without NUL or lone surrogates: found U+{ord(found.group()):04X} "
            f"at position {found.start()}")


def storable_text(value: str) -> str:
    """`value` unchanged, or a 422 `text_unstorable`."""
    reason = unstorable_text(value)
    if reason is not None:
        raise PydanticCustomError("text_unstorable", reason)
    return value


Text = Annotated[str, AfterValidator(storable_text)]  # every string of the contract's input models


class Spec(BaseModel):
    # strict: a value must have the schema's type (no "5" or true for an integer, no 0 or "yes"
    # for a boolean); an integer still passes for a number. allow_inf_nan=False: every number is
    # finite (JSON's NaN/Infinity, or 1e400 read as inf, answer 422 `finite_number`)
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------- job spec


class DatasetSpec(Spec):
    builtin: BuiltinName | None = Field(None, examples=["digits"])
    id: Text | None = Field(None, description="id of an uploaded dataset", examples=[None])
    validation_split: float = Field(
        0.2, ge=0.0, lt=1.0,
        description="fraction held out for validation when the dataset has no X_val/y_val "
        "(stratified for classification); 0 trains without validation",
    )
    standardize: bool = Field(True, description="standardize inputs with the training part's mean/std")

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        if (self.builtin is None) == (self.id is None):
            raise ValueError("give exactly one of 'builtin' or 'id'")
        return self


class LayerSpec(Spec):
    units: int = Field(ge=1, le=MAX_UNITS, examples=[64],
                       description=f"width; at most MAX_UNITS (default {MAX_UNITS}; a deployment may set less)")
    activation: HiddenActivation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False


class ModelSpec(Spec):
    hidden_layers: list[LayerSpec] = Field(
        default_factory=lambda: [LayerSpec(units=64)], max_length=MAX_HIDDEN_LAYERS,
        description=f"at most MAX_HIDDEN_LAYERS layers (default {MAX_HIDDEN_LAYERS}) and MAX_PARAMETERS "
        f"weights and biases in all (default {MAX_PARAMETERS:,}, counted against the dataset at submission)",
        examples=[[{"units": 64, "activation": "relu", "dropout": 0.0, "batch_norm": False}]],
    )
    output_activation: OutputActivation | None = Field(
        None, description="default: " + ", ".join(
            f"{output} for {loss}" for loss, output in engine.DEFAULT_OUTPUT_ACTIVATION.items()),
    )
    init: InitName | None = Field(None, description="default: he_normal for relu-family layers, xavier_uniform otherwise")


class SGD(Spec):
    name: Literal["sgd"] = "sgd"
    learning_rate: float = Field(0.01, gt=0, le=10)


class Momentum(Spec):
    name: Literal["momentum"] = "momentum"
    learning_rate: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)


class Nesterov(Spec):
    name: Literal["nesterov"] = "nesterov"
    learning_rate: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)


class RMSprop(Spec):
    name: Literal["rmsprop"] = "rmsprop"
    learning_rate: float = Field(0.001, gt=0, le=10)
    rho: float = Field(0.9, ge=0, lt=1)
    epsilon: float = Field(1e-8, gt=0, le=1)


class Adam(Spec):
    name: Literal["adam"] = "adam"
    learning_rate: float = Field(0.001, gt=0, le=10)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-8, gt=0, le=1)


class AdamW(Spec):
    name: Literal["adamw"] = "adamw"
    learning_rate: float = Field(0.001, gt=0, le=10)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-8, gt=0, le=1)
    weight_decay: float = Field(0.01, ge=0, le=1)


Optimizer = Annotated[Union[SGD, Momentum, Nesterov, RMSprop, Adam, AdamW], Field(discriminator="name")]


class ConstantLR(Spec):
    name: Literal["constant"] = "constant"


class StepLR(Spec):
    name: Literal["step"] = "step"
    step_size: int = Field(10, ge=1, description="multiply the rate by gamma every step_size epochs")
    gamma: float = Field(0.1, gt=0, le=1)


class ExponentialLR(Spec):
    name: Literal["exponential"] = "exponential"
    gamma: float = Field(0.95, gt=0, le=1, description="lr = learning_rate * gamma ** epochs_done")


class CosineLR(Spec):
    name: Literal["cosine"] = "cosine"
    t_max: int | None = Field(None, ge=1, description="epochs of the half cosine; default: all epochs")
    min_lr: float = Field(0.0, ge=0)


class ReduceOnPlateau(Spec):
    """Keras's ReduceLROnPlateau."""

    name: Literal["reduce_on_plateau"] = "reduce_on_plateau"
    monitor: Monitor = "val_loss"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    min_delta: float = Field(1e-4, ge=0)
    cooldown: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    mode: Mode = "auto"


Schedule = Annotated[
    Union[ConstantLR, StepLR, ExponentialLR, CosineLR, ReduceOnPlateau], Field(discriminator="name")
]


class EarlyStoppingSpec(Spec):
    """Keras's EarlyStopping, argument for argument."""

    monitor: Monitor = "val_loss"
    min_delta: float = Field(0.0, ge=0)
    patience: int = Field(0, ge=0, examples=[5])
    mode: Mode = "auto"
    baseline: float | None = None
    restore_best_weights: bool = Field(False, examples=[True])
    start_from_epoch: int = Field(0, ge=0)


class CheckpointSpec(Spec):
    every_epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    keep_last: int = Field(2, ge=1, le=100, description="most recent checkpoints kept")
    keep_best: bool = Field(True, description="also keep the checkpoint of the best epoch so far")


class InitFromSpec(Spec):
    """Transfer learning: start hidden layers from another succeeded job of the same owner."""

    job_id: Text = Field(min_length=1, max_length=64, description="the source job (succeeded, yours)")
    layers: list[Annotated[int, Field(ge=0, lt=MAX_HIDDEN_LAYERS)]] = Field(
        min_length=1, max_length=MAX_HIDDEN_LAYERS, examples=[[0, 1]],
        description="hidden layer indexes (0-based) copied from the source: weights, biases and batch-norm "
        "state; each must have the same shape in both networks. The source's input standardization is "
        "used too; the output layer is always fresh")


class CrossValidationSpec(Spec):
    folds: int = Field(5, ge=2, le=MAX_FOLDS, examples=[5],
                       description=f"k trainings on k seeded folds (stratified for classification), then the "
                       f"kept model is retrained on every row; at most MAX_FOLDS (default {MAX_FOLDS})")


class JobSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra={  # merged with Spec's model_config
            "examples": [{
                "name": "digits-mlp", "tags": ["demo"],
                "dataset": {"builtin": "digits", "validation_split": 0.2, "standardize": True},
                "model": {"hidden_layers": [{"units": 64, "activation": "relu"}]},
                "optimizer": {"name": "adam", "learning_rate": 0.001},
                "epochs": 30, "batch_size": 32, "seed": 0,
                "early_stopping": {"monitor": "val_loss", "patience": 5, "restore_best_weights": True},
            }]
        },
    )

    name: Text = Field("", max_length=200, examples=["digits-mlp"])
    tags: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_TAGS, examples=[["demo"]])
    dataset: DatasetSpec
    task: JobTask | None = Field(
        None, description="default: the dataset's task. \"autoencoder\" (any dataset) learns to reconstruct the "
        "inputs: loss mse (of the standardized inputs) or binary_crossentropy (raw inputs in [0, 1]), an output "
        "layer as wide as the input")
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: LossName | None = Field(
        None, description="default: categorical_crossentropy for classification, mse for regression and autoencoders")
    optimizer: Optimizer = Field(default_factory=Adam)
    epochs: int = Field(20, ge=1, le=MAX_EPOCHS,
                        description=f"at most MAX_EPOCHS (default {MAX_EPOCHS}; a deployment may set less)")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE,
                            description=f"at most MAX_BATCH_SIZE (default {MAX_BATCH_SIZE}; a deployment may set less)")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    l2: float = Field(0.0, ge=0, le=10)
    clip_norm: float | None = Field(None, gt=0)
    lr_schedule: Schedule = Field(default_factory=ConstantLR)
    early_stopping: EarlyStoppingSpec | None = None
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    max_runtime_seconds: int | None = Field(None, ge=1, le=7 * 24 * 3600)
    init_from: InitFromSpec | None = None
    freeze: list[Annotated[int, Field(ge=0, lt=MAX_HIDDEN_LAYERS)]] = Field(
        default_factory=list, max_length=MAX_HIDDEN_LAYERS, examples=[[0]],
        description="hidden layers (0-based) held fixed: no gradient step, no optimizer state, batch norm on "
        "its running statistics")
    cross_validation: CrossValidationSpec | None = None


# ---------------------------------------------------------------- sweeps

SweepMethod = Literal["grid", "random"]
SweepMode = Literal["min", "max"]
SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ChoiceValue = Union[bool, int, float, str, None]


class Distribution(Spec):
    """Exactly one of: a list of values, or a range [low, high] (both ends included)."""

    choice: list[ChoiceValue] | None = Field(None, min_length=1, max_length=MAX_CHOICES, examples=[[32, 64, 128]])
    uniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[low, high]")
    loguniform: list[float] | None = Field(None, min_length=2, max_length=2,
                                           description="[low, high], 0 < low: uniform in log space")
    int_uniform: list[int] | None = Field(None, min_length=2, max_length=2, description="[low, high] integers")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, int_uniform")
        if given[0] != "choice":
            low, high = getattr(self, given[0])
            if not low <= high:
                raise ValueError(f"{given[0]}: low {low} is above high {high}")
            if given[0] == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low must be above 0, not {low}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


class AshaSpec(Spec):
    """Asynchronous successive halving (Ray Tune's AsyncHyperBandScheduler, one bracket): at each
    rung of grace_period * reduction_factor**k epochs, a trial goes on only if its metric is not
    below the (1 - 1/reduction_factor) quantile of the results other trials recorded there."""

    grace_period: int = Field(1, ge=1, le=MAX_EPOCHS, description="epochs before the first rung")
    reduction_factor: int = Field(4, ge=2, le=100, description="η: about 1/η of the trials pass each rung")


class SweepSpec(Spec):
    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{
            "name": "digits-lr", "base": {"dataset": {"builtin": "digits"}, "epochs": 27},
            "space": {"optimizer.learning_rate": {"loguniform": [1e-4, 0.1]},
                      "model.hidden_layers.0.units": {"choice": [32, 64, 128]}},
            "method": "random", "max_trials": 12, "max_concurrent": 2, "metric": "val_loss", "mode": "min",
            "asha": {"grace_period": 3, "reduction_factor": 3},
        }]},
    )

    name: str = Field("", max_length=200, examples=["digits-lr"])
    base: JobSpec = Field(description="the job spec every trial starts from")
    space: dict[str, Distribution] = Field(
        min_length=1, max_length=MAX_SPACE_PATHS,
        description="dotted path of a numeric or categorical JobSpec field (`optimizer.learning_rate`, "
        "`model.hidden_layers.0.units`, `l2`, `batch_size`, ...) → its distribution")
    method: SweepMethod = Field("random", description="grid: every combination of the `choice` lists "
                                "(in order, the last path varying fastest), up to max_trials; random: seeded draws")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="of the random draws; default: base.seed")
    max_trials: int = Field(10, ge=1, le=MAX_TRIALS, description=f"at most MAX_TRIALS (default {MAX_TRIALS}; "
                            "a deployment may set less: max_trials_per_sweep)")
    max_concurrent: int = Field(2, ge=1, le=MAX_TRIALS, description="trials of this sweep queued or running at once")
    metric: Monitor = Field("val_loss", description="the per-epoch metric trials are ranked (and ASHA decides) by")
    mode: SweepMode | None = Field(None, description="min or max; default: the metric's direction")
    asha: AshaSpec | None = Field(None, description="early termination of poor trials; null: every trial runs fully")


class TrialPublic(BaseModel):
    index: int = Field(description="the trial's place in the draw (0-based)")
    job_id: str | None = Field(None, description="null while the trial is held (not yet released)")
    params: dict[str, ChoiceValue]
    status: JobStatus | Literal["held"]
    stop_reason: StopReason | None = None
    metric: float | None = Field(None, description="the trial's best value of the sweep's metric so far")


class SweepPublic(BaseModel):
    id: str
    name: str
    status: SweepStatus
    counts: dict[str, int] = Field(description="trials by status: held, queued, running, succeeded, failed, cancelled")
    metric: str
    mode: SweepMode
    trials: list[TrialPublic] = Field(description="best first by the metric; trials without a value last, by index")
    best: TrialPublic | None = None
    created_at: datetime
    cancelled_at: datetime | None = None
    spec: SweepSpec


class SweepPage(BaseModel):
    items: list[SweepPublic]
    next_cursor: str | None = None


# ---------------------------------------------------------------- datasets


class DatasetInfo(BaseModel):
    """What the service knows of a dataset's shape; enough to check a spec against it."""

    rows: int
    features: int
    task: Task
    classes: list[int | float | str] = Field(default_factory=list)  # sorted labels; empty for regression
    outputs: int = 1  # regression targets per row (y of shape (n, k) gives k)
    has_validation: bool = False
    val_rows: int = 0


BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    # rows and shapes of what worker.datasets generates for each name
    "xor": DatasetInfo(rows=4, features=2, task="classification", classes=[0, 1], has_validation=True, val_rows=4),
    "digits": DatasetInfo(rows=1797, features=64, task="classification", classes=list(range(10))),
    "iris": DatasetInfo(rows=150, features=4, task="classification", classes=[0, 1, 2]),
    "moons": DatasetInfo(rows=1000, features=2, task="classification", classes=[0, 1]),
    "circles": DatasetInfo(rows=1000, features=2, task="classification", classes=[0, 1]),
    "sine": DatasetInfo(rows=1000, features=1, task="regression"),
}


class DatasetPublic(DatasetInfo):
    id: str
    name: str
    source: Literal["builtin", "upload"]
    created_at: datetime | None = None


# ---------------------------------------------------------------- jobs


class EpochMetrics(BaseModel):
    epoch: int
    train_loss: float | None = None
    val_loss: float | None = None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    val_r2: float | None = None
    val_mae: float | None = None
    lr: float | None = None
    seconds: float | None = None
    # cross-validated jobs only (null otherwise): `epoch` counts across the whole job, so it stays
    # increasing (event ids, progress, resume); `fold` is the training (0..k-1, k for the refit on
    # all rows) and `fold_epoch` the epoch within it (1-based)
    fold: int | None = None
    fold_epoch: int | None = None


class FoldSummary(BaseModel):
    fold: int
    best_epoch: int = Field(description="the fold's best epoch, counted within the fold (its fold_epoch)")
    best_metrics: dict[str, float] = Field(description="the metrics of that epoch")
    epochs_run: int
    stop_reason: str


class CrossValidationSummary(BaseModel):
    """A cross-validated job's estimate: each finished fold's best epoch, and once every fold is
    done the mean and population standard deviation of their best metrics. The job's model is the
    refit on every row for `refit_epochs` (the folds' mean best epoch, rounded)."""

    monitor: str = Field(description="what picked each fold's best epoch: early stopping's monitor, else val_loss")
    folds: list[FoldSummary] = Field(default_factory=list)
    mean: dict[str, float] | None = None
    std: dict[str, float] | None = None
    refit_epochs: int | None = None


class Progress(BaseModel):
    epoch: int
    epochs: int


class BlasInfo(BaseModel):
    """NumPy's BLAS in the training process, as threadpoolctl reports it (null where unknown)."""

    library: str | None = Field(None, examples=["openblas"])
    version: str | None = Field(None, examples=["0.3.31"])
    architecture: str | None = Field(None, examples=["SkylakeX"])
    threads: int | None = Field(None, examples=[1])


class ModelCard(BaseModel):
    """What produced a job's model, also stored in the model file (`meta["card"]`). The same
    spec, data and seed on the same code and BLAS give a model file with the same sha256."""

    dataset_id: str = Field(examples=["builtin:digits"])
    dataset_sha256: str = Field(description="an upload: the sha256 of the stored dataset file; a built-in: "
                                "of its generated arrays (X, y[, X_val, y_val]) in canonical form")
    spec_sha256: str = Field(description="sha256 of the resolved spec as canonical JSON (sorted keys, no "
                             "spaces), without the labels `name` and `tags`")
    package_version: str = Field(examples=["0.1.0"], description="backprop-lab's version")
    numpy_version: str = Field(examples=["2.4.6"])
    blas: BlasInfo
    seed: int
    attempt: int = Field(description="the delivery that finished the job (1 unless a worker was lost)")
    resumed: bool = Field(description="whether that delivery resumed from a checkpoint")
    resumed_from_epoch: int | None = Field(None, description="the checkpoint's epoch when resumed")


class JobPublic(BaseModel):
    id: str
    name: str
    tags: list[str]
    status: JobStatus
    stop_reason: StopReason | None = None
    error: str | None = None
    progress: Progress
    latest_metrics: EpochMetrics | None = None
    best_epoch: int | None = None
    best_metrics: EpochMetrics | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    dataset_id: str
    cancel_requested: bool = False
    spec: JobSpec
    model_card: ModelCard | None = Field(None, description="what produced the model; null until the job has one")
    cross_validation: CrossValidationSummary | None = Field(
        None, description="cross-validated jobs: the folds' results so far, then their mean and std")
    sweep_id: str | None = Field(None, description="the sweep this job is a trial of")
    trial_params: dict[str, bool | int | float | str | None] | None = Field(
        None, description="a trial's drawn values, by dotted spec path")


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = None


class HistoryPublic(BaseModel):
    job_id: str
    epochs: list[EpochMetrics]


class CheckpointPublic(BaseModel):
    epoch: int
    created_at: datetime
    is_best: bool = False
    size_bytes: int
    sha256: str


class LimitsPublic(BaseModel):
    """This deployment's caps (Settings; env MAX_EPOCHS, ...). A request over one is refused: 422
    for a job spec (type `limit_exceeded`), 413 for an upload, 429 for one queued job too many."""

    max_epochs: int
    max_hidden_layers: int
    max_units: int
    max_parameters: int
    max_batch_size: int
    max_upload_bytes: int
    max_dataset_rows: int
    max_dataset_bytes: int
    max_queued_jobs_per_owner: int
    max_predict_rows: int
    max_folds: int
    max_trials_per_sweep: int
    max_concurrent_trials_per_owner: int


class PredictRequest(Spec):
    """POST /v1/jobs/{id}/predict: rows of raw inputs, as the training data's X (standardization is
    the model's business)."""

    inputs: list[list[float]] = Field(min_length=1, max_length=MAX_PREDICT_ROWS,
                                      examples=[[[0.0, 0.5, 1.0, 0.25]]],
                                      description="rows x the model's input_size finite numbers; at most "
                                      "MAX_PREDICT_ROWS rows")


class PredictResponse(BaseModel):
    outputs: list[list[float]] = Field(description="the output layer per row: softmax probabilities, "
                                       "the sigmoid's P(labels[1]), the regression values, or an autoencoder's "
                                       "reconstruction in the inputs' own units")
    classes: list[str | int | float | bool] | None = Field(
        None, description="classifiers: each row's predicted label (Model.predict)")
    probabilities: list[list[float]] | None = Field(
        None, description="classifiers: one column per label in `labels` order (Model.predict_proba)")
    labels: list[str | int | float | bool] | None = Field(
        None, description="classifiers: the class labels, in the probabilities' column order")


# ---------------------------------------------------------------- spec against dataset


class SpecMismatch(ValueError):
    """A valid spec that cannot train on its dataset; `loc` names the field (as in a 422)."""

    type = "spec_mismatch"

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


class LimitExceeded(SpecMismatch):
    """A spec over one of this deployment's caps (Settings may set them below the schema's)."""

    type = "limit_exceeded"


@dataclass(frozen=True)
class JobLimits:
    """The caps a submitted spec is held to; `Settings.job_limits` gives the deployment's."""

    max_epochs: int = MAX_EPOCHS
    max_hidden_layers: int = MAX_HIDDEN_LAYERS
    max_units: int = MAX_UNITS
    max_batch_size: int = MAX_BATCH_SIZE
    max_parameters: int = MAX_PARAMETERS
    max_folds: int = MAX_FOLDS


DEFAULT_LIMITS = JobLimits()


def check_limits(spec: JobSpec, limits: JobLimits) -> None:
    """Raise LimitExceeded naming the first field over a cap (the schema holds the default caps;
    this holds a deployment's tighter ones). The parameter cap needs the dataset: resolve_spec."""
    if spec.epochs > limits.max_epochs:
        raise LimitExceeded(("epochs",), f"{spec.epochs} epochs exceed the cap of {limits.max_epochs} (MAX_EPOCHS)")
    if spec.batch_size > limits.max_batch_size:
        raise LimitExceeded(("batch_size",),
                            f"batch size {spec.batch_size} exceeds the cap of {limits.max_batch_size} (MAX_BATCH_SIZE)")
    layers = spec.model.hidden_layers
    if len(layers) > limits.max_hidden_layers:
        raise LimitExceeded(("model", "hidden_layers"), f"{len(layers)} hidden layers exceed the cap of "
                            f"{limits.max_hidden_layers} (MAX_HIDDEN_LAYERS)")
    for index, layer in enumerate(layers):
        if layer.units > limits.max_units:
            raise LimitExceeded(("model", "hidden_layers", index, "units"),
                                f"{layer.units} units exceed the cap of {limits.max_units} (MAX_UNITS)")
    if spec.cross_validation is not None:
        folds = spec.cross_validation.folds
        if folds > limits.max_folds:
            raise LimitExceeded(("cross_validation", "folds"),
                                f"{folds} folds exceed the cap of {limits.max_folds} (MAX_FOLDS)")
        if spec.epochs * (folds + 1) > limits.max_epochs:  # k folds and the refit, each up to `epochs`
            raise LimitExceeded(("cross_validation", "folds"),
                                f"{folds} folds and the refit train up to {spec.epochs * (folds + 1)} epochs, over "
                                f"the cap of {limits.max_epochs} (MAX_EPOCHS)")


def planned_epochs(spec: dict) -> int:
    """Most epochs a job trains, from its spec as stored (JSON): `epochs`, or for cross-validation
    each fold's and the refit's."""
    folds = (spec.get("cross_validation") or {}).get("folds")
    return spec["epochs"] * (1 if folds is None else folds + 1)


def output_units(spec: JobSpec, info: DatasetInfo) -> int:
    if spec.task == "autoencoder":
        return info.features
    if spec.loss == "categorical_crossentropy":
        return len(info.classes)
    if spec.loss == "binary_crossentropy":
        return 1
    return info.outputs


def parameter_count(spec: JobSpec, info: DatasetInfo) -> int:
    sizes = [info.features] + [layer.units for layer in spec.model.hidden_layers] + [output_units(spec, info)]
    count = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    count += sum(2 * layer.units for layer in spec.model.hidden_layers if layer.batch_norm)
    return count


def resolve_spec(spec: JobSpec, info: DatasetInfo, limits: JobLimits = DEFAULT_LIMITS) -> JobSpec:
    """Return `spec` with data-dependent defaults filled in (task, loss, output activation); raise
    SpecMismatch if it cannot fit (LimitExceeded if it is over one of `limits`). A transfer's
    source is checked separately (check_transfer): it needs another job."""
    check_limits(spec, limits)
    task = spec.task or info.task
    if task == "autoencoder":
        loss = spec.loss or "mse"
        if loss not in engine.AUTOENCODER_LOSSES:
            raise SpecMismatch(("loss",), f"an autoencoder reconstructs its inputs with "
                               f"{' or '.join(engine.AUTOENCODER_LOSSES)}, not {loss}")
    else:
        if task != info.task:
            raise SpecMismatch(("task",), f"{task} needs a {task} dataset; this one is {info.task} "
                               "(or use task autoencoder)")
        loss = spec.loss or ("categorical_crossentropy" if task == "classification" else "mse")
        if engine.LOSS_TASK[loss] != task:
            raise SpecMismatch(("loss",), f"{loss} needs a {engine.LOSS_TASK[loss]} dataset; this one is {task}")
        if loss == "binary_crossentropy" and len(info.classes) != 2:
            raise SpecMismatch(("loss",), f"binary_crossentropy needs 2 classes; the dataset has {len(info.classes)}")
        if loss == "categorical_crossentropy" and len(info.classes) < 2:
            raise SpecMismatch(("loss",), "categorical_crossentropy needs at least 2 classes")

    output = spec.model.output_activation or engine.DEFAULT_OUTPUT_ACTIVATION[loss]
    required = engine.REQUIRED_OUTPUT_ACTIVATION.get(loss)
    if required is not None and output != required:
        raise SpecMismatch(("model", "output_activation"), f"{loss} needs a {required} output")
    if loss == "mse" and output == "softmax":
        raise SpecMismatch(("model", "output_activation"), "softmax output needs a classification loss, not mse")

    n_hidden = len(spec.model.hidden_layers)
    for position, layer in enumerate(spec.freeze):
        if layer >= n_hidden:
            raise SpecMismatch(("freeze", position), f"layer {layer} is not a hidden layer (there are {n_hidden})")
        if layer in spec.freeze[:position]:
            raise SpecMismatch(("freeze", position), f"layer {layer} is listed twice")
    if spec.init_from is not None:
        for position, layer in enumerate(spec.init_from.layers):
            if layer >= n_hidden:
                raise SpecMismatch(("init_from", "layers", position),
                                   f"layer {layer} is not a hidden layer of this spec (there are {n_hidden})")
            if layer in spec.init_from.layers[:position]:
                raise SpecMismatch(("init_from", "layers", position), f"layer {layer} is listed twice")

    if spec.cross_validation is None:
        has_val = _check_validation_split(spec, info)
    else:
        _check_folds(spec, info)
        has_val = True  # each fold validates on its held-out part
    monitors = [("early_stopping", "monitor", spec.early_stopping.monitor)] if spec.early_stopping else []
    if isinstance(spec.lr_schedule, ReduceOnPlateau):
        monitors.append(("lr_schedule", "monitor", spec.lr_schedule.monitor))
        if spec.cross_validation is not None and METRICS[spec.lr_schedule.monitor].validation:
            raise SpecMismatch(("lr_schedule", "monitor"), "cross-validation's refit trains on every row without "
                               f"validation, so reduce_on_plateau cannot watch {spec.lr_schedule.monitor}; "
                               "use a train_ metric")
    for section, field_name, monitor in monitors:
        reason = unmeasured_reason(monitor, task, has_val)
        if reason is not None:
            raise SpecMismatch((section, field_name), reason)

    resolved = spec.model_copy(deep=True)
    resolved.task = task
    resolved.loss = loss
    resolved.model.output_activation = output
    params = parameter_count(resolved, info)
    if params > limits.max_parameters:
        raise LimitExceeded(("model", "hidden_layers"),
                            f"{params} parameters exceed the cap of {limits.max_parameters} (MAX_PARAMETERS)")
    return resolved


def _check_validation_split(spec: JobSpec, info: DatasetInfo) -> bool:
    """Whether the job validates; SpecMismatch when the split leaves a part empty."""
    train_rows = info.rows if info.has_validation else int(info.rows * (1 - spec.dataset.validation_split))
    if train_rows < 1:
        raise SpecMismatch(("dataset", "validation_split"), "leaves no rows to train on")
    if spec.dataset.validation_split > 0 and not info.has_validation:
        val_rows = info.rows - train_rows
        if val_rows < 1:
            raise SpecMismatch(("dataset", "validation_split"), "leaves no rows to validate on")
    return info.has_validation or spec.dataset.validation_split > 0


def _check_folds(spec: JobSpec, info: DatasetInfo) -> None:
    folds = spec.cross_validation.folds
    if info.has_validation:
        raise SpecMismatch(("cross_validation",), "this dataset has its own validation set (X_val); "
                           "cross-validation holds out each fold instead, so use a dataset without one")
    if folds > info.rows:
        raise SpecMismatch(("cross_validation", "folds"), f"{folds} folds need at least {folds} rows; "
                           f"the dataset has {info.rows}")


@dataclass(frozen=True)
class TransferSource:
    """What a transfer's source job offers: its input width and hidden layers (units, batch_norm),
    read from its stored spec and dataset (no model file is loaded to check a submission)."""

    input_size: int
    hidden: tuple[tuple[int, bool], ...]
    standardized: bool = False  # its inputs were standardized: the target's are, with its mean/std

    @classmethod
    def of(cls, spec: JobSpec, info: DatasetInfo) -> "TransferSource":
        return cls(info.features, tuple((layer.units, layer.batch_norm) for layer in spec.model.hidden_layers),
                   spec.dataset.standardize)


def check_transfer(spec: JobSpec, info: DatasetInfo, source: TransferSource) -> None:
    """SpecMismatch naming the first `init_from.layers` entry the source cannot fill (the engine's
    own shape check, worker.nn.check_layer_shapes, run on shapes alone)."""
    if source.standardized and not spec.dataset.standardize:
        raise SpecMismatch(("dataset", "standardize"), "the source job standardized its inputs, and its layers "
                           "expect inputs scaled its way: keep standardize true (its mean and std are used)")
    hidden = [(layer.units, layer.batch_norm) for layer in spec.model.hidden_layers]
    source_meta = {"input_size": source.input_size, "loss": None,
                   "layers": [{"units": units, "batch_norm": bn} for units, bn in source.hidden]}
    for position, layer in enumerate(spec.init_from.layers):
        loc = ("init_from", "layers", position)
        if layer >= len(source.hidden):
            raise SpecMismatch(loc, f"the source job has {len(source.hidden)} hidden layers; it has no layer {layer}")
        fan_in = source.input_size if layer == 0 else source.hidden[layer - 1][0]
        mine = info.features if layer == 0 else hidden[layer - 1][0]
        if (fan_in, source.hidden[layer][0]) != (mine, hidden[layer][0]):
            raise SpecMismatch(loc, f"source layer {layer} is {fan_in}→{source.hidden[layer][0]}, this spec's layer "
                               f"{layer} is {mine}→{hidden[layer][0]}")
        try:
            check_layer_shapes(layer_shapes_from_meta(source_meta, [layer]), info.features, hidden)
        except ValueError as error:  # batch norm on one side only
            raise SpecMismatch(loc, str(error).removeprefix("transfer: ")) from None
