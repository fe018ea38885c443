"""The NumPy backpropagation engine: numpy and the standard library only.

    trainer = Trainer(TrainConfig(...), X, y)
    result = trainer.fit(on_epoch_end=..., should_stop=...)
    trainer.model.save("model.npz");  load_model("model.npz").predict(X)

    Trainer(TrainConfig(..., freeze=[0]), X, y, transfer=Transfer.from_model(source, [0, 1]))
    Trainer(TrainConfig(task="autoencoder", loss="mse", output_activation="linear", ...), X).model.encoder()
    CrossValidation(config, X, y, folds=5).fit(...)

See docs/engine.md for the API and README.md for the model file format and the benchmark. The
names every field accepts come from the registries (`worker.nn.names`).
"""
from .callbacks import EpochEnd, FitResult
from .config import EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from .cross_validation import CrossValidation, CrossValidationResult, FoldResult, fold_indices
from .model_file import Model, load_model
from .network import Network
from .trainer import Trainer
from .transfer import Transfer, check_layer_shapes, layer_shapes_from_meta

__all__ = [
    "TrainConfig", "LayerConfig", "OptimizerConfig", "ScheduleConfig", "EarlyStoppingConfig",
    "Trainer", "EpochEnd", "FitResult", "Model", "load_model", "Network",
    "Transfer", "check_layer_shapes", "layer_shapes_from_meta",
    "CrossValidation", "CrossValidationResult", "FoldResult", "fold_indices",
]
