"""Trained models that travel (issue 9): the model as ONNX, a predict endpoint, and the per-process
cache of loaded models behind both. Runs the pure engine (`worker.nn`), nothing else of the worker.

- source.py: where the API gets a job's model bytes (the one place that reads them)
- cache.py: bounded LRU caches keyed by the model file's sha256
- onnx_export.py: a Model as an ONNX graph
- predict.py: request rows in, the engine's outputs out
"""
