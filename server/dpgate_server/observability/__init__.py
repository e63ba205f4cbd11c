"""What operators see: Prometheus metrics, structured logs with request ids, health.

Nothing here decides anything about privacy or budgets; it only observes. Metrics are
served on their own listener (loopback by default) because their latencies depend on the
data; see `metrics.MetricsListener`.
"""
