"""Importing any project module must not download anything or change global state (the data
order of the imports themselves is checked in tests/test_layers.py)."""
from __future__ import annotations

import importlib.util
import json
import pkgutil
import subprocess
import sys

import pytest
from conftest import REPO

PACKAGES = ["r2genkg", "cxr", "graphdb", "encoders", "retrieval", "generator", "training"]
# modules that import an optional dependency at the top: judged only where it is installed
OPTIONAL = {"generator.vllm_plugin.model": "vllm"}

PROBE = r"""
import importlib, json, os, socket, sys, warnings, logging
def refuse(*a, **k):
    raise RuntimeError("network used at import")
socket.socket.connect = refuse
socket.create_connection = refuse
# Third-party libraries may touch state themselves (numpy adds warning filters): import them
# first so that only the project's own modules are judged.
for lib in ("numpy", "PIL.Image", "typer", "rich", "tqdm", "torch", "torch_geometric",
            "transformers.models.blip_2.modeling_blip_2"):
    importlib.import_module(lib)
before = (dict(os.environ), list(sys.path), list(warnings.filters), logging.root.level, len(logging.root.handlers))
failures = []
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    after = (dict(os.environ), list(sys.path), list(warnings.filters), logging.root.level, len(logging.root.handlers))
    if after != before:
        what = [k for k, a, b in zip(["environ", "sys.path", "warnings", "log level", "log handlers"], after, before) if a != b]
        failures.append((name, what))
        before = after
print(json.dumps(failures))
"""


def project_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        names.append(pkg)
        for info in pkgutil.walk_packages([str(REPO / pkg)], prefix=f"{pkg}."):
            names.append(info.name)
    return [n for n in names if n not in OPTIONAL or importlib.util.find_spec(OPTIONAL[n]) is not None]


@pytest.mark.slow
def test_import_has_no_side_effects():
    names = project_modules()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO)}  # no HF_* switches: a hub call would hang
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(names)],
        check=False, capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [], "modules changed global state at import"
