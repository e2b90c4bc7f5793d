"""Side-by-side benchmark of the harness hot path against Locust and wrk (issue 6).

Run ``python -m benchmarks.run [--smoke] [--json out.json]``.
"""
