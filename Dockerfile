# Two images.
# - `vllm` (docker-compose's `vllm` service): vLLM's own image with the R2GenKG plugin installed
#   (generator/vllm_plugin, found through its entry point), so `vllm serve EXPORT` runs the whole
#   model: the adapter from the views, and the LLM. Nothing moves vLLM's torch or transformers.
# - the last stage, the r2genkg command line: docker-compose.yml runs it as the `api` / `api-gpu`
#   servers and the one-shot `kg-load` and `export` jobs. Dependencies come from PyPI (torch's PyPI
#   wheel bundles CUDA libraries and runs fine on CPU). The `gpu` extra (vllm, faiss-gpu) is not
#   installed: the API reaches vLLM in its own container over HTTP.
FROM vllm/vllm-openai:v0.33.0 AS vllm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /r2genkg
COPY scripts/vllm-plugin-requirements.txt ./
RUN python3 -m pip install --no-deps -r vllm-plugin-requirements.txt
COPY pyproject.toml README.md ./
COPY r2genkg r2genkg
COPY cxr cxr
COPY graphdb graphdb
COPY encoders encoders
COPY retrieval retrieval
COPY generator generator
COPY training training
RUN python3 -m pip install --no-deps .
# the project home: where the default embedded store and the node-feature cache are found
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 R2GENKG_HOME=/r2genkg

FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code edits do not reinstall torch & co.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps .

# A non-root user. /app/outputs/kg exists and is theirs so a named volume mounted there starts
# writable; /checkpoints and /export are the mount points docker-compose.yml uses.
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "$GID" r2genkg \
    && useradd --uid "$UID" --gid "$GID" --create-home --shell /usr/sbin/nologin r2genkg \
    && mkdir -p /app/outputs/kg /checkpoints /export \
    && chown -R r2genkg:r2genkg /app/outputs /export
USER r2genkg

# Nothing is downloaded at run time. The project home (default store, feature cache, relative config
# paths: cxr/home.py) is /app, where the kg-cache volume is mounted at outputs/kg.
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 R2GENKG_HOME=/app
EXPOSE 8000
CMD ["r2genkg", "--help"]
