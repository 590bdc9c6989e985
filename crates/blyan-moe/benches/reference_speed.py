#!/usr/bin/env python3
"""Times transformers' eager MixtralForCausalLM on a checkpoint, the baseline of blyan-moe's bench.

Prefill: one forward pass over the prompt, keeping only the last position's logits. Decode: a
greedy loop of single-token forward passes with the KV cache, the leanest loop transformers
allows (no generate() bookkeeping). Prints one JSON object on stdout.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import MixtralForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    parser.add_argument("--decode-tokens", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = MixtralForCausalLM.from_pretrained(
        args.checkpoint, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = torch.tensor([[int(i) for i in args.prompt_ids.split(",")]], dtype=torch.long)

    def prefill():
        return model(input_ids=ids, use_cache=True, logits_to_keep=1)

    def decode():
        output = prefill()
        cache = output.past_key_values
        token = output.logits[:, -1:].argmax(-1)
        started = time.perf_counter()
        for _ in range(args.decode_tokens):
            output = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache = output.past_key_values
            token = output.logits[:, -1:].argmax(-1)
        return time.perf_counter() - started

    for _ in range(3):
        prefill()
    prefill_seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        prefill()
        prefill_seconds.append(time.perf_counter() - started)
    decode()
    decode_seconds = [decode() for _ in range(max(3, args.repeats // 3))]
    prompt_tokens = ids.shape[1]
    print(
        json.dumps(
            {
                "prefill_tokens_per_second": prompt_tokens / statistics.median(prefill_seconds),
                "decode_tokens_per_second": args.decode_tokens / statistics.median(decode_seconds),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
