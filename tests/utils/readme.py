"""README's snippets that run a model file (plain NumPy) or its ONNX export (onnxruntime), executed
as users would paste them."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README.md lost its {name} snippet"
    return match.group(1)


def run_model_snippet() -> str:
    return readme_snippet("run-model")


def run_onnx_snippet() -> str:
    return readme_snippet("run-onnx")


def run_snippet(source: str, path, X, result: str = "x"):
    """Run the snippet on model file `path` and inputs `X`; returns its variable `result`."""
    namespace = {"path": path, "X": X}
    exec(compile(source, str(README), "exec"), namespace)
    return namespace[result]
