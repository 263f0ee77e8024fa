"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine: every
long-running service has a health check, one-shot jobs sit behind a profile, ports bind to
127.0.0.1, required variables are documented, the vLLM service has prompt_embeds and a GPU, and
every r2genkg command and file the services name exists in this repo."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from r2genkg.cli import app

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {name for name, s in SERVICES.items() if s.get("restart") == "no"}
REQUIRED_VAR = re.compile(r"\$\{(\w+):\?")


def command_names() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups if g.name}


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_long_running_services_have_a_health_check(name):
    check = SERVICES[name].get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"service {name}: no healthcheck.test"


@pytest.mark.parametrize("name", sorted(ONE_SHOT))
def test_one_shot_jobs_are_behind_a_profile(name):
    assert SERVICES[name].get("profiles"), f"one-shot service {name} would start with `docker compose up`"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_ports_bind_to_loopback(name):
    for port in SERVICES[name].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"service {name}: port {port} is not bound to 127.0.0.1"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if "build" in s))
def test_builds_and_commands_exist_in_the_repo(name):
    service = SERVICES[name]
    context = REPO / (service["build"] if isinstance(service["build"], str) else service["build"]["context"])
    assert (context / "Dockerfile").is_file(), f"service {name}: no Dockerfile in {context}"
    command = service["command"]
    assert command[0] == "r2genkg", f"service {name}: runs {command[0]!r}, not the r2genkg command"
    assert command[1] in command_names(), f"service {name}: `r2genkg {command[1]}` is not a command"
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).resolve().is_relative_to(REPO), f"service {name}: volume {volume} leaves the repo"


def test_required_variables_are_in_env_example():
    example = (REPO / ".env.example").read_text()
    documented = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    required = set(REQUIRED_VAR.findall((REPO / "docker-compose.yml").read_text()))
    assert required and required <= documented, f"undocumented: {sorted(required - documented)}"
    for line in example.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert "change-me" in value or key == "R2GENKG_RUN", f".env.example {key}: looks like a real value"


def test_vllm_serves_prompt_embeds_on_a_gpu_and_the_gpu_api_points_at_it():
    vllm = SERVICES["vllm"]
    assert "--enable-prompt-embeds" in vllm["command"] and "gpu" in vllm["profiles"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    api = SERVICES["api-gpu"]
    assert api["environment"]["R2GENKG_ENGINE"] == "vllm-remote"
    assert api["environment"]["R2GENKG_VLLM_URL"].startswith("http://vllm:8001")
    assert api["depends_on"]["vllm"]["condition"] == "service_healthy"
    served = vllm["command"][vllm["command"].index("--served-model-name") + 1]
    from generator.engine import SERVED_NAME

    assert served == SERVED_NAME


def test_dockerfile_copies_existing_files_and_runs_unprivileged():
    text = (REPO / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY . "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    assert re.search(r"^USER (?!root)", text, re.MULTILINE), "the image runs as root"
    assert ".env" in (REPO / ".dockerignore").read_text().split()
