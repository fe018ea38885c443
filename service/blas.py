"""The BLAS thread count of this process: training processes and the API process alike."""
from __future__ import annotations


def limit_blas_threads(threads: int) -> None:
    """Fix the BLAS thread count of this process (0: leave it). One thread makes training results
    independent of how many threads a machine offers (so a resumed run equals an uninterrupted
    one), and keeps predict in the API fast under load: small products gain nothing from threads,
    and OpenBLAS threads waiting on busy cores cost milliseconds."""
    if threads <= 0:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
