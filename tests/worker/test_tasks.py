"""The training task run in-process (no broker) against a real SQLite store and the real engine."""
from __future__ import annotations

import hashlib
import io
import itertools
import json

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from service.config import Settings
from service.queue import TRAIN_TASK, TRAINING_QUEUE
from service.specs import DatasetInfo
from service.store import LeaseLost, Store
from tests.utils.db import SequentialIds
from tests.utils.factories import create_job, job_spec, read_object
from worker import tasks, training
from worker.bookkeeping import EpochBookkeeper
from worker.app import create_app
from worker.nn import load_model
from worker.training import StopPolicy, run_job, train_config

LEASE = 30.0


@pytest.fixture(params=["local", "s3"])
def store(request, sqlite_database_url, settings_factory, clock):
    """One SQLite store (the task logic is database-agnostic; the store tests cover PostgreSQL),
    with artifacts in a local folder, then in S3 (moto's server on loopback)."""
    make = settings_factory if request.param == "local" else request.getfixturevalue("s3_settings")
    store = Store(make(database_url=sqlite_database_url), clock=clock, new_id=SequentialIds())
    yield store
    store.dispose()


class Ticks:
    """A fake monotonic clock advancing `step` seconds per reading."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def run(store, job_id, worker="w1", monotonic=None):
    return run_job(store, job_id, worker_id=worker, lease_seconds=LEASE, monotonic=monotonic or Ticks(0.0))


def model_arrays(store, job_id: str):
    with store.artifacts.open(store.model_file(job_id).key) as handle, \
            np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def assert_resumed_equals_straight(store, resumed_id, straight_id, *, attempt, from_epoch):
    """Bit-equal weights; the meta differs only in the model card's attempt and resume fields."""
    resumed, reference = model_arrays(store, resumed_id), model_arrays(store, straight_id)
    assert resumed.keys() == reference.keys()
    for key in reference.keys() - {"meta"}:
        np.testing.assert_array_equal(resumed[key], reference[key])
    resumed_meta, reference_meta = json.loads(str(resumed["meta"])), json.loads(str(reference["meta"]))
    resumed_card, reference_card = resumed_meta.pop("card"), reference_meta.pop("card")
    assert resumed_meta == reference_meta
    run_fields = ("attempt", "resumed", "resumed_from_epoch")
    assert [resumed_card.pop(name) for name in run_fields] == [attempt, True, from_epoch]
    assert [reference_card.pop(name) for name in run_fields] == [1, False, None]
    assert resumed_card == reference_card
    assert store.get_job(resumed_id).model_card.resumed_from_epoch == from_epoch


def test_the_same_spec_data_and_seed_give_a_byte_identical_model_file(store):
    options = dict(builtin="moons", epochs=3, batch_size=16, model={"hidden_layers": [{"units": 8, "dropout": 0.2}]})
    first, second = create_job(store, name="first", **options), create_job(store, name="second", **options)
    assert run(store, first.id) == run(store, second.id) == "succeeded"
    model, other = store.model_file(first.id), store.model_file(second.id)
    assert model.sha256 == other.sha256  # names are not in the card
    with store.artifacts.open(model.key) as a, store.artifacts.open(other.key) as b:
        assert a.read() == b.read()
    assert store.get_job(first.id).model_card == store.get_job(second.id).model_card


def test_celery_task_runs_a_job_to_success(store):
    job = create_job(store, builtin="iris", epochs=4, batch_size=16, model={"hidden_layers": [{"units": 8}]},
                     checkpoint={"every_epochs": 3, "keep_last": 5})
    tasks.set_process_store(store)
    try:
        assert tasks.train_job.apply(args=[job.id]).get() == "succeeded"
    finally:
        tasks.set_process_store(None)

    done = store.get_job(job.id)
    assert (done.status, done.stop_reason, done.error, done.attempt) == ("succeeded", "completed", None, 1)
    assert done.progress.epoch == 4 and done.finished_at is not None
    history = store.history(job.id)
    assert [row.epoch for row in history] == [1, 2, 3, 4]
    assert all(row.train_loss > 0 and row.val_loss > 0 and 0 <= row.val_accuracy <= 1 for row in history)
    assert done.latest_metrics == history[-1] and done.best_metrics == history[done.best_epoch - 1]
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [3, 4]  # every 3rd and the last

    stored = store.model_file(job.id)
    assert hashlib.sha256(read_object(store, stored.key)).hexdigest() == stored.sha256
    with store.artifacts.local_copy(stored.key) as path:
        model = load_model(path)
    from worker.datasets import load_builtin

    data = load_builtin("iris", 0)
    assert model.predict(data.X).shape == (150,)
    assert tasks.train_job.name == TRAIN_TASK


def test_second_delivery_of_a_finished_job_does_nothing(store):
    job = create_job(store, epochs=2)
    assert run(store, job.id) == "succeeded"
    before = (store.get_job(job.id), store.history(job.id))
    assert run(store, job.id, worker="w2") == "skipped"
    assert (store.get_job(job.id), store.history(job.id)) == before


def test_delivery_while_another_worker_holds_the_job_is_skipped(store):
    job = create_job(store, epochs=2)
    store.claim_job(job.id, "other", LEASE)
    assert run(store, job.id) == "skipped"
    assert store.history(job.id) == [] and store.get_job(job.id).attempt == 1


def test_early_stopping_is_visible_in_the_job(store):
    job = create_job(store, builtin="iris", epochs=50,
                     early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 10.0,
                                     "restore_best_weights": True})
    assert run(store, job.id) == "succeeded"
    done = store.get_job(job.id)
    # Keras semantics: only epoch 1 improves by min_delta (on infinity); two more epochs of patience
    assert (done.stop_reason, done.best_epoch, done.progress.epoch) == ("early_stopped", 1, 3)
    assert len(store.history(job.id)) == 3
    store.model_file(job.id)  # a model was saved


def test_cancel_acknowledged_at_an_epoch_end(store, monkeypatch):
    job = create_job(store, epochs=10)
    record = store.record_epoch

    def record_then_cancel(job_id, worker_id, metrics, **kwargs):
        if metrics.epoch == 3:
            store.request_cancel(job_id)  # arrives just before epoch 3 is recorded
        return record(job_id, worker_id, metrics, **kwargs)

    monkeypatch.setattr(store, "record_epoch", record_then_cancel)
    assert run(store, job.id) == "cancelled"
    done = store.get_job(job.id)
    assert (done.status, done.stop_reason, done.progress.epoch) == ("cancelled", "cancelled", 3)
    assert store.list_checkpoints(job.id)  # kept
    assert not store.artifacts.exists(store.model_key(job.id))


def test_cancel_between_batches_stops_inside_the_epoch(store, monkeypatch):
    job = create_job(store, builtin="digits", epochs=10, batch_size=16)
    record = store.record_epoch

    def cancel_after_recording(job_id, worker_id, metrics, **kwargs):
        ack = record(job_id, worker_id, metrics, **kwargs)
        if metrics.epoch == 2:
            store.request_cancel(job_id)  # seen by should_stop during epoch 3
        return ack

    monkeypatch.setattr(store, "record_epoch", cancel_after_recording)
    hand_over = EpochBookkeeper.submit

    def settle_epoch_2(self, metrics, **kwargs):
        # bookkeeping runs beside the next epoch: let epoch 2 (and the cancel after it) land
        # before epoch 3 trains, so the request arrives between epoch 3's batches
        reason = hand_over(self, metrics, **kwargs)
        if metrics.epoch == 2:
            self.wait()
        return reason

    monkeypatch.setattr(EpochBookkeeper, "submit", settle_epoch_2)
    assert run(store, job.id, monotonic=Ticks(0.1)) == "cancelled"
    done = store.get_job(job.id)
    assert done.status == "cancelled" and done.progress.epoch == 2  # the unfinished epoch 3 is not recorded
    assert [row.epoch for row in store.history(job.id)] == [1, 2]


def test_stop_policy_polls_at_most_every_quarter_second(store):
    job = create_job(store)
    ticks = Ticks(0.01)
    policy = StopPolicy(store, job.id, None, ticks)
    for _ in range(200):  # two seconds
        assert policy() is None
    assert 8 <= policy.polls <= 9


def test_max_runtime_succeeds_with_the_model(store):
    job = create_job(store, builtin="digits", epochs=100, max_runtime_seconds=5)
    assert run(store, job.id, monotonic=Ticks(0.05)) == "succeeded"  # 100 readings of should_stop
    done = store.get_job(job.id)
    assert done.stop_reason == "max_runtime" and done.progress.epoch < 100
    store.model_file(job.id)


def test_divergence_fails_with_the_epoch(store):
    job = create_job(store, builtin="sine", epochs=30, optimizer={"name": "sgd", "learning_rate": 10},
                     model={"hidden_layers": [{"units": 64}, {"units": 64}]})
    assert run(store, job.id) == "failed"
    done = store.get_job(job.id)
    assert done.stop_reason == "diverged"
    assert done.error == f"training diverged at epoch {done.progress.epoch + 1}"
    with pytest.raises(Exception):
        store.model_file(job.id)


def test_exceptions_end_the_job_failed_with_a_readable_message(store):
    info = DatasetInfo(rows=4, features=2, task="classification", classes=[0, 1])
    dataset = store.create_dataset(owner=None, name="gone", info=info,
                                   arrays={"X": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1])})
    spec = job_spec("xor")
    spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"builtin": None, "id": dataset.id})})
    job = store.create_job(owner=None, spec=spec, dataset_id=dataset.id)
    store.artifacts.delete(store.dataset_key(dataset.id))
    assert run(store, job.id) == "failed"
    done = store.get_job(job.id)
    assert done.status == "failed" and done.stop_reason == "error"
    assert done.error.startswith("ArtifactError:") and dataset.id in done.error


def test_lease_lost_mid_run_stops_quietly(store, make_other_store, clock, monkeypatch):
    job = create_job(store, epochs=5)
    other = make_other_store()
    record = store.record_epoch

    def stall_at_epoch_3(job_id, worker_id, metrics, **kwargs):
        if metrics.epoch == 3:
            clock.advance(LEASE + 1)  # this worker stalled; another delivery takes the job over
            assert other.claim_job(job_id, "w2", LEASE).resume_epoch == 2
        return record(job_id, worker_id, metrics, **kwargs)

    monkeypatch.setattr(store, "record_epoch", stall_at_epoch_3)
    assert run(store, job.id) == "lease_lost"
    held = store.get_job(job.id)
    assert held.status == "running" and held.attempt == 2 and held.progress.epoch == 2
    assert [row.epoch for row in store.history(job.id)] == [1, 2]


class Crash(BaseException):
    """Stands in for the process dying: nothing in the task catches it."""


def test_resume_after_a_crash_equals_an_uninterrupted_run(store, clock, monkeypatch):
    options = dict(builtin="digits", epochs=6, batch_size=32, checkpoint={"every_epochs": 2},
                   model={"hidden_layers": [{"units": 16, "dropout": 0.1}]})
    straight = create_job(store, **options)
    assert run(store, straight.id) == "succeeded"

    job = create_job(store, **options)
    record = store.record_epoch

    def crash_at_epoch_5(job_id, worker_id, metrics, **kwargs):
        if metrics.epoch == 5:
            raise Crash
        return record(job_id, worker_id, metrics, **kwargs)

    monkeypatch.setattr(store, "record_epoch", crash_at_epoch_5)
    with pytest.raises(Crash):
        run(store, job.id)
    monkeypatch.setattr(store, "record_epoch", record)
    assert store.get_job(job.id).status == "running"
    assert run(store, job.id, worker="w2") == "skipped"  # the dead worker's lease still holds
    clock.advance(LEASE + 1)
    assert run(store, job.id, worker="w3") == "succeeded"

    done = store.get_job(job.id)
    assert done.attempt == 2 and done.progress.epoch == 6
    resumed_history, straight_history = store.history(job.id), store.history(straight.id)
    assert [row.epoch for row in resumed_history] == list(range(1, 7))
    for a, b in zip(resumed_history, straight_history):
        assert a.model_dump(exclude={"seconds"}) == b.model_dump(exclude={"seconds"})
    assert_resumed_equals_straight(store, job.id, straight.id, attempt=2, from_epoch=4)


def test_a_late_resume_restores_the_history_from_the_epoch_rows_and_stays_exact(store, clock, monkeypatch):
    # early stopping (restoring the best weights) and reduce-on-plateau both active; the crash comes
    # late, long after the best epoch, so their state must come back from the O(model) checkpoint
    options = dict(builtin="iris", epochs=40, batch_size=16, checkpoint={"every_epochs": 3, "keep_last": 1},
                   model={"hidden_layers": [{"units": 6, "batch_norm": True}]},
                   optimizer={"name": "adam", "learning_rate": 0.05},
                   lr_schedule={"name": "reduce_on_plateau", "patience": 2, "factor": 0.5, "min_delta": 1e-3},
                   early_stopping={"patience": 35, "min_delta": 0.05, "restore_best_weights": True})
    straight = create_job(store, **options)
    assert run(store, straight.id) == "succeeded"
    straight_done = store.get_job(straight.id)
    assert straight_done.best_epoch < 30 and straight_done.progress.epoch == 40

    job = create_job(store, **options)
    record = store.record_epoch

    def crash_at_epoch_38(job_id, worker_id, metrics, **kwargs):
        if metrics.epoch == 38:
            raise Crash
        return record(job_id, worker_id, metrics, **kwargs)

    monkeypatch.setattr(store, "record_epoch", crash_at_epoch_38)
    with pytest.raises(Crash):
        run(store, job.id)
    monkeypatch.setattr(store, "record_epoch", record)
    [checkpoint] = store.list_checkpoints(job.id)[-1:]
    with store.artifacts.open(store.checkpoint_key(job.id, checkpoint.epoch)) as handle, \
            np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
        assert "history" not in json.loads(str(data["meta"]))

    given = []
    load_checkpoint = training.Trainer.load_checkpoint

    def remember_history(self, path, history=None):
        given.append(history)
        return load_checkpoint(self, path, history)
    monkeypatch.setattr(training.Trainer, "load_checkpoint", remember_history)
    clock.advance(LEASE + 1)
    assert run(store, job.id, worker="w2") == "succeeded"
    [history] = given
    assert [entry["epoch"] for entry in history] == list(range(1, 37))  # the rows up to the checkpoint
    assert history == [row.model_dump() for row in store.history(job.id)[:36]]

    done = store.get_job(job.id)
    assert (done.best_epoch, done.stop_reason) == (straight_done.best_epoch, straight_done.stop_reason)
    assert [row.model_dump(exclude={"seconds"}) for row in store.history(job.id)] == \
        [row.model_dump(exclude={"seconds"}) for row in store.history(straight.id)]
    assert len({row.lr for row in store.history(job.id)}) > 1  # the plateau schedule acted
    assert_resumed_equals_straight(store, job.id, straight.id, attempt=2, from_epoch=36)


def test_train_config_maps_every_section():
    spec = job_spec(
        "iris", epochs=7, batch_size=8, seed=5, l2=0.01, clip_norm=1.5,
        dataset={"builtin": "iris", "validation_split": 0.3, "standardize": False},
        model={"hidden_layers": [{"units": 4, "activation": "tanh", "dropout": 0.2, "batch_norm": True}],
               "init": "xavier_normal"},
        optimizer={"name": "adamw", "learning_rate": 0.01, "beta1": 0.8, "weight_decay": 0.05},
        lr_schedule={"name": "step", "step_size": 3, "gamma": 0.5},
        early_stopping={"monitor": "val_accuracy", "patience": 4, "restore_best_weights": True},
    )
    config = train_config(spec)
    assert (config.epochs, config.batch_size, config.seed, config.l2, config.clip_norm) == (7, 8, 5, 0.01, 1.5)
    assert (config.validation_split, config.standardize, config.dtype) == (0.3, False, "float32")
    assert (config.loss, config.output_activation, config.init) == ("categorical_crossentropy", "softmax", "xavier_normal")
    [layer] = config.hidden_layers
    assert (layer.units, layer.activation, layer.dropout, layer.batch_norm) == (4, "tanh", 0.2, True)
    assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.beta1,
            config.optimizer.weight_decay) == ("adamw", 0.01, 0.8, 0.05)
    assert (config.lr_schedule.name, config.lr_schedule.step_size, config.lr_schedule.gamma) == ("step", 3, 0.5)
    assert (config.early_stopping.monitor, config.early_stopping.patience,
            config.early_stopping.restore_best_weights) == ("val_accuracy", 4, True)
    assert train_config(job_spec("xor")).early_stopping is None


def test_celery_app_configuration(tmp_path):
    settings = Settings(_env_file=None, broker_url=f"sqla+sqlite:///{tmp_path / 'b' / 'broker.db'}", worker_concurrency=3)
    conf = create_app(settings).conf
    # the embedded broker: kombu's SQLAlchemy transport subclassed (service/broker.py) on the same file
    assert (conf.broker_url, conf.broker_transport) == (settings.broker_url.removeprefix("sqla+"),
                                                        "service.broker:EmbeddedTransport")
    assert conf.task_acks_late is True and conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == TRAINING_QUEUE and conf.task_ignore_result is True
    assert conf.broker_connection_retry_on_startup is True and conf.worker_concurrency == 3


def test_module_app_registers_the_task():
    from worker.app import app

    assert TRAIN_TASK in app.tasks


@pytest.fixture
def make_other_store(store, clock):
    """Another process's Store on the same database and artifact store as `store`."""
    stores = []

    def make():
        other = Store(store.settings, clock=clock, new_id=lambda: f"{next(counter):032x}")
        stores.append(other)
        return other

    counter = itertools.count(10_000)
    yield make
    for other in stores:
        other.dispose()


def test_forked_worker_processes_build_their_own_store(store):
    """Celery's prefork children must not reuse the parent's pooled connections."""
    import multiprocessing

    from celery.signals import worker_process_init

    tasks.set_process_store(store)
    store.ping()  # the parent now holds a pooled connection
    try:
        context = multiprocessing.get_context("fork")
        answers = context.Queue()

        def child():
            worker_process_init.send(sender=None)  # what Celery sends in each new child
            answers.put(tasks._store is None)

        process = context.Process(target=child)
        process.start()
        process.join(30)
        assert answers.get(timeout=5) is True
        assert tasks.process_store() is store  # the parent keeps its own
    finally:
        tasks.set_process_store(None)


def test_stop_policy_renews_the_lease_inside_a_long_epoch(store, make_other_store, clock):
    job = create_job(store)
    store.claim_job(job.id, "w1", 3.0)
    policy = StopPolicy(store, job.id, None, Ticks(0.3), worker_id="w1", lease_seconds=3.0)
    clock.advance(2)
    for _ in range(5):  # 1.5 s of batches: one renewal (every lease / 3)
        assert policy() is None
    assert policy.renewals == 1
    clock.advance(2)  # past the claim's lease, within the renewed one
    assert make_other_store().claim_job(job.id, "w2", 3.0) is None


def test_stop_policy_stops_a_run_that_lost_its_lease_between_batches(store, make_other_store, clock):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    policy = StopPolicy(store, job.id, None, Ticks(0.3), worker_id="w1", lease_seconds=LEASE)
    assert policy() is None
    clock.advance(LEASE + 1)  # this worker stalled; another delivery took over
    assert make_other_store().claim_job(job.id, "w2", LEASE) is not None
    with pytest.raises(LeaseLost):
        policy()


def test_stop_policy_trains_on_through_a_database_blip(store, monkeypatch):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    policy = StopPolicy(store, job.id, None, Ticks(0.3), worker_id="w1", lease_seconds=LEASE)

    def unreachable(*_args):
        raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(store, "cancel_requested", unreachable)
    assert policy() is None
    monkeypatch.undo()
    store.request_cancel(job.id)
    assert policy() == "cancelled"


def test_a_database_outage_interrupts_the_run_without_failing_the_job(store, monkeypatch):
    job = create_job(store, epochs=5)
    record = store.record_epoch

    def outage_at_epoch_3(job_id, worker_id, metrics, **kwargs):
        if metrics.epoch == 3:
            raise OperationalError("UPDATE jobs", {}, ConnectionError("server closed the connection"))
        return record(job_id, worker_id, metrics, **kwargs)

    monkeypatch.setattr(store, "record_epoch", outage_at_epoch_3)
    assert run(store, job.id) == "interrupted"
    held = store.get_job(job.id)
    assert (held.status, held.error, held.progress.epoch) == ("running", None, 2)  # resumed when the lease expires


def test_shutdown_hands_the_job_back_and_the_next_run_resumes_it_exactly(store, monkeypatch):
    options = dict(builtin="digits", epochs=6, batch_size=32, checkpoint={"every_epochs": 2},
                   model={"hidden_layers": [{"units": 16}]})
    straight = create_job(store, **options)
    assert run(store, straight.id) == "succeeded"

    job = create_job(store, **options)
    record = store.record_epoch

    def sigterm_after_epoch_3(job_id, worker_id, metrics, **kwargs):
        ack = record(job_id, worker_id, metrics, **kwargs)
        if metrics.epoch == 3:
            training.SHUTDOWN.set()  # what the SIGTERM handler does (worker/app.py)
        return ack

    monkeypatch.setattr(store, "record_epoch", sigterm_after_epoch_3)
    assert run(store, job.id) == "released"
    assert not training.RUNNING.is_set()
    handed_back = store.get_job(job.id)
    assert (handed_back.status, handed_back.attempt, handed_back.progress.epoch) == ("queued", 0, 3)
    monkeypatch.setattr(store, "record_epoch", record)

    assert run(store, job.id, worker="w2") == "succeeded"  # SHUTDOWN is per run: cleared at the start
    done = store.get_job(job.id)
    assert (done.attempt, [row.epoch for row in store.history(job.id)]) == (1, list(range(1, 7)))
    assert_resumed_equals_straight(store, job.id, straight.id, attempt=1, from_epoch=2)


@pytest.mark.parametrize("crash_at, from_epoch", [(11, 10), (10, 8)])
def test_cross_validation_resumes_exactly_inside_a_fold(store, clock, monkeypatch, crash_at, from_epoch):
    """3 folds of 4 epochs then the refit: epochs 1-4, 5-8, 9-12, 13-. Crashing at epoch 11 resumes
    from epoch 10's checkpoint, inside fold 2; at epoch 10, from epoch 8's, the end of fold 1, whose
    result (recorded with epoch 9) the claim takes back out of the summary until it is redone."""
    options = dict(builtin="digits", epochs=4, batch_size=32, checkpoint={"every_epochs": 2},
                   cross_validation={"folds": 3}, model={"hidden_layers": [{"units": 16, "dropout": 0.1}]})
    straight = create_job(store, **options)
    assert run(store, straight.id) == "succeeded"

    job = create_job(store, **options)
    record = store.record_epoch

    def crash(job_id, worker_id, metrics, **kwargs):
        if metrics.epoch == crash_at:
            raise Crash
        return record(job_id, worker_id, metrics, **kwargs)

    monkeypatch.setattr(store, "record_epoch", crash)
    with pytest.raises(Crash):
        run(store, job.id)
    monkeypatch.setattr(store, "record_epoch", record)
    assert [fold.fold for fold in store.get_job(job.id).cross_validation.folds] == [0, 1]
    clock.advance(LEASE + 1)
    claim = store.claim_job(job.id, "w2", LEASE)
    assert claim.resume_epoch == from_epoch
    kept = [fold.fold for fold in store.get_job(job.id).cross_validation.folds]
    assert kept == ([0, 1] if from_epoch == 10 else [0])
    clock.advance(LEASE + 1)  # w2 dies at once; w3 resumes
    assert run(store, job.id, worker="w3") == "succeeded"

    done, reference = store.get_job(job.id), store.get_job(straight.id)
    assert done.cross_validation == reference.cross_validation and done.cross_validation.mean is not None
    resumed_history, straight_history = store.history(job.id), store.history(straight.id)
    assert [(row.fold, row.fold_epoch) for row in resumed_history][:13] == \
        [(fold, epoch) for fold in range(3) for epoch in range(1, 5)] + [(3, 1)]
    assert [row.epoch for row in resumed_history] == list(range(1, len(straight_history) + 1))
    for a, b in zip(resumed_history, straight_history, strict=True):
        assert a.model_dump(exclude={"seconds"}) == b.model_dump(exclude={"seconds"})
    assert_resumed_equals_straight(store, job.id, straight.id, attempt=3, from_epoch=from_epoch)
