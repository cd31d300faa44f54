"""The C++ model against the PyTorch reference: `dsv3-train eval` on small random models, compared
file by file (loss terms, logits, routed experts, every gradient) with
tests/reference/deepseek_v3_ref.py `eval` by its own `compare`. fp32 is checked against the fp64
oracle (routing exactly, gradients to 1e-4); fp8 and bf16 against the reference's emulation of the
same GEMMs. It also checks that model directories written by the reference's `init` (from a job
spec) and by `dsv3-train export` (from a checkpoint of `dsv3-train run`) load in both. The reference runs inside this process (one torch import per test); the
C++ side runs the dsv3-train binary.
Run: DSV3_BIN_DIR=build /usr/bin/python3 -m unittest -v model_eval_test
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

from harness import binary, example_spec, write_token_shard

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/reference"))
import deepseek_v3_ref as ref  # noqa: E402

BATCH = 2


def config(**fields):
    """A config.json dict: the given HF keys plus the fixed defaults."""
    d = {"routed_scaling_factor": 2.5, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
    d.update(fields)
    return d


# Small configs that together cover: q_lora_rank 0 and > 0; dense-only, dense + MoE and all-MoE
# main layers; (n_group, topk_group, K) = (4,2,3), (1,1,2), (2,2,2), (2,1,4), (8,3,5); MTP on and
# off; n_shared_experts 0, 1 and 2; head dims and widths that are not multiples of 8, let alone
# 128. Seeds are ones whose routing has no near-ties (checked: fp32 and fp64 pick the same
# experts). name -> (config, init seed, T, extra eval flags)
FP32_CASES = {
    "moe_qlora_mtp_g4k3": (config(
        vocab_size=200, hidden_size=48, num_hidden_layers=3, first_k_dense_replace=1,
        intermediate_size=72, moe_intermediate_size=24, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=3, n_group=4, topk_group=2, num_attention_heads=3, q_lora_rank=20,
        kv_lora_rank=24, qk_nope_head_dim=12, qk_rope_head_dim=6, v_head_dim=10,
        num_nextn_predict_layers=1), 1, 12, []),
    "allmoe_qproj_nomtp_g1k2_noshared": (config(
        vocab_size=150, hidden_size=40, num_hidden_layers=2, first_k_dense_replace=0,
        intermediate_size=56, moe_intermediate_size=20, n_routed_experts=6, n_shared_experts=0,
        num_experts_per_tok=2, n_group=1, topk_group=1, num_attention_heads=2, q_lora_rank=0,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
        num_nextn_predict_layers=0, rope_theta=500.0), 2, 16, []),
    "dense_main_moe_mtp_g2k2": (config(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, first_k_dense_replace=2,
        intermediate_size=44, moe_intermediate_size=12, n_routed_experts=4, n_shared_experts=1,
        num_experts_per_tok=2, n_group=2, topk_group=2, num_attention_heads=2, q_lora_rank=16,
        kv_lora_rank=12, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=6,
        num_nextn_predict_layers=1), 3, 10, []),
    "dense_only_qproj_nomtp": (config(
        vocab_size=100, hidden_size=36, num_hidden_layers=2, first_k_dense_replace=2,
        intermediate_size=52, moe_intermediate_size=12, n_routed_experts=4, n_shared_experts=0,
        num_experts_per_tok=2, n_group=1, topk_group=1, num_attention_heads=3, q_lora_rank=0,
        kv_lora_rank=10, qk_nope_head_dim=5, qk_rope_head_dim=2, v_head_dim=7,
        num_nextn_predict_layers=0, rms_norm_eps=1e-5), 4, 8, []),
    "moe_g2t1k4_mtp_weights": (config(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, first_k_dense_replace=1,
        intermediate_size=96, moe_intermediate_size=16, n_routed_experts=8, n_shared_experts=2,
        num_experts_per_tok=4, n_group=2, topk_group=1, num_attention_heads=4, q_lora_rank=24,
        kv_lora_rank=20, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12,
        num_nextn_predict_layers=1, routed_scaling_factor=1.5), 5, 9,
        ["--mtp_loss_weight=0.7", "--seq_aux_loss_alpha=0.02"]),
    "moe_g8t3k5_qlora": (config(
        vocab_size=300, hidden_size=32, num_hidden_layers=3, first_k_dense_replace=1,
        intermediate_size=40, moe_intermediate_size=8, n_routed_experts=16, n_shared_experts=1,
        num_experts_per_tok=5, n_group=8, topk_group=3, num_attention_heads=2, q_lora_rank=12,
        kv_lora_rank=14, qk_nope_head_dim=10, qk_rope_head_dim=2, v_head_dim=9,
        num_nextn_predict_layers=0), 6, 14, []),
}

# fp8: widths with partial 128-tiles (kv_lora + rope = 160, 192, 80, hidden 160) and exact
# multiples of 128 (hidden 128, intermediate 256, q_lora 128).
FP8_CASES = {
    "fp8_hidden128": (config(
        vocab_size=160, hidden_size=128, num_hidden_layers=2, first_k_dense_replace=1,
        intermediate_size=256, moe_intermediate_size=64, n_routed_experts=4, n_shared_experts=1,
        num_experts_per_tok=2, n_group=2, topk_group=1, num_attention_heads=2, q_lora_rank=128,
        kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=40,
        num_nextn_predict_layers=1), 7, 12, []),
    "fp8_hidden160_partial": (config(
        vocab_size=140, hidden_size=160, num_hidden_layers=2, first_k_dense_replace=1,
        intermediate_size=192, moe_intermediate_size=80, n_routed_experts=4, n_shared_experts=0,
        num_experts_per_tok=2, n_group=1, topk_group=1, num_attention_heads=2, q_lora_rank=0,
        kv_lora_rank=136, qk_nope_head_dim=24, qk_rope_head_dim=8, v_head_dim=20,
        num_nextn_predict_layers=0), 8, 10, []),
}

BF16_CASE = ("bf16_moe_mtp", FP32_CASES["moe_qlora_mtp_g4k3"][0], 9, 12)

INIT_FLAGS = ["--std=0.08", "--norm_std=0.1", "--bias_std=0.05"]


class ModelEvalTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dsv3_model_eval_")
        cls.dsv3_train = binary("dsv3-train")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------

    def ref_cli(self, *argv):
        """Runs deepseek_v3_ref.py's command line in this process; returns its stdout."""
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ref.main([str(a) for a in argv])
        return buf.getvalue()

    def make_model(self, name, cfg, seed, seq):
        """init + tokens with the reference; returns (model dir, tokens path)."""
        work = os.path.join(self.tmp, name)
        os.makedirs(work, exist_ok=True)
        cfg_path = os.path.join(work, "config_in.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        model = os.path.join(work, "model")
        tokens = os.path.join(work, "tokens.npy")
        self.ref_cli("init", f"--config={cfg_path}", f"--out={model}", f"--seed={seed}",
                     *INIT_FLAGS)
        self.ref_cli("tokens", f"--vocab={cfg['vocab_size']}", f"--batch={BATCH}",
                     f"--seq={seq}", f"--seed={seed}", f"--out={tokens}")
        return work, model, tokens

    def cpp_eval(self, model, tokens, out, precision, extra=()):
        cmd = [self.dsv3_train, "eval", f"--model={model}", f"--tokens={tokens}", f"--out={out}",
               f"--precision={precision}", "--threads=2", *extra]
        start = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, f"{' '.join(cmd)}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return time.monotonic() - start

    def compare(self, label, cpp, ref_dir, **tolerances):
        lines = []
        failures = ref.compare_dirs(cpp, ref_dir, out=lines.append, **tolerances)
        print(f"\n== {label}\n" + "\n".join(lines), flush=True)
        self.assertEqual(failures, [], f"{label}: C++ vs reference:\n" + "\n".join(lines))

    def ref_eval_args(self, model, tokens, out, precision, extra, no_grads=False):
        return ["eval", f"--model={model}", f"--tokens={tokens}", f"--out={out}",
                f"--precision={precision}", *extra] + (["--no_grads"] if no_grads else [])

    # ---- tests -----------------------------------------------------------------------------

    def check_fp32(self, names):
        for name in names:
            cfg, seed, seq, extra = FP32_CASES[name]
            with self.subTest(config=name):
                work, model, tokens = self.make_model(name, cfg, seed, seq)
                ref_out, cpp_out = os.path.join(work, "ref"), os.path.join(work, "cpp")
                self.ref_cli(*self.ref_eval_args(model, tokens, ref_out, "fp64", extra))
                self.cpp_eval(model, tokens, cpp_out, "fp32", extra)
                self.compare(f"{name} fp32 vs reference fp64", cpp_out, ref_out,
                             loss_rtol=1e-5, logits_rtol=1e-5, grad_rtol=1e-4,
                             max_expert_mismatches=0)
                experts = np.load(os.path.join(cpp_out, "experts.npy"))
                moe = sum(1 for i in range(cfg["num_hidden_layers"] +
                                           cfg["num_nextn_predict_layers"])
                          if i >= cfg["first_k_dense_replace"])
                self.assertEqual(experts.shape,
                                 (moe, BATCH * seq, cfg["num_experts_per_tok"]))

    def test_fp32_matches_the_fp64_reference_with_q_compression_and_mtp(self):
        self.check_fp32(["moe_qlora_mtp_g4k3", "moe_g2t1k4_mtp_weights"])

    def test_fp32_matches_the_fp64_reference_without_q_compression_or_mtp(self):
        self.check_fp32(["allmoe_qproj_nomtp_g1k2_noshared", "moe_g8t3k5_qlora"])

    def test_fp32_matches_the_fp64_reference_with_dense_layers(self):
        self.check_fp32(["dense_main_moe_mtp_g2k2", "dense_only_qproj_nomtp"])

    def test_fp8_loss_matches_the_reference_fp8_emulation(self):
        for name, (cfg, seed, seq, extra) in FP8_CASES.items():
            with self.subTest(config=name):
                work, model, tokens = self.make_model(name, cfg, seed, seq)
                ref_out, cpp_out = os.path.join(work, "ref8"), os.path.join(work, "cpp8")
                self.ref_cli(*self.ref_eval_args(model, tokens, ref_out, "fp8", extra))
                self.cpp_eval(model, tokens, cpp_out, "fp8", extra)
                # DESIGN.md asks for the loss to 1e-3. The quantisers and FP8 GEMMs are
                # bit-exact on both sides, so logits and gradients are held much tighter than
                # the FP8 error itself (fp8 vs fp64 differs by ~1e-2).
                self.compare(f"{name} fp8 vs reference fp8", cpp_out, ref_out,
                             loss_rtol=1e-3, logits_rtol=1e-3, grad_rtol=5e-3,
                             max_expert_mismatches=0)

    def test_bf16_loss_matches_the_reference_bf16_emulation(self):
        name, cfg, seed, seq = BF16_CASE
        work, model, tokens = self.make_model(name, cfg, seed, seq)
        ref_out, cpp_out = os.path.join(work, "ref16"), os.path.join(work, "cpp16")
        self.ref_cli(*self.ref_eval_args(model, tokens, ref_out, "bf16", []))
        self.cpp_eval(model, tokens, cpp_out, "bf16")
        # bf16 vs fp64 differs by ~2e-4 in the loss and ~1.6e-2 in gradients; the two bf16
        # implementations must agree far better than that.
        self.compare(f"{name} bf16 vs reference bf16", cpp_out, ref_out,
                     loss_rtol=1e-3, logits_rtol=1e-3, grad_rtol=5e-3,
                     max_expert_mismatches=0)

    def test_brown_tiny_initialised_from_its_job_spec_matches_the_reference(self):
        # `init --config=<job spec>` copies the spec's "model" section into config.json. This is
        # also the case with widths of 128 and more (hidden 256, q/kv_lora 128, vocab 4096), where
        # the kernels split work over threads.
        spec = os.path.join(ROOT, "docs/examples/brown-tiny.json")
        work = os.path.join(self.tmp, "brown_tiny")
        model, tokens = os.path.join(work, "model"), os.path.join(work, "tokens.npy")
        self.ref_cli("init", f"--config={spec}", f"--out={model}", "--seed=1", *INIT_FLAGS)
        self.ref_cli("tokens", "--vocab=4096", f"--batch={BATCH}", "--seq=4", "--seed=1",
                     f"--out={tokens}")
        with open(os.path.join(model, "config.json")) as f:
            self.assertEqual(json.load(f)["hidden_size"], 256)
        ref_out, cpp_out = os.path.join(work, "ref"), os.path.join(work, "cpp")
        self.ref_cli(*self.ref_eval_args(model, tokens, ref_out, "fp64", []))
        self.cpp_eval(model, tokens, cpp_out, "fp32")
        self.compare("brown-tiny fp32 vs reference fp64", cpp_out, ref_out,
                     loss_rtol=1e-5, logits_rtol=1e-5, grad_rtol=1e-4)
        # Same inputs, same thread count: the same bytes (a race in threaded kernels shows here).
        for i in range(3):
            again = os.path.join(work, f"cpp_again{i}")
            self.cpp_eval(model, tokens, again, "fp32")
            for name in ("loss.json", "logits.npy", "experts.npy", "grads.safetensors"):
                with open(os.path.join(cpp_out, name), "rb") as a, \
                        open(os.path.join(again, name), "rb") as b:
                    self.assertTrue(a.read() == b.read(),
                                    f"run {i + 2} of dsv3-train eval --threads=2 wrote another "
                                    f"{name} than the first (nondeterministic)")

    def test_an_exported_checkpoint_loads_in_both_implementations(self):
        # Two steps of `dsv3-train run` with a checkpoint, `export`, then both evals.
        name = "moe_qlora_mtp_g4k3"
        cfg = FP32_CASES[name][0]
        work = os.path.join(self.tmp, "export")
        data = os.path.join(work, "data")
        os.makedirs(data)
        vocab = cfg["vocab_size"]
        write_token_shard(os.path.join(data, "train.bin"), [(i * 37) % vocab for i in range(2000)])
        write_token_shard(os.path.join(data, "val.bin"), [(i * 11) % vocab for i in range(500)])
        spec = example_spec(data, **{
            "model": cfg, "precision": "fp32", "parallel.pipeline_parallel": 1,
            "parallel.expert_parallel": 1, "parallel.schedule": "1f1b",
            "parallel.micro_batches": 1, "parallel.min_workers": 1, "parallel.max_workers": 1,
            "train.seq_len": 8, "train.global_batch_tokens": 16, "train.steps": 2,
            "train.warmup_steps": 1, "checkpoint.dir": os.path.join(work, "runs"),
            "checkpoint.every_steps": 2})
        spec_path = os.path.join(work, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        p = subprocess.run([self.dsv3_train, "run", f"--spec={spec_path}", "--threads=2"],
                           capture_output=True, text=True, timeout=120, cwd=work)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        checkpoint = os.path.join(work, "runs", "step-00000002")
        model = os.path.join(work, "hf")
        p = subprocess.run([self.dsv3_train, "export", f"--checkpoint={checkpoint}",
                            f"--out={model}"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("exported step 2 (1 ranks)", p.stdout)
        self.assertEqual(sorted(os.listdir(model)), ["config.json", "model.safetensors"])

        tokens = os.path.join(work, "tokens.npy")
        self.ref_cli("tokens", f"--vocab={vocab}", f"--batch={BATCH}", "--seq=8", "--seed=3",
                     f"--out={tokens}")
        ref_out, cpp_out = os.path.join(work, "ref"), os.path.join(work, "cpp")
        self.ref_cli(*self.ref_eval_args(model, tokens, ref_out, "fp64", []))
        self.cpp_eval(model, tokens, cpp_out, "fp32")
        self.compare("exported checkpoint fp32 vs reference fp64", cpp_out, ref_out,
                     loss_rtol=1e-5, logits_rtol=1e-5, grad_rtol=1e-4)

    def test_bad_inputs_exit_2_with_one_line(self):
        name = "bad_inputs"
        cfg, seed, _, _ = FP32_CASES["dense_only_qproj_nomtp"]
        work, model, _ = self.make_model(name, cfg, seed, 4)
        out = os.path.join(work, "out")
        bad_ids = os.path.join(work, "bad_ids.npy")
        np.save(bad_ids, np.array([[1, 2, 3], [4, 5, cfg["vocab_size"]]], dtype=np.int32))
        int64 = os.path.join(work, "int64.npy")
        np.save(int64, np.zeros((2, 5), dtype=np.int64))
        cases = [
            ([f"--model={model}", f"--tokens={bad_ids}", f"--out={out}"],
             f"tokens[1, 2]={cfg['vocab_size']} is outside"),
            ([f"--model={model}", f"--tokens={int64}", f"--out={out}"], "expected int32"),
            ([f"--model={work}", f"--tokens={int64}", f"--out={out}"], "config.json"),
            ([f"--model={model}", f"--tokens={int64}"], "required"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                p = subprocess.run([self.dsv3_train, "eval", *args], capture_output=True,
                                   text=True, timeout=60)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(message, p.stderr)
                self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
