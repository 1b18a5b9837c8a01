"""A real Spark standalone cluster for tests: one master and N workers started with the PySpark
package's own launcher (``bin/spark-class``), bound to 127.0.0.1, stopped by PID.

    with standalone_cluster(workers=2) as master_url:
        spark = SparkSession.builder.master(master_url)...
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_WORKER_DIR": str(work / "work"),
        "SPARK_LOCAL_DIRS": str(work / "scratch"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    })
    return env


def _wait_http(url: str, timeout: float, what: str, procs: list[subprocess.Popen]) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: a Spark process exited with {p.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError as err:
            last = str(err)
        time.sleep(0.5)
    raise RuntimeError(f"{what}: no answer from {url} within {timeout:.0f} s ({last})")


@contextlib.contextmanager
def standalone_cluster(work: Path, workers: int = 2, cores: int = 1,
                       memory: str = "1g") -> Iterator[str]:
    """Start a master and ``workers`` workers; yield the master URL; stop them by PID."""
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work)
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, ui = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    logs = []

    def start(args: list[str], name: str) -> None:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
        logs.append(log)
        procs.append(subprocess.Popen([spark_class, *args], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
               "--port", str(port), "--webui-port", str(ui)], "master")
        master = f"spark://127.0.0.1:{port}"
        _wait_http(f"http://127.0.0.1:{ui}/json/", 90, "Spark master", procs)
        for i in range(workers):
            start(["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1",
                   "--port", str(_free_port()), "--webui-port", str(_free_port()),
                   "--cores", str(cores), "--memory", memory,
                   "--work-dir", str(work / f"work{i}")], f"worker{i}")
        deadline = time.monotonic() + 90
        while True:
            import json

            state = json.loads(_wait_http(f"http://127.0.0.1:{ui}/json/", 30, "Spark master",
                                          procs))
            alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) >= workers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(alive)} of {workers} Spark workers registered")
            time.sleep(0.5)
        yield master
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        for log in logs:
            log.close()
