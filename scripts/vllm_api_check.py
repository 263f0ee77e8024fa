"""Our API (`r2genkg serve --engine vllm-remote --vllm-mode embeds`) in front of `vllm serve EXPORT
--enable-mm-embeds --limit-mm-per-prompt '{"image": 0}'`, called with the openai client with
num_beams=3 on N test studies of a checkpoint: is the streamed text the whole text?
Run (project venv; the vLLM venv of scripts/vllm_cpu_env.sh with this project installed):
  .venv/bin/python scripts/vllm_api_check.py CHECKPOINT EXPORT N [VLLM_VENV]
Ports 8101 (vLLM) and 8102 (the API) must be free."""
import json
import os
import subprocess
import sys
import time
import urllib.request


def main():
    ck, export, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    py = os.path.join(sys.argv[4] if len(sys.argv) > 4 else "/tmp/r2genkg-vllm-cpu", "bin", "python")
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "2", "PYTHONPATH": root}
    vl = subprocess.Popen([py, "-m", "vllm.entrypoints.openai.api_server", "--model", export, "--served-model-name", "r2genkg-llm",
                           "--enable-mm-embeds", "--limit-mm-per-prompt", '{"image": 0}', "--dtype", "float32", "--port", "8101"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = None
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen("http://127.0.0.1:8101/health", timeout=2); break
            except OSError: time.sleep(1)
        api = subprocess.Popen([os.path.join(root, "scripts", "r2genkg"), "serve", ck, "--engine", "vllm-remote", "--vllm-url",
                                "http://127.0.0.1:8101/v1", "--vllm-mode", "embeds", "--port", "8102", "--no-auth", "--device", "cpu"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen("http://127.0.0.1:8102/health", timeout=2); break
            except OSError: time.sleep(1)

        import openai
        sys.path.insert(0, root)
        from generator.batch import split_studies
        from tests.generator.api_client import data_uri
        studies = split_studies(__import__("pathlib").Path(ck), n)[0]
        c = openai.OpenAI(base_url="http://127.0.0.1:8102/v1", api_key="x", max_retries=0, timeout=300)
        same = nonempty = 0
        t0 = time.time()
        for s in studies:
            msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(v)}} for v in s.views]}]
            whole = c.chat.completions.create(model="r2genkg", messages=msg, extra_body={"num_beams": 3}).choices[0].message.content
            streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(model="r2genkg", messages=msg, extra_body={"num_beams": 3}, stream=True) if ch.choices)
            same += whole == streamed; nonempty += bool(whole)
        print(json.dumps({"studies": n, "streamed_equals_whole": same, "nonempty": nonempty, "seconds": round(time.time() - t0, 1), "example": whole}))
    finally:
        if api: api.terminate()
        vl.terminate()
main()
