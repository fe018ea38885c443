"""Dependencies point one way: `service` imports nothing of `worker` but the pure engine `worker.nn`."""
import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def worker_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "worker" or name.startswith("worker.")}


def test_service_imports_only_the_engine_of_the_worker():
    offenders = []
    for path in sorted(SERVICE.rglob("*.py")):
        for name in worker_imports(path.read_text()):
            if not name.startswith("worker.nn"):
                offenders.append(f"{path.relative_to(SERVICE.parent)}: {name}")
    assert offenders == []


def test_the_checker_sees_a_forbidden_import():
    assert worker_imports("from worker.training import run_job\nimport worker.tasks\nfrom worker.nn import Model\n") == {
        "worker.training.run_job", "worker.tasks", "worker.nn.Model"}
