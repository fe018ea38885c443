"""Pick at most `points` rows of a long history for a chart, on the server (GET .../history?points=N).

The first and the last epoch are always kept; the epochs between are cut into equal buckets, and
each bucket keeps its lowest and its highest loss (val_loss when the job measured it, else
train_loss), so spikes and the best epoch survive where every-k-th-row sampling would drop them.
Rows are returned unchanged (real epochs, never averages), in epoch order.
"""
from __future__ import annotations


def downsample(rows: list[tuple], points: int, columns: tuple[str, ...]) -> list[tuple]:
    if len(rows) <= points:
        return rows
    if points < 2:
        raise ValueError("points must be at least 2")
    val, train = columns.index("val_loss"), columns.index("train_loss")
    at = val if any(row[val] is not None for row in rows) else train
    middle = rows[1:-1]
    buckets = max(1, (points - 2) // 2)
    kept = [rows[0]]
    for b in range(buckets):
        bucket = middle[b * len(middle) // buckets:(b + 1) * len(middle) // buckets]
        measured = [row for row in bucket if row[at] is not None]
        if not measured:
            kept += bucket[:1]
            continue
        low = min(measured, key=lambda row: row[at])
        high = max(measured, key=lambda row: row[at])
        kept += sorted({low, high}, key=lambda row: row[0]) if points > 3 else [low]
    kept.append(rows[-1])
    return kept
