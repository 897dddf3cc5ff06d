"""Quantiles of a Prometheus histogram, as PromQL's histogram_quantile computes them (parts B and E)."""

from __future__ import annotations


def histogram_quantiles(metrics_text: str, name: str) -> dict[str, float]:
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {"count": total}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        rank = q * total
        previous_bound, previous_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if bound == float("inf"):
                    out[label] = previous_bound * 1000
                else:  # linear interpolation inside the bucket, as PromQL's histogram_quantile does
                    fraction = (rank - previous_count) / max(count - previous_count, 1e-9)
                    out[label] = (previous_bound + (bound - previous_bound) * fraction) * 1000
                break
            previous_bound, previous_count = bound, count
    return out
