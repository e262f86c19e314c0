"""A real single-node SLURM (slurmctld + slurmd + munged on localhost) in a scratch folder.

Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install -y slurm-wlm munge``), run as
root. Everything lives in the folder: a fresh munge key and socket, slurm.conf on free ports,
state, spool and logs; ``SLURM_CONF`` in the returned environment points the SLURM commands
(sbatch, squeue, scancel) at it. Nothing in /etc is read or changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "sinfo", "squeue", "scancel", "scontrol")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here; the message says what is missing or what failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing() -> str | None:
    """Why SLURM cannot be started here (None when it can be tried)."""
    if os.geteuid() != 0:
        return "the single-node SLURM fixture runs slurmd as root; run the tests as root"
    absent = [name for name in DAEMONS + COMMANDS if shutil.which(name, path=_path()) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install -y slurm-wlm munge)"
    return None


def _path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def _conf(folder: Path, memory_mb: int) -> str:
    return f"""\
ClusterName=deidtest
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge/socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
InactiveLimit=0
MinJobAge=5
KillWait=5
Waittime=0
NodeName=localhost CPUs=2 RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _log_tail(folder: Path) -> str:
    lines = []
    for log in sorted((folder / "log").glob("*.log")) + [folder / "munge" / "munged.log"]:
        if log.exists():
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            lines += [f"{log.name}: {line}" for line in tail]
    return "\n".join(lines)


@contextlib.contextmanager
def single_node_slurm(folder: Path, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd in ``folder``; yield the environment to reach them."""
    reason = missing()
    if reason:
        raise SlurmUnavailable(reason)
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    conf = folder / "slurm.conf"
    conf.write_text(_conf(folder, memory_mb=4000))
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=_path())
    munge = folder / "munge"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={munge}/socket", f"--key-file={key}",
             f"--log-file={munge}/munged.log", f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/seed"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: (munge / "socket").exists(), timeout, "munged did not create its socket", folder, procs)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["slurmd", "-D", "-N", "localhost"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() == "idle"

        _wait(idle, timeout, "sinfo did not show the node idle", folder, procs)
        yield env
    finally:
        _cancel_jobs(env)
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _kill_leftovers(str(conf))


def _cancel_jobs(env: dict[str, str], timeout: float = 30.0) -> None:
    """Cancel this cluster's jobs and wait until its queue is empty."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=10)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)


def _kill_leftovers(conf: str) -> None:
    """SIGKILL what this cluster's slurmd started and left behind (a job step outliving slurmd).

    They are found by the SLURM_CONF they inherited, which names this fixture's own slurm.conf.
    """
    marker = f"SLURM_CONF={conf}".encode()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                os.kill(pid, 9)


def _wait(ready: object, timeout: float, what: str, folder: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        dead = [str(p.args[0]) for p in procs if p.poll() is not None]  # type: ignore[index]
        if dead or time.monotonic() > deadline:
            state = f"{', '.join(dead)} exited" if dead else f"not ready after {timeout:.0f} s"
            raise SlurmUnavailable(f"{what} ({state}); logs:\n{_log_tail(folder)}")
        time.sleep(0.3)
