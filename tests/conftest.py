"""Shared fixtures: small generated archives and real dask clusters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from deid_batch.synth import generate_archive


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    """24 synthetic files in nested patient/study/series folders (basenames repeat)."""
    root = tmp_path_factory.mktemp("archive") / "pacs"
    generate_archive(root, 24, seed=7, patients=3)
    return root


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "run.key"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return str(path)


@pytest.fixture(scope="session")
def local_client():
    """A LocalCluster with 2 worker processes."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dask_processes():
    """`dask scheduler` and `dask worker` started as separate processes on 127.0.0.1."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    sched = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", "2",
                               "--nthreads", "1", "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client

        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout="5s") as c:
                    c.wait_for_workers(2, timeout=30)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for proc in (worker, sched):
            proc.terminate()
        for proc in (worker, sched):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
