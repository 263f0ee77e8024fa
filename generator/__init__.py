"""The model and everything that serves it: the composite config (config.py, config_io.py), the
R2GenKG model and its one generate() (model.py, prompt.py, llm.py), checkpoints (checkpoint.py),
the engine with its HF / vLLM backends (engine.py, backends.py), batch jobs (batch.py), the LLM
export for vLLM (export.py) and the OpenAI-compatible API (api_schema.py, api_inputs.py, server.py, batcher.py). Nothing here
imports training/."""
