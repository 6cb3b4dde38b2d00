"""Why every llama.cpp call runs on one thread: how fast the packaged LLM writes, by which threads have used it.

Each thread that calls into llama.cpp gets an OpenMP team of its own. Once the process has more OpenMP threads than
cores, libgomp stops spinning at the barriers between operations (hundreds per token) and sleeps at each one.

Run: `uv run python -m bench.llm_threads` (about 1 minute on 2 cores). Prints ms per written token:
  fresh            one thread has used the model (what `Engine` keeps, whichever thread asks)
  after N threads  N more threads have each evaluated one token (what the agent did before: prefills on asyncio's
                   executor threads, each reply on a new thread)
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from llama_cpp import Llama

from agent.models import packaged_gguf

PROMPT = (
    "<|im_start|>system\nYou are a helpful voice assistant. Answer briefly.<|im_end|>\n"
    "<|im_start|>user\nTell me a fun fact about octopuses.<|im_end|>\n<|im_start|>assistant\n"
)


def ms_per_token(llama: Llama, runs: int = 3, tokens: int = 24) -> float:
    rates = []
    for _ in range(runs):
        first, count = 0.0, 0
        for _part in llama.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, stream=True):
            count += 1
            if count == 1:
                first = time.perf_counter()
        rates.append(1000 * (time.perf_counter() - first) / max(1, count - 1))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=3, help="other threads that use the model")
    args = parser.parse_args()
    llama = Llama(model_path=str(packaged_gguf()), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
    ms_per_token(llama, runs=1)  # warm up
    print(f"fresh            {ms_per_token(llama):6.1f} ms/token")
    release = threading.Event()

    def use_once() -> None:
        llama.eval(llama.tokenize(b" hello", add_bos=False))
        release.wait()  # the thread, and its OpenMP team, stay alive like an executor's

    others = [threading.Thread(target=use_once, daemon=True) for _ in range(args.threads)]
    for thread in others:
        thread.start()
        time.sleep(0.3)
    print(f"after {args.threads} threads  {ms_per_token(llama):6.1f} ms/token")
    release.set()


if __name__ == "__main__":
    main()
