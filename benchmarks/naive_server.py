"""The baseline for benchmarks/serving_bench.py: seed 002's FastAPI server, kept in its code shape.

One `model.generate` per request, called inside an `async def` endpoint, so requests run one at a
time (the event loop is blocked while a request generates). The only additions: the model comes from
`toolrl.models.resolve` (no hub here), sampling is greedy and explicit, and the answer also reports how
many tokens were generated, so the benchmark can compare tokens/s.

    TOOLRL_NAIVE_MODEL=smollm2-135m-instruct TOOLRL_NAIVE_THREADS=2 \\
        .venv/bin/python -m uvicorn naive_server:app --app-dir benchmarks --host 127.0.0.1 --port 8001
"""

import os

import torch
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolrl import models

if os.environ.get("TOOLRL_NAIVE_THREADS"):
    torch.set_num_threads(int(os.environ["TOOLRL_NAIVE_THREADS"]))
path = str(models.resolve(os.environ.get("TOOLRL_NAIVE_MODEL", "smollm2-135m-instruct")))
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

app = FastAPI()


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.post("/generate")
async def generate_text(prompt: str, max_new_tokens: int = 100):
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        outputs = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
    response = tokenizer.decode(outputs[0], skip_special_tokens=True)
    return {"response": response, "completion_tokens": outputs.shape[1] - inputs["input_ids"].shape[1]}
