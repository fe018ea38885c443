"""The NumPy backpropagation engine: numpy and the standard library only.

    trainer = Trainer(TrainConfig(...), X, y)
    result = trainer.fit(on_epoch_end=..., should_stop=...)
    trainer.model.save("model.npz");  load_model("model.npz").predict(X)

See docs/engine.md for the API and README.md for the model file format and the benchmark.
"""
from .callbacks import EpochEnd, FitResult
from .config import EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from .model_file import Model, load_model
from .network import Network
from .trainer import Trainer

__all__ = [
    "TrainConfig", "LayerConfig", "OptimizerConfig", "ScheduleConfig", "EarlyStoppingConfig",
    "Trainer", "EpochEnd", "FitResult", "Model", "load_model", "Network",
]
