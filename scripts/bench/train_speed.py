#!/usr/bin/env python3
"""Times training of transformers' MixtralForCausalLM (PyTorch eager), the baseline of blyan-moe's train bench.

The model is built from a `config.json` with random weights, in float32, and trained exactly as
blyan-moe's Trainer trains: cross-entropy over every position plus `router_aux_loss_coef` times
Mixtral's load-balancing loss (`output_router_logits=True`), global-norm gradient clipping, and
torch.optim.AdamW with the same hyper-parameters (weight decay on matrices only). Batches are
windows of `positions + 1` tokens drawn from a little-endian u32 token file.

Standalone, it runs `--warmup` steps, then `--steps` timed steps and prints one JSON object.
With `--serve` it builds the model once, runs `--warmup` steps, prints `{"ready": ...}`, then
reads one integer per line from stdin and answers each with one JSON line timing that many
steps, so a caller can interleave its own measurements with these.
"""

import argparse
import json
import sys
import time

import numpy
import torch
from transformers import MixtralConfig, MixtralForCausalLM


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config.json of the model")
    parser.add_argument("--tokens", help="u32 little-endian token file (default: uniform random ids)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--positions", type=int, required=True)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.95)
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--router-aux-loss-coef", type=float, default=0.01)
    parser.add_argument(
        "--attn-implementation", default="eager", help="transformers attention: eager or sdpa"
    )
    parser.add_argument(
        "--experts-implementation",
        default="eager",
        help="transformers experts: eager (the per-expert loop), grouped_mm or batched_mm",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--serve", action="store_true")
    return parser.parse_args()


class Run:
    def __init__(self, args):
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        with open(args.config) as file:
            config = MixtralConfig(**json.load(file))
        config.output_router_logits = True
        config.router_aux_loss_coef = args.router_aux_loss_coef
        config.use_cache = False
        self.model = MixtralForCausalLM._from_config(
            config,
            dtype=torch.float32,
            attn_implementation=args.attn_implementation,
            experts_implementation=args.experts_implementation,
        ).train()
        self.config = config
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": args.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=args.learning_rate,
            betas=(args.beta1, args.beta2),
            eps=args.eps,
        )
        if args.tokens:
            self.tokens = torch.from_numpy(numpy.fromfile(args.tokens, dtype="<u4").astype(numpy.int64))
        else:
            self.tokens = torch.randint(0, config.vocab_size, (1 << 20,))
        self.args = args
        self.generator = torch.Generator().manual_seed(args.seed)

    def batch(self):
        window = self.args.positions + 1
        starts = torch.randint(0, len(self.tokens) - window + 1, (self.args.batch_size,), generator=self.generator)
        rows = torch.stack([self.tokens[start : start + window] for start in starts.tolist()])
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def step(self):
        inputs, targets = self.batch()
        output = self.model(input_ids=inputs, output_router_logits=True, use_cache=False)
        loss = torch.nn.functional.cross_entropy(
            output.logits.reshape(-1, self.config.vocab_size), targets.reshape(-1)
        )
        total = loss + self.args.router_aux_loss_coef * output.aux_loss
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)
        return loss.item()

    def timed(self, steps):
        started = time.perf_counter()
        loss = 0.0
        for _ in range(steps):
            loss = self.step()
        seconds = time.perf_counter() - started
        tokens = steps * self.args.batch_size * self.args.positions
        return {
            "steps": steps,
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tokens / seconds,
            "loss": loss,
        }


def main():
    args = parse_args()
    run = Run(args)
    for _ in range(args.warmup):
        run.step()
    describe = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": run.model.config._attn_implementation,
        "experts_implementation": run.model.config._experts_implementation,
    }
    if not args.serve:
        print(json.dumps({**run.timed(args.steps), **describe}))
        return
    print(json.dumps({"ready": True, **describe}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        print(json.dumps(run.timed(int(line))), flush=True)


if __name__ == "__main__":
    main()
