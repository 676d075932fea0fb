"""A glance-api process of a test harness (tests/keystone/compare.py,
tests/tempest/harness.py): waiting for it to answer /healthcheck, the tail of
its log, and stopping it. A subclass sets `popen`, `base` (its URL) and `log`
(its log file), and may set `name`."""

import contextlib
import signal
import subprocess
import time

import requests

HTTP = requests.Session()
HTTP.trust_env = False


class GlanceProcess:
    name = "glance-api"
    popen = None
    base = ""
    log = ""

    def wait(self, timeout):
        """Returns once /healthcheck answers 200; raises if the process exits or
        `timeout` seconds pass first, with the end of its log."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.popen.returncode} "
                                   f"before it answered:\n{self.log_tail()}")
            try:
                r = HTTP.get(self.base + "/healthcheck", timeout=5)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = str(e)
            time.sleep(0.3)
        raise RuntimeError(f"/healthcheck did not answer 200 in {timeout}s "
                           f"(last: {last}):\n{self.log_tail()}")

    def log_tail(self, n=40):
        with contextlib.suppress(OSError):
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        return ""

    def stop(self, grace=30):
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
