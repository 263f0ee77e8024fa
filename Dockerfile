# The r2genkg command line in a container: docker-compose.yml runs it as the `api` (r2genkg serve),
# `api-gpu`, `export` and `kg-load` services. Dependencies come from PyPI (torch's PyPI wheel
# bundles CUDA libraries and runs fine on CPU); the `gpu` extra (vllm) is not installed: the api
# talks to the vllm container over HTTP.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code edits do not reinstall torch & co.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 r2genkg \
    && mkdir -p /app/outputs && chown r2genkg /app/outputs
USER r2genkg

# Nothing is downloaded at run time.
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EXPOSE 8000
CMD ["r2genkg", "--help"]
