"""The count-based bigram baseline of the quality measurement (docs/benchmarks.md): the
cross-entropy (nats per token) on a validation shard of an add-k smoothed bigram model estimated
from a training shard. k is chosen from a grid on the validation shard itself, which only makes the
baseline stronger (harder to beat). Reads llm.c token shards (DESIGN.md); numpy only.

  /usr/bin/python3 bench/bigram_baseline.py data/brown/train.bin data/brown/val.bin [--vocab=4096]
"""
import argparse
import json
import math
import sys

import numpy as np

MAGIC = 20240520


def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype="<i4")
        if header[0] != MAGIC or header[1] not in (1, 2):
            sys.exit(f"{path}: not an llm.c token shard (magic {header[0]}, version {header[1]})")
        dtype = "<u2" if header[1] == 1 else "<u4"
        tokens = np.frombuffer(f.read(), dtype=dtype)
    if len(tokens) != header[2]:
        sys.exit(f"{path}: header says {header[2]} tokens, file holds {len(tokens)}")
    return tokens.astype(np.int64)


def bigram_loss(counts, row_totals, prev, nxt, vocab, k):
    p = (counts[prev, nxt] + k) / (row_totals[prev] + k * vocab)
    return float(-np.mean(np.log(p)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary size (default: max id + 1)")
    args = ap.parse_args()
    train, val = read_shard(args.train), read_shard(args.val)
    vocab = args.vocab or int(max(train.max(), val.max())) + 1
    counts = np.zeros((vocab, vocab), dtype=np.float64)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    row_totals = counts.sum(axis=1)
    prev, nxt = val[:-1], val[1:]
    best = min((bigram_loss(counts, row_totals, prev, nxt, vocab, k), k)
               for k in (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001))
    unigram = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
    result = {"bigram_val_loss": best[0], "k": best[1],
              "unigram_val_loss": float(-np.mean(np.log(unigram[nxt]))),
              "train_tokens": int(len(train)), "val_tokens": int(len(val)), "vocab": vocab}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
