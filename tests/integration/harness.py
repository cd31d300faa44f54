"""Process harness for dsv3 integration tests: starts a real coordinator and workers on 127.0.0.1
with ephemeral ports, runs dsv3ctl, and cleans every process up. Each wait has a deadline, so a
broken build fails a test instead of hanging it. Used by the *_test.py files beside it; it tests
nothing by itself.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

BIN_DIR = os.environ.get("DSV3_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build"))


def binary(name):
    for sub in ("coordinator", "worker", "cli", "tests", ""):
        path = os.path.join(BIN_DIR, sub, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"{name} not found under {BIN_DIR} (set DSV3_BIN_DIR)")


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a truthy value; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}; last value: {last!r}")


class JobWatch:
    """`dsv3ctl watch JOB --json` in the background: every status the coordinator streams (one on
    each change of the job), with the local time it arrived. Catches states that last only until
    the next scheduling tick, which polling `status` would mostly miss."""

    def __init__(self, cluster, job_id):
        self.updates = []  # (time.time(), status)
        self.proc = subprocess.Popen(
            [binary("dsv3ctl"), f"--coordinator={cluster.address}", "watch", job_id, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if not line.strip():
                continue
            try:
                self.updates.append((time.time(), json.loads(line)))
            except ValueError:
                continue

    def first(self, predicate):
        """(arrival time, status) of the first update for which predicate(status) holds."""
        return next(((t, st) for t, st in list(self.updates) if predicate(st)), None)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        self.proc.stdout.close()


def write_token_shard(path, tokens, version=1):
    """Writes an llm.c-layout token shard: 256 int32 header (magic, version, count) + tokens."""
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, version, len(tokens)
    fmt = "<%dH" % len(tokens) if version == 1 else "<%dI" % len(tokens)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(fmt, *tokens))


def example_spec(data_dir, **overrides):
    """The DESIGN.md example job, with its data files written into data_dir."""
    os.makedirs(data_dir, exist_ok=True)
    train = os.path.join(data_dir, "train.bin")
    val = os.path.join(data_dir, "val.bin")
    if not os.path.exists(train):
        write_token_shard(train, [i % 4096 for i in range(20000)])
        # At least one validation pass (val_tokens defaults to the global batch, 16384).
        write_token_shard(val, [i % 4096 for i in range(20000)])
    spec = {
        "name": "brown-tiny",
        "stage": "pre_training",
        "model": {"vocab_size": 4096, "hidden_size": 256, "num_hidden_layers": 4,
                  "first_k_dense_replace": 1, "intermediate_size": 512,
                  "moe_intermediate_size": 128, "n_routed_experts": 16, "n_shared_experts": 1,
                  "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
                  "routed_scaling_factor": 2.5, "num_attention_heads": 4, "q_lora_rank": 128,
                  "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
                  "v_head_dim": 64, "num_nextn_predict_layers": 1, "rms_norm_eps": 1e-6,
                  "rope_theta": 10000},
        "parallel": {"pipeline_parallel": 2, "expert_parallel": 2, "schedule": "dualpipe",
                     "micro_batches": 8, "min_workers": 2, "max_workers": 8},
        "train": {"seq_len": 128, "global_batch_tokens": 16384, "steps": 300, "lr": 3e-3,
                  "min_lr": 3e-4, "warmup_steps": 20, "weight_decay": 0.1, "grad_clip": 1.0,
                  "seed": 1, "mtp_loss_weight": 0.3, "bias_update_speed": 0.001,
                  "seq_aux_loss_alpha": 0.0001},
        "precision": "fp8",
        "data": {"train": train, "val": val},
        "checkpoint": {"dir": os.path.join(data_dir, "runs"), "every_steps": 50},
        "accounting": {"price_per_device_hour": 2.0, "device_peak_tflops": 0},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            spec[section][field] = value
        else:
            spec[section] = value
    return spec


class Cluster:
    """A coordinator plus workers in a temporary directory. Use as a context manager."""

    def __init__(self, lease_ms=300, token=None):
        self.dir = tempfile.mkdtemp(prefix="dsv3-it-")
        self.state_dir = os.path.join(self.dir, "state")
        self.lease_ms = lease_ms
        self.token_file = None
        if token is not None:
            self.token_file = os.path.join(self.dir, "token")
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
        self.coordinator = None
        self.port = 0
        self.workers = {}
        self.logs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(keep_logs=exc[0] is not None)
        return False

    def _log(self, name):
        path = os.path.join(self.dir, f"{name}.log")
        self.logs.append(path)
        return open(path, "ab")

    def start_coordinator(self, port=0, extra=()):
        port_file = os.path.join(self.dir, "port")
        if os.path.exists(port_file):
            os.remove(port_file)
        args = [binary("dsv3-coordinator"), f"--port={port}", f"--port_file={port_file}",
                f"--state_dir={self.state_dir}", f"--lease_ms={self.lease_ms}", *extra]
        if self.token_file:
            args.append(f"--auth_token_file={self.token_file}")
        self.coordinator = subprocess.Popen(args, stdout=self._log("coordinator"),
                                            stderr=subprocess.STDOUT)
        def ready():
            if self.coordinator.poll() is not None:
                raise AssertionError(f"coordinator exited with {self.coordinator.returncode}; "
                                     f"log:\n{self.tail('coordinator')}")
            try:
                with open(port_file) as f:
                    text = f.read()
                return int(text) if text.endswith("\n") else None
            except (FileNotFoundError, ValueError):
                return None
        self.port = wait_for(ready, 20, "the coordinator's port file")
        return self.coordinator

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start_worker(self, name, node="node-a", token_file=None, env=None):
        """Starts a worker; `env` (a dict) is merged over os.environ for it, and so for the rank
        processes it starts (e.g. a test-only fault such as DSV3_TEST_HANG)."""
        args = [binary("dsv3-worker"), f"--coordinator={self.address}", f"--name={name}",
                f"--node={node}", f"--work_dir={os.path.join(self.dir, name)}"]
        token_file = token_file or self.token_file
        if token_file:
            args.append(f"--auth_token_file={token_file}")
        proc = subprocess.Popen(args, stdout=self._log(name), stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
        self.workers[name] = proc
        return proc

    def ctl(self, *args, token_file=None, timeout=30):
        cmd = [binary("dsv3ctl"), f"--coordinator={self.address}"]
        token_file = token_file if token_file is not None else self.token_file
        if token_file:
            cmd.append(f"--auth_token_file={token_file}")
        cmd += list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        return p.returncode, p.stdout, p.stderr

    def ctl_json(self, *args):
        rc, out, err = self.ctl(*args, "--json")
        if rc != 0:
            raise AssertionError(f"dsv3ctl {' '.join(args)} --json failed ({rc}): {err}")
        return json.loads(out)

    def workers_by_name(self):
        return {w["name"]: w for w in self.ctl_json("workers").get("workers", [])}

    def submit(self, spec):
        path = os.path.join(self.dir, f"spec-{time.monotonic_ns()}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        return self.ctl("submit", path)

    def kill(self, proc, sig=signal.SIGKILL):
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def tail(self, name, lines=40):
        path = os.path.join(self.dir, f"{name}.log")
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def close(self, keep_logs=False):
        procs = list(self.workers.values()) + [self.coordinator]
        for p in procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in procs:
            if p is None:
                continue
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if keep_logs:
            print(f"\n[harness] logs kept in {self.dir}")
            for name in ["coordinator", *self.workers]:
                print(f"--- {name} ---\n{self.tail(name)}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
