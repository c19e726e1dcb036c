"""``scripts/test``, the README's one test command: it installs what the tests need when the
checkout has no usable .venv, and a run in which no test ran fails."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checkout(base: Path) -> Path:
    """A copy of this checkout (its scripts, package, tests and docs), without any .venv."""
    copy = base / "checkout"
    copy.mkdir()
    for name in ("scripts", "tierfs", "tests", "docs"):
        shutil.copytree(ROOT / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    return copy


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _stand_in_install(copy: Path, succeed: bool = True) -> Path:
    """scripts/install replaced by one that records its run and makes .venv/bin/python run
    this interpreter (which has the test extra) on the copy: a real install would link the
    system's ``tierfs`` command to a copy that is about to be deleted."""
    marker = copy / "install-ran"
    body = f"touch {marker}\n"
    if succeed:
        # (rm first: never write through a link that .venv/bin/python may be)
        body += (f"mkdir -p .venv/bin\nrm -f .venv/bin/python\nprintf '#!/bin/sh\\n"
                 f"PYTHONPATH={copy} exec {sys.executable} \"$@\"\\n' > .venv/bin/python\n"
                 "chmod +x .venv/bin/python\n")
    else:
        body += "exit 3\n"
    _executable(copy / "scripts" / "install",
                f"#!/usr/bin/env bash\nset -e\ncd \"$(dirname \"$0\")/..\"\n{body}")
    return marker


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=env)


def test_scripts_test_installs_first_on_a_fresh_checkout(tmp_path: Path) -> None:
    copy = _checkout(tmp_path)
    marker = _stand_in_install(copy)
    result = _run(copy / "scripts" / "test", "tests/test_config.py", "-q", "-p",
                  "no:cacheprovider")
    assert marker.exists(), result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    # Installed now: the next run goes straight to the tests.
    marker.unlink()
    again = _run(copy / "scripts" / "test", "tests/test_config.py", "-q", "-p",
                 "no:cacheprovider")
    assert again.returncode == 0 and not marker.exists()


def test_scripts_test_installs_when_tierfs_is_not_importable(tmp_path: Path) -> None:
    """A .venv whose tierfs is not this checkout's (another checkout's, or a broken install)
    is installed into as well."""
    copy = _checkout(tmp_path)
    marker = _stand_in_install(copy)
    (copy / ".venv" / "bin").mkdir(parents=True)
    # This interpreter, isolated from the copy: the tierfs it imports is another checkout's.
    _executable(copy / ".venv" / "bin" / "python",
                f'#!/bin/sh\nexec {sys.executable} -I "$@"\n')
    result = _run(copy / "scripts" / "test", "tests/test_config.py", "-q", "-p",
                  "no:cacheprovider")
    assert marker.exists() and result.returncode == 0, result.stdout + result.stderr


def test_scripts_test_fails_when_the_install_fails(tmp_path: Path) -> None:
    copy = _checkout(tmp_path)
    marker = _stand_in_install(copy, succeed=False)
    result = _run(copy / "scripts" / "test", "tests/test_config.py")
    assert marker.exists()
    assert result.returncode != 0 and "scripts/install failed" in result.stderr
    assert " passed" not in result.stdout


def test_scripts_test_fails_when_no_test_runs() -> None:
    result = _run(ROOT / "scripts" / "test", "tests/test_config.py", "-k",
                  "nothing_matches_this", "-p", "no:cacheprovider")
    assert result.returncode == 1
    assert "no tests were collected" in result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == "exec scripts/test"
    assert "scripts/test" in (ROOT / "README.md").read_text()
