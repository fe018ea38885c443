"""The model card: what produced a model, written into its file's meta and onto the job.

Everything here is a function of the job's inputs and of the software that trained it, never of
time or place, so the same spec, data and seed on the same code and BLAS give a byte-identical
model file. `attempt` and `resumed` are the exception by design: a resumed job's weights equal an
uninterrupted run's, but its card (and so its file's sha256) says it was resumed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from service.specs import BlasInfo, JobSpec, ModelCard
from service.store import ClaimedJob
from service.version import package_version
from worker.datasets import Dataset

SPEC_LABELS = ("name", "tags")  # free labels: they do not change what is trained
DATASET_ARRAYS = ("X", "y", "X_val", "y_val")


def model_card(claim: ClaimedJob, data: Dataset) -> ModelCard:
    return ModelCard(
        dataset_id=claim.dataset_id,
        dataset_sha256=dataset_sha256(claim, data),
        spec_sha256=spec_sha256(claim.spec),
        package_version=package_version(),
        numpy_version=np.__version__,
        blas=numpy_blas(),
        seed=claim.spec.seed,
        attempt=claim.attempt,
        resumed=claim.resume_checkpoint is not None,
        resumed_from_epoch=claim.resume_epoch if claim.resume_checkpoint is not None else None,
    )


def spec_sha256(spec: JobSpec) -> str:
    """sha256 of the spec as canonical JSON: sorted keys, no spaces, ASCII, labels left out."""
    body = {key: value for key, value in spec.model_dump(mode="json").items() if key not in SPEC_LABELS}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def dataset_sha256(claim: ClaimedJob, data: Dataset) -> str:
    """An upload: the sha256 recorded for its stored object. A built-in: its generated arrays'."""
    if claim.dataset_sha256 is not None:
        return claim.dataset_sha256
    return arrays_sha256(data)


def arrays_sha256(data: Dataset) -> str:
    """For each array present, in the order X, y, X_val, y_val: a line `name dtype shape\\n`
    (dtype little-endian, numpy's `str`, e.g. `<f8`; shape comma-separated) and then its bytes in
    C order."""
    digest = hashlib.sha256()
    for name in DATASET_ARRAYS:
        array = getattr(data, name)
        if array is None:
            continue
        array = np.asarray(array)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        shape = ",".join(str(n) for n in array.shape)
        digest.update(f"{name} {array.dtype.str} {shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def numpy_blas() -> BlasInfo:
    """NumPy's BLAS as threadpoolctl sees it in this process (others, e.g. SciPy's, are skipped)."""
    from threadpoolctl import threadpool_info

    libraries = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    numpy_dir = Path(np.__file__).resolve().parent
    ours = [info for info in libraries if _inside_numpy(Path(info.get("filepath") or ""), numpy_dir)]
    chosen = (ours or libraries or [None])[0]
    if chosen is None:
        return BlasInfo()
    return BlasInfo(library=chosen.get("internal_api"), version=chosen.get("version"),
                    architecture=chosen.get("architecture"), threads=chosen.get("num_threads"))


def _inside_numpy(library: Path, numpy_dir: Path) -> bool:
    # wheels ship NumPy's BLAS in site-packages/numpy.libs (Linux) or numpy/.dylibs (macOS)
    site = numpy_dir.parent
    return any(library.is_relative_to(folder) for folder in (numpy_dir, site / "numpy.libs"))
