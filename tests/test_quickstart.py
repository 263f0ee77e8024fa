"""The README's quick start is two commands that set themselves up (issue 13): the main job and
the tests. The wrappers (scripts/r2genkg, scripts/test → scripts/with_venv) run setup when the
venv is missing or stale, then the command with its arguments unchanged; .ci/run runs the README's
test command as .ci/test_command reads it. Real scripts, copied into a temp clone, with a stand-in
setup (R2GENKG_SETUP) so nothing is installed."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("scripts/setup.sh", "scripts/with_venv", "scripts/r2genkg", "scripts/test")

# Stand-in for scripts/setup.sh: logs the call, makes $R2GENKG_VENV with programs that print their
# arguments (one a line) and PYTHONPATH, marks it complete and links .venv to it.
FAKE_SETUP = """#!/usr/bin/env bash
set -euo pipefail
echo called >> "$SETUP_LOG"
mkdir -p "$R2GENKG_VENV/bin"
for program in r2genkg python; do
    printf '#!/usr/bin/env bash\\necho %s\\nprintf "%%s\\\\n" "$@"\\necho "PYTHONPATH=$PYTHONPATH"\\n' \\
        "$program" > "$R2GENKG_VENV/bin/$program"
    chmod +x "$R2GENKG_VENV/bin/$program"
done
touch "$R2GENKG_VENV/.r2genkg-complete"
ln -sfn "$R2GENKG_VENV" "$CLONE/.venv"
echo "setup: done"
"""


def quick_start() -> list[tuple[str, str]]:
    """(command, marker) for each line of the README's first bash block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README.md has no bash block"
    lines = [re.fullmatch(r"(.+?)\s+(# \d\. .+)", line) for line in block[1].splitlines() if line.strip()]
    assert all(lines), block[1]
    return [(m[1], m[2]) for m in lines if m]


def test_readme_quick_start_is_two_commands_that_exist():
    lines = quick_start()
    assert [marker for _, marker in lines] == ["# 1. main job", "# 2. tests"]
    assert lines[0][0] == "./scripts/r2genkg pipeline --config configs/debug.yaml"
    for command, _ in lines:
        program = ROOT / command.split()[0]
        assert program.is_file() and os.access(program, os.X_OK), command


def test_ci_runs_the_readme_test_command_verbatim():
    out = subprocess.run([ROOT / ".ci" / "test_command"], capture_output=True, text=True, check=True)
    assert out.stdout == quick_start()[1][0] + "\n"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "test_cmd=$(.ci/test_command)" in ci and 'bash -c "$test_cmd"' in ci


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A temp clone with the real wrapper scripts and the stand-in setup, and its environment."""
    repo = tmp_path / "clone"
    for rel in (*SCRIPTS, "pyproject.toml"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    fake = tmp_path / "fake_setup.sh"
    fake.write_text(FAKE_SETUP, encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "R2GENKG_SETUP": str(fake),
           "R2GENKG_VENV": str(tmp_path / "venv"), "SETUP_LOG": str(tmp_path / "setup.log"), "CLONE": str(repo)}
    return repo, env


def _run(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def _setup_calls(env: dict[str, str]) -> int:
    log = Path(env["SETUP_LOG"])
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_wrapper_sets_up_a_missing_venv_once_then_runs_the_command(clone):
    repo, env = clone
    first = _run(repo, env, "scripts/r2genkg", "pipeline", "--config", "my configs/a.yaml")
    assert first.returncode == 0, first.stderr
    assert _setup_calls(env) == 1
    assert "no .venv yet" in first.stderr and "setup: done" in first.stderr   # setup talks on stderr
    assert first.stdout.splitlines() == ["r2genkg", "pipeline", "--config", "my configs/a.yaml",
                                         f"PYTHONPATH={repo}"]                # this clone's code first
    again = _run(repo, env, "scripts/test", "-m", "not slow")
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert _setup_calls(env) == 1                                             # up to date: no setup
    assert again.stdout.splitlines() == ["python", "-m", "pytest", "-m", "not slow", f"PYTHONPATH={repo}"]


def test_wrapper_sets_up_again_when_venv_is_stale_and_stops_when_setup_fails(clone, tmp_path):
    repo, env = clone
    assert _run(repo, env, "scripts/r2genkg", "--help").returncode == 0
    (tmp_path / "old").mkdir()
    (repo / ".venv").unlink()
    (repo / ".venv").symlink_to(tmp_path / "old")                             # another key's venv
    stale = _run(repo, env, "scripts/r2genkg", "--help")
    assert stale.returncode == 0 and _setup_calls(env) == 2 and "the dependency files want" in stale.stderr
    (repo / ".venv").unlink()
    broken = _run(repo, {**env, "R2GENKG_SETUP": "false"}, "scripts/r2genkg", "--help")
    assert broken.returncode != 0 and broken.stdout == ""


def test_setup_check_keys_the_venv_by_the_dependency_files(clone, tmp_path):
    repo, env = clone
    env = {k: v for k, v in env.items() if k != "R2GENKG_VENV"} | {"R2GENKG_CACHE": str(tmp_path / "cache")}
    layout = re.search(r"^venv_layout=\d+$", (repo / "scripts/setup.sh").read_text(), re.MULTILINE).group(0)
    key = hashlib.sha256((repo / "pyproject.toml").read_bytes() + f"{layout}\n".encode())
    venv = tmp_path / "cache" / f"venv-{key.hexdigest()[:16]}"
    venv.mkdir(parents=True)
    (repo / ".venv").symlink_to(venv)

    def check() -> subprocess.CompletedProcess[str]:
        return _run(repo, env, "scripts/setup.sh", "--check")

    assert check().returncode == 1 and "not set up completely" in check().stderr
    (venv / ".r2genkg-complete").touch()
    assert check().returncode == 0
    with (repo / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency\n")
    assert check().returncode == 1 and "the dependency files want" in check().stderr
