r"""Speech-emotion load test: Locust users classifying real audio windows through Triton.

Only scenarios live here; transport, timing and the request events are
:class:`loadtest.users.TritonUser`'s. Each user keeps one request in flight
(no wait time), so ``--users`` is the number of concurrent requests the dynamic
batcher can merge.

Headless, against a running server (gRPC port; ``--protocol http`` with the HTTP port)::

    locust -f loadtest/locustfile.py --headless -u 16 -r 16 -t 30s \
        --host 127.0.0.1:8001 --model ser_int8 --windows-per-request 1 \
        --manifest .cache/demo/checkpoint/split.json --max-p95-ms 250 --max-failure-ratio 0.01

Web UI: drop ``--headless`` (the options appear in the start form). More load
than one machine makes: ``--master`` on one host, ``--worker --master-host H``
on each load host (same options); every worker builds its own requests from
the audio source, the master aggregates the stats and judges the gates.

``--warmup-s 10`` reports the steady state only (statistics reset after 10 s;
warm-up failures still fail the run).

The exit code is 1 when a gate (``--max-p95-ms``, ``--max-p99-ms``,
``--max-failure-ratio``) is broken, else Locust's (1 on any failure).
"""

from __future__ import annotations

from locust import constant, events, task

from loadtest.users import TritonUser, install_listeners

install_listeners(events)


class SerUser(TritonUser):
    """Classifies the next prepared request of real windows, back to back."""

    wait_time = constant(0)

    @task
    def classify_windows(self) -> None:
        """One request of ``--windows-per-request`` windows."""
        self.infer_next()
