#!/usr/bin/env python3
"""Writes the shipped default model's provenance (JSON on stdout) from the training log.

Usage: provenance.py --log TRAIN.jsonl --steps N --seed S --threads T --wall-seconds W
                     --description TEXT

The log holds `blyan-miner train --json` lines (several runs when a run was resumed); the last
`done` line gives the held-out figures, the `done` lines' seconds add up to the training time.
"""
import argparse
import json
import os
import pathlib
import platform
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def packages():
    fetch = (ROOT / "scripts/corpus/fetch.sh").read_text()
    pinned = re.findall(r'"([a-z0-9.+-]+)=([^"]+)"', fetch)
    sums = {}
    for line in (ROOT / "scripts/corpus/debs.sha256").read_text().splitlines():
        digest, name = line.split()
        sums[name.split("_")[0]] = digest
    return [{"package": name, "version": version, "sha256": sums.get(name)} for name, version in pinned]


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--wall-seconds", type=float, required=True)
    parser.add_argument("--description", required=True)
    args = parser.parse_args()
    lines = [json.loads(line) for line in pathlib.Path(args.log).read_text().splitlines() if line.strip()]
    done = [line for line in lines if line.get("event") == "done"]
    if not done:
        raise SystemExit(f"{args.log} holds no finished run")
    final = done[-1]
    evals = [line for line in lines if line.get("event") == "eval"]
    provenance = {
        "description": args.description,
        "config": "models/default/config.json",
        "tokenizer": "byte-level (259 tokens: <unk>, <s>, </s>, 256 bytes)",
        "corpus": {
            "source": "Debian 12 documentation packages, fetched and extracted by scripts/corpus/fetch.sh",
            "packages": packages(),
            "fingerprint_blake3": final["corpus_fingerprint"],
            "train_bytes": final["train_bytes"],
            "held_out_bytes": final["held_out_bytes"],
            "held_out_split": "pieces of <= 16 KiB at line ends, held out when blake3(piece) mod 1000 < 50",
        },
        "command": "just train-default",
        "train_arguments": {
            "init": "models/default/config.json",
            "steps": args.steps,
            "seed": args.seed,
            "threads": args.threads,
            "batch_size": 16,
            "positions": 128,
            "optimizer": "AdamW (beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1 on matrices), peak lr 3e-3, 5% warm-up, cosine to 3e-4, clip 1.0, router aux loss 0.01",
        },
        "held_out": {
            "loss_before": final["eval_loss_before"],
            "loss_after": final["eval_loss_after"],
            "bits_per_byte_after": final["eval_bits_per_byte_after"],
            "scored_tokens_per_eval": "16384 (evenly spread windows; the full-split figure is in PROVENANCE.md)",
            "curve": [{"step": line["step"], "loss": line["eval_loss"], "bits_per_byte": line["eval_bits_per_byte"]} for line in evals],
        },
        "tokens": sum(line["tokens"] for line in done),
        "training_seconds": sum(line["seconds"] for line in done),
        "wall_seconds_of_the_last_invocation": args.wall_seconds,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "stored_dtype": "f16 (blyan-miner ship --dtype f16)",
    }
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
