"""Usage mistakes on the command line: exit 2, one line naming the argument and the fix, nothing
left behind (issue 9, items 1, 3 and 7)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deid_batch import replace_identifiers
from deid_batch.cli import _parser, main
from deid_batch.synth import generate_archive

ROOT = Path(__file__).parent.parent
NOBODY = 65534

# (command, argument, role) for every file argument of every subcommand. Roles: "src" (an input
# folder: only a missing one is a usage error; unreadable files inside are manifest rows),
# "dicom", "recipe", "mapping", "ids", "key", "json", "yaml" (files read), "file-out" and
# "folder-out" (created).
ARGS = [
    ("scan", "SRC", "src"), ("scan", "--ids", "file-out"), ("scan", "--config", "json"),
    ("scan", "--dask-config", "yaml"),
    ("apply", "SRC", "src"), ("apply", "--out", "folder-out"), ("apply", "--recipe", "recipe"),
    ("apply", "--vars", "mapping"), ("apply", "--ids", "ids"), ("apply", "--manifest", "folder-out"),
    ("apply", "--key-file", "key"), ("apply", "--config", "json"), ("apply", "--dask-config", "yaml"),
    ("strip-private", "SRC", "src"), ("strip-private", "--out", "folder-out"),
    ("strip-private", "--manifest", "folder-out"), ("strip-private", "--dask-config", "yaml"),
    ("verify", "--ids", "ids"),
    ("inspect", "FILE", "dicom"), ("inspect", "--recipe", "recipe"),
    ("demo", "FOLDER", "folder-out"), ("demo", "--dask-config", "yaml"),
]
PROBLEMS = ("missing", "wrong-kind", "unreadable")


def _cases():
    for command, arg, role in ARGS:
        for problem in PROBLEMS:
            if role == "src" and problem != "missing":
                continue  # a bad file or folder among the inputs is a manifest row, not a usage error
            if role == "folder-out" and problem == "missing":
                continue  # an output folder that does not exist yet is created
            yield pytest.param(command, arg, role, problem, id=f"{command} {arg} {problem}")


@pytest.fixture(scope="module")
def world():
    """A folder every user can read (the unreadable cases run as an unprivileged user)."""
    top = Path(tempfile.mkdtemp(prefix="deid-batch-args-"))
    top.chmod(0o755)
    generate_archive(top / "pacs", 2, seed=3)
    for p in top.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    (top / "scratch").mkdir(mode=0o777)  # default outputs: writable by the unprivileged user too
    (top / "scratch").chmod(0o777)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def _bad(world: Path, name: str, role: str, problem: str) -> str:
    """A path of the given role that is missing, of the wrong kind, or cannot be read/written."""
    case = world / "cases" / name
    case.mkdir(parents=True)
    case.chmod(0o755)
    if problem == "missing":
        return str(case / "no-such-folder" / "ids.parquet" if role == "file-out" else case / "nope")
    if role == "file-out":
        if problem == "wrong-kind":
            (case / "ids.parquet").mkdir()
            return str(case / "ids.parquet")
        locked = case / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        return str(locked / "ids.parquet")
    if role == "folder-out":
        if problem == "wrong-kind":
            (case / "out").write_text("a file\n")
            return str(case / "out")
        locked = case / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return str(locked / "out")
    path = case / {"ids": "ids.parquet", "mapping": "mapping.csv", "json": "config.json",
                   "yaml": "dask.yaml", "recipe": "deid.recipe", "key": "run.key", "dicom": "x.dcm"}[role]
    if problem == "wrong-kind":
        if role == "key":  # a folder where the key file should be
            path.mkdir()
            return str(path)
        content = {
            "ids": b"PatientID,id\nA,1\n",  # the mapping given as --ids
            "mapping": next((world / "pacs").rglob("*.dcm")).read_bytes(),  # a DICOM file as mapping
            "json": b'["not", "an", "object"]',
            "yaml": b"- a list\n- not a mapping\n",
            "recipe": next((world / "pacs").rglob("*.dcm")).read_bytes(),
            "dicom": b"PatientID,id\nA,1\n",
        }[role]
        path.write_bytes(content)
        return str(path)
    good = {"ids": b"PAR1", "mapping": b"PatientID,id\nA,1\n", "json": b"{}", "yaml": b"{}\n",
            "recipe": b"FORMAT dicom\n%header\nREMOVE PatientName\n", "key": b"k" * 32, "dicom": b"x"}
    path.write_bytes(good[role])
    path.chmod(0o000)
    return str(path)


def _argv(command: str, arg: str, value: str, world: Path) -> list[str]:
    pacs, scratch = str(world / "pacs"), str(world / "scratch")
    defaults = {
        "scan": {"SRC": pacs, "--ids": f"{scratch}/ids.parquet"},
        "apply": {"SRC": pacs, "--out": f"{scratch}/out"},
        "strip-private": {"SRC": pacs, "--out": f"{scratch}/out"},
        "verify": {"OUTDIR": scratch, "--ids": "unused"},
        "inspect": {"FILE": str(next((world / "pacs").rglob("*.dcm")))},
        "demo": {"FOLDER": f"{scratch}/demo"},
    }[command]
    values = {**defaults, arg: value}
    argv = [command]
    argv += [v for k, v in values.items() if not k.startswith("-")]
    for k, v in values.items():
        if k.startswith("-"):
            argv += [k, v]
    if command not in ("verify", "inspect"):
        argv += ["--workers", "0", "--no-progress"]
    if command == "demo":
        argv += ["--files", "2"]
    return argv


def _tree(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def _run(argv: list[str], *, as_nobody: bool) -> tuple[int, str]:
    if not as_nobody:
        proc = subprocess.run([sys.executable, "-m", "deid_batch", *argv], capture_output=True, text=True,
                              cwd="/tmp")
        return proc.returncode, proc.stderr
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, "-m", "deid_batch", *argv], capture_output=True, text=True,
                          cwd="/tmp", env={**os.environ, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"})
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(("command", "arg", "role", "problem"), list(_cases()))
def test_every_file_argument_missing_of_the_wrong_kind_or_unreadable_exits_2_with_one_line(
        world, command, arg, role, problem, capsys):
    name = re.sub(r"\W+", "_", f"{command}{arg}{problem}")
    value = _bad(world, name, role, problem)
    argv = _argv(command, arg, value, world)
    before = _tree(world)
    if problem == "unreadable":
        code, err = _run(argv, as_nobody=os.geteuid() == 0)  # root reads everything
    else:
        code = main(argv)
        err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"deid-batch {command}: error: "), line
    named = arg if arg.startswith("-") else value  # a positional is named by the path given
    assert named in line, line
    assert re.search(r"; (give|create|write|choose|check|run)\b", line), f"no fix in: {line}"
    assert "Traceback" not in err
    assert _tree(world) == before  # a refused run leaves nothing behind


def _ids_table(path: Path) -> None:
    pq.write_table(pa.table({"source": ["/x"], "entity_id": ["A"], "item_id": ["1"]}), path)


@pytest.mark.parametrize("refusal", ["workers", "partition", "resume", "ids-kind", "mapping-key",
                                     "scan-workers", "demo-files"])
def test_a_refused_run_leaves_nothing_behind(small_archive, tmp_path, refusal, capsys):
    out = tmp_path / "out"
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("a,b\n1,2\n")
    ids_csv = tmp_path / "ids.csv"
    ids_csv.write_text("PatientID,id\nA,1\n")
    apply = ["apply", str(small_archive), "--out", str(out), "--no-progress"]
    argv = {
        "workers": [*apply, "--workers", "-1"],
        "partition": [*apply, "--workers", "0", "--partition-size", "0"],
        "resume": [*apply, "--workers", "0", "--resume"],
        "ids-kind": [*apply, "--workers", "0", "--ids", str(ids_csv)],
        # found only after the identifiers were gathered into OUT.manifest/_identifiers.parquet
        "mapping-key": [*apply, "--workers", "0", "--vars", str(mapping)],
        "scan-workers": ["scan", str(small_archive), "--ids", str(tmp_path / "ids.parquet"), "--workers", "-3"],
        "demo-files": ["demo", str(tmp_path / "demo"), "--files", "0", "--workers", "0"],
    }[refusal]
    before = _tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err, err
    assert _tree(tmp_path) == before


def test_far_too_many_workers_are_capped_at_two_per_core_with_a_warning(small_archive, tmp_path):
    cap = 2 * (os.cpu_count() or 1)
    proc = subprocess.run([sys.executable, "-m", "deid_batch", "scan", str(small_archive), "--ids",
                           str(tmp_path / "ids.parquet"), "--workers", str(cap * 50), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"starting {cap} (at most 2 per core" in proc.stderr
    assert f"local cluster of {cap} worker processes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_source_folder_warns(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "deid_batch", "scan", str(empty), "--ids",
                           str(tmp_path / "ids.parquet"), "--workers", "0", "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert f"input folder {empty} holds no files" in proc.stderr


# ---------------------------------------------------------------------------- help (item 7)
def _subparsers():
    parser = _parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("command", ["scan", "apply", "strip-private", "verify", "inspect", "demo"])
def test_every_subcommand_and_every_argument_has_help_text(command, capsys):
    sub = _subparsers()[command]
    assert sub.description, f"{command} has no description"
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: deid-batch {command}")


def test_synth_module_has_a_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deid_batch.synth", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "FOLDER" in proc.stdout and "--files" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "deid_batch.synth", str(tmp_path / "a"), "--files", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "a").rglob("*.dcm"))) == 3


def _readme_command_line() -> tuple[dict[str, set[str]], set[str]]:
    """README's usage block (long flags per command) and the flags it says every command takes."""
    section = (ROOT / "README.md").read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    usage: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        m = re.match(r"deid-batch (\S+)(.*)", line)
        if m:
            command, line = m.group(1), m.group(2)
            usage[command] = set()
        if command:
            usage[command] |= set(re.findall(r"--[a-z][\w-]*", line))
    every = re.search(r"Every command that runs[^:]*:(.*?)\.\s", section, re.S)
    assert every, "README says which flags the commands that run work take"
    return usage, set(re.findall(r"--[a-z][\w-]*", every.group(1)))


def test_readme_command_line_matches_help():
    usage, common = _readme_command_line()
    subs = _subparsers()
    assert set(usage) == set(subs)
    for command, sub in subs.items():
        flags = {s for a in sub._actions for s in a.option_strings if s.startswith("--")}
        flags -= {"--help", "--verbose", "--quiet"}
        documented = usage[command] | (common if "--workers" in flags else set())
        assert flags == documented - {"--verbose", "--quiet"}, command


def test_json_config_that_is_not_an_object_is_refused_in_the_library(tmp_path):
    from deid_batch.api import load_config
    from deid_batch.errors import ConfigError

    path = tmp_path / "config.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(str(path))


def test_the_library_translates_a_wrong_identifiers_file_into_a_config_error(small_archive, tmp_path):
    from deid_batch.errors import ConfigError

    csv = tmp_path / "mapping.csv"
    csv.write_text("PatientID,id\nA,1\n")
    for bad, match in ((csv, "is not an identifiers table"), (tmp_path / "nope.parquet", "does not exist")):
        with pytest.raises(ConfigError, match=match):
            replace_identifiers(str(small_archive), ids=str(bad), variables=str(csv),
                                output_folder=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.manifest").exists()


def test_the_library_refuses_negative_workers_and_caps_too_many(caplog):
    from deid_batch.errors import ConfigError
    from deid_batch.stages.pipeline import local_workers, open_executor

    with pytest.raises(ConfigError, match="workers=-1"), open_executor(workers=-1):
        pass
    cap = 2 * (os.cpu_count() or 1)
    with caplog.at_level("WARNING", logger="deid_batch"):
        assert local_workers(cap + 1) == cap
    assert f"starting {cap}" in caplog.text
    assert local_workers(cap) == cap and local_workers(0) == 0
