"""Whether the Hugging Face hub can be reached, decided in seconds (the one home of that question).

transformers and datasets retry an unreachable hub for half a minute or more before they fail;
model sources and benchmarks ask here first, so a machine without a network gets its one error
line at once. Offline settings (`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`, `HF_DATASETS_OFFLINE`)
answer no without a probe; behind a proxy a direct probe says nothing, so the answer is yes.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

PROBE_SECONDS = 3.0
OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_requested() -> bool:
    """The user asked the hub libraries to work from their caches only."""
    return any(os.environ.get(name, "0") not in ("", "0", "false", "False") for name in OFFLINE)


def hub_reachable() -> bool:
    if offline_requested():
        return False
    if any(os.environ.get(name) for name in PROXIES):
        return True
    return _hub_answers()


@functools.cache
def _hub_answers() -> bool:
    """A TCP connection to the hub's host within a few seconds, asked once per process."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    answer: list[bool] = []

    def probe() -> None:  # DNS alone can stall: run in a thread and stop waiting on time
        try:
            socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    return bool(answer and answer[0])
