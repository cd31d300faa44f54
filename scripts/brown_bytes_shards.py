#!/usr/bin/env python3
"""Interim data preparation for the demo: the Brown corpus as byte-level token shards.

Reads the 500 Brown texts fetched by scripts/bootstrap.sh, strips the part-of-speech tags
("word/tag" -> "word"), keeps documents apart, and writes llm.c-layout shards (256 int32 header:
magic 20240520, version 1, token count; then uint16 tokens) where each token is one UTF-8 byte
(ids 0..255; 10 separates documents). Every 10th document goes to validation.
This stands in for `dsv3-data prepare` (SentencePiece BPE) until that tool exists; the ids are valid
for any vocab_size >= 256.
  brown_bytes_shards.py CORPUS_DIR OUT_DIR
"""
import os
import re
import struct
import sys

MAGIC, VERSION = 20240520, 1


def document_text(path):
    words = []
    with open(path, encoding="latin-1") as f:
        for token in f.read().split():
            word = token.rsplit("/", 1)[0]
            if word:
                words.append(word)
    text = " ".join(words)
    return re.sub(r" ([.,;:!?')])", r"\1", text)


def write_shard(path, tokens):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        header = [0] * 256
        header[0], header[1], header[2] = MAGIC, VERSION, len(tokens)
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack("<%dH" % len(tokens), *tokens))
    os.replace(tmp, path)  # never a half-written shard


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    corpus, out = sys.argv[1], sys.argv[2]
    names = sorted(n for n in os.listdir(corpus) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) != 500:
        sys.exit(f"brown_bytes_shards: expected 500 Brown texts in {corpus}, found {len(names)}")
    os.makedirs(out, exist_ok=True)
    train, val = [], []
    for i, name in enumerate(names):
        data = list(document_text(os.path.join(corpus, name)).encode("utf-8")) + [10]
        (val if i % 10 == 9 else train).extend(data)
    write_shard(os.path.join(out, "train.bin"), train)
    write_shard(os.path.join(out, "val.bin"), val)
    print(f"brown_bytes_shards: {len(train)} train and {len(val)} val byte tokens in {out}")


if __name__ == "__main__":
    main()
