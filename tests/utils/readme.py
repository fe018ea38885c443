"""The README's plain-NumPy snippet that runs a model file, executed as users would paste it."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def run_model_snippet() -> str:
    match = re.search(r"<!-- snippet: run-model -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its run-model snippet"
    return match.group(1)


def run_snippet(source: str, path, X):
    """Run the snippet on model file `path` and inputs `X`; returns its output `x`."""
    namespace = {"path": path, "X": X}
    exec(compile(source, str(README), "exec"), namespace)
    return namespace["x"]
