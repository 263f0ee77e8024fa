"""docker-compose.yml, Dockerfile, .dockerignore and .env.example checked as files: no Docker needed.

Each test names the service and field it found wrong. The rules are the ones the compose file's
header states (one-shot jobs vs long-running services, ports on 127.0.0.1 only, …).
"""
from __future__ import annotations

import fnmatch
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# ${VAR}, ${VAR:-default}, ${VAR:?message}; `$$` is a literal dollar for the container's shell.
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")
SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
PLACEHOLDER_PREFIX = "change-me"


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def is_one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def volume_pairs(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every mount, short or long syntax."""
    pairs = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            pairs.append((str(vol.get("source", "")), str(vol["target"])))
        else:
            source, target = str(vol).split(":")[:2]
            pairs.append((source, target))
    return pairs


@cache
def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: line {line!r} is not KEY=value"
            pairs[key.strip()] = value.strip()
    return pairs


@cache
def cli() -> Any:
    """The app as a command tree (Typer 0.29 vendors its own click: duck-type, never import click)."""
    from r2genkg.cli import app

    return typer.main.get_command(app)


def test_expected_services_and_profiles():
    profiles = {name: tuple(s.get("profiles", ())) for name, s in services().items()}
    assert profiles == {
        "neo4j": (), "api": (), "kg-load": ("load",), "export": ("gpu",),
        "vllm": ("gpu",), "api-gpu": ("gpu",),
    }


@pytest.mark.parametrize("name", sorted(services()))
def test_healthcheck_rule(name):
    service = services()[name]
    health = service.get("healthcheck")
    if is_one_shot(service):
        assert health == {"disable": True}, f"{name}.healthcheck: a one-shot job (restart: \"no\") disables it"
        assert service.get("profiles"), f"{name}.profiles: a one-shot job must not start with a plain `up`"
    else:
        assert service.get("restart") == "unless-stopped", f"{name}.restart: long-running, want unless-stopped"
        assert health and health.get("test") and not health.get("disable"), \
            f"{name}.healthcheck.test: every long-running service needs one"


@pytest.mark.parametrize("name", sorted(services()))
def test_ports_bound_to_localhost(name):
    for port in services()[name].get("ports", []):
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name}.ports: {port!r} is not bound to 127.0.0.1"


@pytest.mark.parametrize("name", sorted(services()))
def test_port_flag_matches_healthcheck_and_published_port(name):
    service, cmd = services()[name], command_of(services()[name])
    if "--port" not in cmd:
        return
    port = cmd[cmd.index("--port") + 1]
    test = " ".join(map(str, service.get("healthcheck", {}).get("test", [])))
    assert f"localhost:{port}/health" in test, f"{name}.healthcheck.test: does not hit /health on port {port}"
    published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
    assert port in published, f"{name}.ports: container port {port} (from --port) is not published"


@pytest.mark.parametrize("name", sorted(s for s in services() if "build" in services()[s]))
def test_build_context_has_dockerfile(name):
    build = services()[name]["build"]
    context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else \
        (build.get("context", "."), build.get("dockerfile", "Dockerfile"))
    assert (ROOT / context / dockerfile).is_file(), f"{name}.build: no {dockerfile} in {context}"


@pytest.mark.parametrize("name", sorted(services()))
def test_depends_on(name):
    service = services()[name]
    for dep, spec in (service.get("depends_on") or {}).items():
        assert dep in services(), f"{name}.depends_on: no service {dep!r}"
        target = services()[dep]
        if not service.get("profiles"):
            assert not target.get("profiles"), f"{name}.depends_on: {dep} is behind a profile {name} is not"
        if spec.get("condition") == "service_healthy":
            assert not is_one_shot(target) and target.get("healthcheck", {}).get("test"), \
                f"{name}.depends_on.{dep}: service_healthy needs a healthcheck on {dep}"


@pytest.mark.parametrize("name", sorted(services()))
def test_named_volumes_declared_and_paths_mounted(name):
    service = services()[name]
    declared = set(compose().get("volumes") or {})
    pairs = volume_pairs(service)
    for source, _ in pairs:
        if not source.startswith((".", "/", "~", "$")):
            assert source in declared, f"{name}.volumes: named volume {source!r} is not declared at the top"
    targets = [t for _, t in pairs]
    for token in command_of(service):
        if token.startswith("/"):
            assert any(token == t or token.startswith(t + "/") for t in targets), \
                f"{name}.command: {token} is not inside any of its volumes {targets}"


def is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def _resolve(group: Any, words: list[str]) -> tuple[Any, list[str], str]:
    """Walk `r2genkg group sub …` down to the leaf command; returns it, its arguments, its name."""
    command, path = group, []
    while is_group(command) and words and not words[0].startswith("-"):
        word = words.pop(0)
        assert word in command.commands, \
            f"r2genkg {' '.join(path + [word])}: not a registered command (have {sorted(command.commands)})"
        command, path = command.commands[word], path + [word]
    return command, words, " ".join(path)


def _check_arguments(where: str, command: Any, args: list[str]) -> None:
    options = {opt: p for p in command.params if p.param_type_name == "option"
               for opt in (*p.opts, *p.secondary_opts)}
    n_positional = sum(1 for p in command.params if p.param_type_name == "argument")
    positional, i = [], 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            positional.append(token)
            i += 1
            continue
        assert token in options, f"{where}: unknown option {token} (has {sorted(options)})"
        param = options[token]
        if param.is_flag:
            i += 1
            continue
        value = args[i + 1]
        choices = getattr(getattr(param, "type", None), "choices", None)
        if choices:
            assert value in choices, f"{where}: {token} {value!r} not in {choices}"
        i += 2
    assert len(positional) <= n_positional, f"{where}: {len(positional)} positional arguments, takes {n_positional}"


@pytest.mark.parametrize("name", sorted(s for s in services() if command_of(services()[s])[:1] == ["r2genkg"]))
def test_r2genkg_commands_exist_with_their_options(name):
    command, args, path = _resolve(cli(), command_of(services()[name])[1:])
    assert not is_group(command), f"{name}.command: r2genkg {path} is a group, not a command"
    _check_arguments(f"{name}.command (r2genkg {path})", command, args)


def test_serving_commands_registered():
    names = set(cli().commands)
    for needed in ("serve", "export-llm", "kg"):
        assert needed in names, f"r2genkg {needed}: not registered in r2genkg.cli.app"


def test_vllm_serves_the_plugin_on_a_gpu():
    vllm = services()["vllm"]
    assert vllm["build"] == {"context": ".", "target": "vllm"}, "vllm.build: the Dockerfile's `vllm` stage"
    cmd = command_of(vllm)
    assert "--enable-mm-embeds" in cmd, "vllm.command: needs --enable-mm-embeds (api-gpu sends image_embeds)"
    assert "--enable-prompt-embeds" not in cmd, "vllm.command: prompt_embeds stays off (the plugin needs none)"
    assert cmd[:1] != ["serve"] and "vllm" not in cmd[:1], "vllm.command: the image's entrypoint already runs the server"
    env = vllm["environment"]
    assert env.get("R2GENKG_STORE") == "neo4j" and env.get("NEO4J_URI") == "bolt://neo4j:7687", \
        "vllm.environment: the plugin's adapter reads the graph from neo4j"
    assert vllm["depends_on"]["neo4j"]["condition"] == "service_healthy", "vllm.depends_on.neo4j: wait until healthy"
    devices = vllm.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), \
        "vllm.deploy.resources.reservations.devices: no nvidia gpu reservation"


def test_the_vllm_stage_adds_the_plugin_to_the_pinned_vllm_image():
    stages = dockerfile_stages()
    assert "vllm" in stages, "Dockerfile: no `FROM … AS vllm` stage"
    base = stages["vllm"][0].split()[1]
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    vllm_pin = next(r.split("==")[1] for r in gpu if r.startswith("vllm=="))
    assert base == f"vllm/vllm-openai:v{vllm_pin}", f"Dockerfile vllm stage: FROM {base}, the gpu extra pins {vllm_pin}"
    installs = [line for line in stages["vllm"] if "pip install" in line]
    assert all("--no-deps" in line for line in installs), "Dockerfile vllm stage: pip install --no-deps only"
    assert any("vllm-plugin-requirements.txt" in line for line in installs) and \
        any(line.split()[-1] == "." for line in installs), "Dockerfile vllm stage: the plugin's requirements, then ."


def test_export_writes_where_vllm_reads():
    export, vllm = services()["export"], services()["vllm"]
    out_dir = command_of(export)[-1]                     # r2genkg export-llm CKPT OUT_DIR
    model = command_of(vllm)[command_of(vllm).index("--model") + 1]
    export_src = {t: s for s, t in volume_pairs(export)}
    vllm_src = {t: s for s, t in volume_pairs(vllm)}
    export_targets = [t for t in export_src if out_dir.startswith(t + "/")]
    vllm_targets = [t for t in vllm_src if model.startswith(t + "/")]
    assert len(export_targets) == 1, f"export.volumes: {out_dir} is not inside exactly one mount"
    assert len(vllm_targets) == 1, f"vllm.volumes: --model {model} is not inside exactly one mount"
    export_target, vllm_target = export_targets[0], vllm_targets[0]
    assert export_src[export_target] == vllm_src[vllm_target], \
        "export.volumes / vllm.volumes: export and vllm mount different host folders"
    assert out_dir[len(export_target):] == model[len(vllm_target):], \
        f"export.command {out_dir} and vllm.command --model {model} name different folders"


def test_api_gpu_talks_to_vllm():
    cmd = command_of(services()["api-gpu"])
    assert cmd[cmd.index("--engine") + 1] == "vllm-remote", "api-gpu.command: --engine vllm-remote"
    vllm_cmd = command_of(services()["vllm"])
    port = vllm_cmd[vllm_cmd.index("--port") + 1]
    assert cmd[cmd.index("--vllm-url") + 1] == f"http://vllm:{port}/v1", "api-gpu.command: --vllm-url"
    served = vllm_cmd[vllm_cmd.index("--served-model-name") + 1]
    assert cmd[cmd.index("--vllm-model") + 1] == served, \
        f"api-gpu.command: --vllm-model must be vllm's --served-model-name {served}"
    env, vllm_env = services()["api-gpu"]["environment"], services()["vllm"]["environment"]
    assert env.get("R2GENKG_VLLM_API_KEY") == vllm_env.get("VLLM_API_KEY"), \
        "api-gpu.environment.R2GENKG_VLLM_API_KEY: must be vllm's VLLM_API_KEY"
    assert services()["api-gpu"]["depends_on"]["vllm"]["condition"] == "service_healthy", \
        "api-gpu.depends_on.vllm: wait until healthy"


def test_every_compose_variable_is_in_env_example():
    used = {m.group(1): m.group(2) or "" for m in VAR_RE.finditer(COMPOSE.read_text(encoding="utf-8"))}
    missing = sorted(set(used) - set(env_example()))
    assert not missing, f".env.example: lacks {missing}, which docker-compose.yml uses"
    required = {var for var, spec in used.items() if spec.startswith(":?")}
    assert {"NEO4J_PASSWORD", "R2GENKG_API_KEYS", "VLLM_API_KEY"} <= required, \
        f"docker-compose.yml: secrets must be required with ${{VAR:?…}}, required are {sorted(required)}"


def test_env_example_holds_placeholders_only():
    for key, value in env_example().items():
        if SECRET_KEY_RE.search(key):
            for item in value.split(","):
                assert item.startswith(PLACEHOLDER_PREFIX), \
                    f".env.example: {key} must be a {PLACEHOLDER_PREFIX}… placeholder, not {item[:4]}…"
        else:
            assert len(value) < 24, f".env.example: {key} looks like a secret (long value)"
    assert len(env_example()["NEO4J_PASSWORD"]) >= 8, ".env.example: NEO4J_PASSWORD needs 8+ characters"


def dockerfile_lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def dockerfile_stages() -> dict[str, list[str]]:
    """Each stage's lines (its FROM first), by its `AS` name (unnamed: its index)."""
    stages: dict[str, list[str]] = {}
    for line in dockerfile_lines():
        if line.upper().startswith("FROM "):
            words = line.split()
            name = words[3] if len(words) > 3 and words[2].upper() == "AS" else str(len(stages))
            stages[name] = []
        stages[list(stages)[-1]].append(line)
    return stages


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copy_sources_exist_and_are_not_ignored():
    for line in dockerfile_lines():
        if not line.upper().startswith(("COPY ", "ADD ")) or "--from=" in line:
            continue
        *sources, _dest = [w for w in line.split()[1:] if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile: COPY source {source} does not exist"
            ignored = [p for p in dockerignore() if source != "." and fnmatch.fnmatch(source, p)]
            assert not ignored, f"Dockerfile: COPY source {source} is excluded by .dockerignore {ignored}"


def test_dockerfile_runs_as_user_exposes_api_and_skips_gpu_extra():
    lines = list(dockerfile_stages().values())[-1]    # the r2genkg image (the last stage)
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "Dockerfile: USER must be a non-root user"
    assert any(line.upper().startswith("EXPOSE ") and "8000" in line.split() for line in lines), "Dockerfile: EXPOSE 8000"
    assert not any("[gpu]" in line or "vllm" in line for line in lines if "pip install" in line), \
        "Dockerfile: the gpu extra (vllm) belongs in the vllm container, not this image"
    assert any("HF_HUB_OFFLINE=1" in line for line in lines if line.upper().startswith("ENV ")), \
        "Dockerfile: ENV HF_HUB_OFFLINE=1"


def test_dockerignore_keeps_data_and_secrets_out():
    patterns = set(dockerignore())
    for needed in (".git", ".venv", "outputs", "data", ".neo4j", ".env"):
        assert needed in patterns, f".dockerignore: add {needed}"
