"""Self-checks of the PyTorch DeepSeek-V3 reference (deepseek_v3_model.py, model_numerics.py,
model_safetensors.py, deepseek_v3_ref.py): autograd against finite differences, the router and
balance-loss oracles of spec §9 / §11, MTP alignment, the layout variants, the FP8/BF16 emulation
against slow scalar definitions, and the CLI end to end. Plain unittest, no GPU, < 60 s:
  /usr/bin/python3 -m unittest -v deepseek_v3_ref_test      (from tests/reference/)
"""
import io
import json
import math
import os
import struct
import sys
import tempfile
import unittest
from contextlib import redirect_stdout
from fractions import Fraction

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_model as dsm  # noqa: E402
import deepseek_v3_ref as ref  # noqa: E402
import model_numerics as mn  # noqa: E402
import model_safetensors  # noqa: E402

SEED = 1234  # every random draw below derives from this

# A tiny V3-style shape: MoE with groups, q compression, MTP. Hidden 160 > 128 so that FP8 GEMMs
# have a full and a partial K tile.
TINY = {
    "vocab_size": 64, "hidden_size": 160, "num_hidden_layers": 2, "first_k_dense_replace": 1,
    "intermediate_size": 96, "moe_intermediate_size": 32, "n_routed_experts": 8,
    "n_shared_experts": 1, "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2,
    "routed_scaling_factor": 2.5, "num_attention_heads": 2, "q_lora_rank": 24,
    "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8,
    "num_nextn_predict_layers": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000,
}


def make_model(overrides=None, precision="fp64", seed=SEED, std=0.2, norm_std=0.1, bias_std=0.05):
    d = dict(TINY, **(overrides or {}))
    cfg = dsm.Config(d)
    model = dsm.DeepseekV3(cfg, precision)
    model.load_weights(ref.random_weights(cfg, seed, std, norm_std, bias_std))
    return model


def tokens_for(cfg, batch=2, seq=7, seed=SEED):
    return torch.from_numpy(ref.random_tokens(cfg.vocab_size, batch, seq, seed))


def param(model, name):
    return dict(model.named_parameters())[name]


class FiniteDifferenceTest(unittest.TestCase):
    """float64 autograd of `loss` against central differences, for entries of many parameters."""

    def check(self, model, names, alpha=0.05, lam=0.3, entries=3, eps=1e-6):
        toks = tokens_for(model.cfg)
        model.zero_grad(set_to_none=True)
        out = model(toks, lam, alpha)
        out["loss"].backward()
        grads = dsm.gradients(model)
        gen = torch.Generator().manual_seed(SEED)
        for name in names:
            p = param(model, name)
            flat = p.data.view(-1)
            for idx in torch.randint(0, flat.numel(), (entries,), generator=gen).tolist():
                old = flat[idx].item()
                with torch.no_grad():
                    flat[idx] = old + eps
                    up = model(toks, lam, alpha)
                    flat[idx] = old - eps
                    down = model(toks, lam, alpha)
                    flat[idx] = old
                # Selection must not flip inside the difference (it would make it meaningless).
                for a, b in zip(up["experts"], down["experts"]):
                    self.assertTrue(torch.equal(a, b), f"{name}[{idx}]: routing flipped")
                fd = (up["loss"].item() - down["loss"].item()) / (2 * eps)
                ad = grads[name].view(-1)[idx].item()
                self.assertLess(abs(fd - ad), 1e-6 + 1e-5 * abs(fd),
                                f"{name}[{idx}]: autograd {ad!r} vs finite difference {fd!r}")

    def test_gradients_of_every_kind_of_parameter_match_finite_differences(self):
        model = make_model()
        L = model.cfg.num_hidden_layers
        self.check(model, [
            "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
            "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_a_proj.weight",
            "model.layers.0.self_attn.q_a_layernorm.weight",
            "model.layers.0.self_attn.q_b_proj.weight",
            "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
            "model.layers.0.self_attn.kv_a_layernorm.weight",
            "model.layers.0.self_attn.kv_b_proj.weight",
            "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.mlp.down_proj.weight", "model.layers.1.post_attention_layernorm.weight",
            "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.0.up_proj.weight",
            "model.layers.1.mlp.experts.5.down_proj.weight",
            "model.layers.1.mlp.shared_experts.gate_proj.weight",
            f"model.layers.{L}.enorm.weight", f"model.layers.{L}.hnorm.weight",
            f"model.layers.{L}.eh_proj.weight", f"model.layers.{L}.shared_head.norm.weight",
            f"model.layers.{L}.self_attn.kv_b_proj.weight", f"model.layers.{L}.mlp.gate.weight",
        ])

    def test_gradients_without_query_compression_and_without_groups(self):
        model = make_model({"q_lora_rank": 0, "n_group": 1, "topk_group": 1,
                            "num_nextn_predict_layers": 0})
        self.check(model, ["model.layers.0.self_attn.q_proj.weight",
                           "model.layers.1.mlp.gate.weight",
                           "model.layers.1.mlp.experts.2.gate_proj.weight"])

    def test_the_router_bias_gets_a_zero_gradient(self):
        model = make_model()
        model(tokens_for(model.cfg))["loss"].backward()
        g = dsm.gradients(model)["model.layers.1.mlp.gate.e_score_correction_bias"]
        self.assertTrue(torch.equal(g, torch.zeros_like(g)))


class RouterTest(unittest.TestCase):
    """Spec oracles 8-11 and §11.5 on the MoE module and on the whole model."""

    def moe(self, overrides=None, **kw):
        model = make_model(overrides, **kw)
        return model, model.model.layers[model.cfg.first_k_dense_replace].mlp

    def test_gate_weights_sum_to_the_routed_scaling_factor_and_come_from_unbiased_scores(self):
        _, moe = self.moe(bias_std=0.5)
        x = torch.randn(50, moe.cfg.hidden_size, generator=torch.Generator().manual_seed(SEED),
                        dtype=torch.float64)
        s64, s, ids, w = moe.route(x)
        self.assertTrue(torch.allclose(w.sum(-1), torch.full((50,), 2.5, dtype=torch.float64),
                                       rtol=0, atol=1e-14))
        chosen = s.gather(1, ids)
        self.assertTrue(torch.allclose(w, chosen / chosen.sum(-1, keepdim=True) * 2.5, atol=1e-15))

    def reference_select(self, s, bias, cfg):
        """Token-by-token selection written with Python sorts (an independent implementation)."""
        out = []
        for row in (s + bias).tolist():
            gs = cfg.group_size
            groups = []
            for g in range(cfg.n_group):
                vals = sorted(row[g * gs:(g + 1) * gs], reverse=True)
                groups.append((-(vals[0] + vals[1]), g))
            kept = {g for _, g in sorted(groups)[:cfg.topk_group]}
            masked = [(-(v if e // gs in kept else -math.inf), e) for e, v in enumerate(row)]
            out.append([e for _, e in sorted(masked)[:cfg.num_experts_per_tok]])
        return torch.tensor(out)

    def test_selection_matches_a_token_by_token_implementation_including_ties(self):
        for n_group, topk_group in ((4, 2), (2, 1), (1, 1), (4, 4)):
            _, moe = self.moe({"n_group": n_group, "topk_group": topk_group})
            gen = torch.Generator().manual_seed(SEED + n_group)
            # Scores on a coarse grid so that ties between experts and between groups are common.
            s = torch.randint(0, 6, (400, 8), generator=gen).double() / 8
            bias = torch.randint(-2, 3, (8,), generator=gen).double() / 8
            got = moe.select(s, bias)
            want = self.reference_select(s, bias, moe.cfg)
            self.assertTrue(torch.equal(got, want), f"n_group={n_group} topk_group={topk_group}")

    def test_every_token_stays_within_topk_group_groups(self):
        model, _ = self.moe({"n_routed_experts": 16, "n_group": 4, "topk_group": 2,
                             "num_experts_per_tok": 4}, bias_std=0.3)
        out = model(tokens_for(model.cfg, batch=3, seq=20))
        for ids in out["experts"]:
            ids = ids.reshape(-1, 4)
            ids = ids[ids[:, 0] >= 0]
            groups = ids // 4
            n_groups = torch.tensor([len(set(r)) for r in groups.tolist()])
            self.assertLessEqual(int(n_groups.max()), 2)
            self.assertGreater(int((n_groups == 2).sum()), 0, "the limit was never exercised")

    def test_adding_a_constant_to_every_bias_changes_nothing(self):
        model = make_model(bias_std=0.1)
        toks = tokens_for(model.cfg)
        a = model(toks)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("e_score_correction_bias"):
                    p.add_(0.25)
        b = model(toks)
        for x, y in zip(a["experts"], b["experts"]):
            self.assertTrue(torch.equal(x, y))
        for k in ref.LOSS_KEYS:
            self.assertAlmostEqual(a[k].item(), b[k].item(), delta=1e-12)

    def test_a_large_bias_forces_an_expert_into_every_token_but_not_into_the_weights(self):
        model, moe = self.moe()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("e_score_correction_bias"):
                    p.zero_()
                    p[5] = 10.0
        out = model(tokens_for(model.cfg))
        for ids in out["experts"]:
            ids = ids.reshape(-1, 3)
            ids = ids[ids[:, 0] >= 0]
            self.assertTrue(bool((ids[:, 0] == 5).all()), "the forced expert is not first")
        x = torch.randn(20, moe.cfg.hidden_size, dtype=torch.float64)
        s64, s, ids, w = moe.route(x)
        self.assertTrue(bool((ids[:, 0] == 5).all()))
        chosen = s.gather(1, ids)  # unbiased: all well below 1
        self.assertTrue(torch.allclose(w, chosen / chosen.sum(-1, keepdim=True) * 2.5))
        self.assertLess(float(w[:, 0].max()), 2.5 * 0.9)

    def test_balance_term_is_one_at_perfect_balance(self):
        _, moe = self.moe()
        e, k, t = 8, 3, 8  # each expert chosen exactly k*t/e = 3 times per row
        gen = torch.Generator().manual_seed(SEED)
        s = torch.rand(2, t, e, generator=gen, dtype=torch.float64) * 0.1
        for row in range(2):
            for pos in range(t):
                for j in range(k):
                    s[row, pos, (pos * k + j + row) % e] += 0.5  # a rotating top-3
        self.assertAlmostEqual(moe.balance(s, s).item(), 1.0, delta=1e-14)
        # An imbalanced routing with the same scores' shape scores above 1 when P follows f.
        skew = s.clone()
        skew[..., 0] += 1.0
        self.assertGreater(moe.balance(skew, skew).item(), 1.0)

    def test_balance_loss_uses_unbiased_ungrouped_top_k_per_row_summed_over_layers(self):
        model = make_model(bias_std=0.5)  # large biases: the routed set differs from the f set
        inputs = []
        hooks = [layer.mlp.register_forward_hook(lambda m, a, o: inputs.append((m, a[0])))
                 for layer in model.model.layers if layer.is_moe]
        alpha = 0.01
        out = model(tokens_for(model.cfg, batch=3, seq=9), 0.3, alpha)
        for h in hooks:
            h.remove()
        self.assertEqual(len(inputs), 2)  # layer 1 and the MTP layer
        total, differs = 0.0, False
        e, k = model.cfg.n_routed_experts, model.cfg.num_experts_per_tok
        for (moe, u), ids in zip(inputs, out["experts"]):
            s = torch.sigmoid(u @ moe.gate.weight.T).detach()  # [B, T', E]
            rows = []
            for b in range(s.shape[0]):
                t = s.shape[1]
                f = [0.0] * e
                for pos in range(t):
                    order = sorted(range(e), key=lambda i: (-s[b, pos, i].item(), i))
                    for i in order[:k]:
                        f[i] += e / (k * t)
                    differs |= set(order[:k]) != set(ids[b, pos].tolist())
                p = (s[b] / s[b].sum(-1, keepdim=True)).mean(0)
                rows.append(sum(f[i] * p[i].item() for i in range(e)))
            total += sum(rows) / len(rows)
        self.assertTrue(differs, "biased routing never differed from the unbiased top-K")
        self.assertAlmostEqual(out["balance_loss"].item(), alpha * total, delta=1e-15)

    def test_balance_loss_is_alpha_times_moe_layers_when_scores_are_uniform(self):
        model = make_model()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("mlp.gate.weight"):
                    p.zero_()  # s = 1/2 for every expert: P_i = 1/E, so sum_i f_i P_i = 1
        alpha = 3e-3
        out = model(tokens_for(model.cfg), 0.3, alpha)
        n_moe = len(model.cfg.moe_layer_indices())
        self.assertEqual(n_moe, 2)
        self.assertAlmostEqual(out["balance_loss"].item(), alpha * n_moe, delta=1e-15)


class MtpTest(unittest.TestCase):
    def test_the_loss_is_main_plus_lambda_mtp_plus_balance(self):
        model = make_model()
        out = model(tokens_for(model.cfg), 0.7, 0.01)
        self.assertGreater(out["mtp_loss"].item(), 0)
        self.assertGreater(out["balance_loss"].item(), 0)
        self.assertAlmostEqual(out["loss"].item(), out["main_loss"].item()
                               + 0.7 * out["mtp_loss"].item() + out["balance_loss"].item(),
                               delta=1e-12)

    def test_a_token_reaches_main_logits_from_its_position_and_mtp_logits_from_one_before(self):
        model = make_model()
        toks = tokens_for(model.cfg, seq=7)
        base = model(toks)
        for c in range(1, 7):  # change input column c (token t_c)
            changed = toks.clone()
            changed[:, c] = (changed[:, c] + 1) % model.cfg.vocab_size
            out = model(changed)
            main_diff = (out["logits"] - base["logits"]).abs().amax(dim=(0, 2))  # [T]
            mtp_diff = (out["mtp_logits"] - base["mtp_logits"]).abs().amax(dim=(0, 2))  # [T-1]
            # (Not bit-exact: the expert GEMMs see different token sets, so rounding moves.)
            self.assertLess(float(main_diff[:c].max()), 1e-12)
            self.assertGreater(float(main_diff[c]), 1e-6)
            # MTP position i combines h_i (tokens <= i) and Emb(t_{i+1}): t_c first enters at c-1.
            if c > 1:
                self.assertLess(float(mtp_diff[:c - 1].max()), 1e-12)
            self.assertGreater(float(mtp_diff[c - 1]), 1e-6)

    def test_the_last_token_is_only_a_target(self):
        model = make_model()
        toks = tokens_for(model.cfg, seq=7)
        base = model(toks)
        changed = toks.clone()
        changed[:, 7] = (changed[:, 7] + 1) % model.cfg.vocab_size
        out = model(changed)
        self.assertTrue(torch.equal(out["logits"], base["logits"]))
        self.assertTrue(torch.equal(out["mtp_logits"], base["mtp_logits"]))
        self.assertNotEqual(out["main_loss"].item(), base["main_loss"].item())
        self.assertNotEqual(out["mtp_loss"].item(), base["mtp_loss"].item())

    def test_mtp_targets_are_two_ahead(self):
        model = make_model()
        toks = tokens_for(model.cfg, seq=7)
        out = model(toks)
        logp = torch.log_softmax(out["mtp_logits"], -1)
        want = -logp.gather(-1, toks[:, 2:, None].long()).mean()
        self.assertAlmostEqual(out["mtp_loss"].item(), want.item(), delta=1e-13)

    def test_mtp_uses_the_hidden_state_before_the_final_norm(self):
        model = make_model()
        toks = tokens_for(model.cfg)
        base = model(toks)
        with torch.no_grad():
            param(model, "model.norm.weight").mul_(1.5).add_(0.1)
        out = model(toks)
        self.assertNotEqual(out["main_loss"].item(), base["main_loss"].item())
        self.assertEqual(out["mtp_loss"].item(), base["mtp_loss"].item())

    def test_the_embedding_goes_first_into_eh_proj(self):
        model = make_model()
        toks = tokens_for(model.cfg)
        d = model.cfg.hidden_size
        eh = param(model, f"model.layers.{model.cfg.num_hidden_layers}.eh_proj.weight")
        with torch.no_grad():
            eh[:, d:] = 0  # keep only the first half of [enorm(Emb(t_{i+1})) ; hnorm(h_i)]
        base = model(toks)
        changed = toks.clone()
        changed[:, 0] = (changed[:, 0] + 1) % model.cfg.vocab_size  # t_0 reaches MTP only via h
        out = model(changed)
        self.assertGreater((out["logits"] - base["logits"]).abs().max().item(), 1e-6)
        self.assertLess((out["mtp_logits"] - base["mtp_logits"]).abs().max().item(), 1e-12)

    def test_the_mtp_routing_row_of_the_last_position_is_minus_one(self):
        model = make_model()
        out = model(tokens_for(model.cfg, seq=7))
        mtp = out["experts"][-1]
        self.assertTrue(bool((mtp[:, -1] == -1).all()))
        self.assertTrue(bool((mtp[:, :-1] >= 0).all()))


class LayoutVariantsTest(unittest.TestCase):
    def run_variant(self, overrides, n_moe, has_mtp):
        model = make_model(overrides)
        names = set(dsm.parameter_shapes(model.cfg))
        out = model(tokens_for(model.cfg))
        out["loss"].backward()
        self.assertTrue(math.isfinite(out["loss"].item()))
        self.assertEqual(len(out["experts"]), n_moe)
        self.assertEqual(has_mtp, any(".enorm." in n for n in names))
        if not has_mtp:
            self.assertEqual(out["mtp_loss"].item(), 0.0)
        return names

    def test_dense_only_with_and_without_mtp(self):
        names = self.run_variant({"first_k_dense_replace": 2}, 1, True)  # the MTP block is MoE
        self.assertIn("model.layers.2.mlp.gate.weight", names)
        self.assertIn("model.layers.1.mlp.gate_proj.weight", names)
        names = self.run_variant({"first_k_dense_replace": 2, "num_nextn_predict_layers": 0}, 0,
                                 False)
        self.assertFalse(any(".experts." in n for n in names))

    def test_moe_with_and_without_mtp(self):
        self.run_variant({"first_k_dense_replace": 0}, 3, True)
        self.run_variant({"num_nextn_predict_layers": 0}, 1, False)

    def test_query_compression_on_and_off(self):
        names = self.run_variant({"q_lora_rank": 0}, 2, True)
        self.assertIn("model.layers.0.self_attn.q_proj.weight", names)
        self.assertNotIn("model.layers.0.self_attn.q_a_proj.weight", names)
        names = self.run_variant({}, 2, True)
        self.assertIn("model.layers.0.self_attn.q_a_layernorm.weight", names)

    def test_no_shared_expert(self):
        names = self.run_variant({"n_shared_experts": 0}, 2, True)
        self.assertFalse(any("shared_experts" in n for n in names))

    def test_bad_configs_are_rejected(self):
        for bad in ({"n_group": 3}, {"topk_group": 5}, {"qk_rope_head_dim": 3},
                    {"num_nextn_predict_layers": 2}, {"n_group": 8, "topk_group": 1},
                    {"num_experts_per_tok": 5}, {"scoring_func": "softmax"},
                    {"rope_scaling": {"type": "yarn", "factor": 40,
                                      "original_max_position_embeddings": 4096,
                                      "mscale": 0.707, "mscale_all_dim": 1.0}}):
            with self.assertRaises(dsm.ConfigError, msg=str(bad)):
                dsm.Config(dict(TINY, **bad))

    def test_the_671b_parameter_count(self):
        counts = dsm.count_parameters(dsm.Config(dsm.DEEPSEEK_V3_671B))  # spec §8.6, oracle 1
        self.assertEqual(round(counts["total"] / 1e9, 2), 671.03)
        self.assertEqual(round(counts["activated"] / 1e9, 2), 37.55)
        self.assertEqual(round(counts["mtp"] / 1e9, 2), 11.61)
        self.assertEqual(counts["attention"], 187_107_328)
        self.assertEqual(counts["moe_layer"], 11_320_164_608)

    def test_the_released_config_json_is_accepted_with_the_same_count(self):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "coordinator",
                            "testdata", "deepseek_v3_config.json")
        if not os.path.exists(path):
            self.skipTest(f"{path} is absent")
        with open(path) as f:
            cfg = dsm.Config(json.load(f))
        self.assertIsNotNone(cfg.rope_scaling)
        self.assertEqual(dsm.count_parameters(cfg)["total"], 671_026_419_200)


class AttentionTest(unittest.TestCase):
    def test_rope_rotates_adjacent_pairs_as_complex_multiplication(self):
        cfg = dsm.Config(TINY)
        cos, sin = dsm.rope_table(cfg, 5, torch.float64)
        x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
        got = dsm.apply_rope(x, cos, sin)
        theta = torch.tensor([1.0, 10000 ** -0.5], dtype=torch.float64)
        rot = torch.polar(torch.ones(5, 2, dtype=torch.float64),
                          torch.arange(5, dtype=torch.float64)[:, None] * theta)
        want = torch.view_as_real(torch.view_as_complex(x.reshape(2, 5, 3, 2, 2))
                                  * rot[None, :, None, :]).reshape(x.shape)
        self.assertTrue(torch.allclose(got, want, atol=1e-14))

    def test_yarn_frequencies_and_softmax_scale_of_the_v3_config(self):
        plain = dsm.Config(dsm.DEEPSEEK_V3_671B)
        self.assertAlmostEqual(dsm.softmax_scale(plain), 0.0721688, delta=5e-8)  # oracle 4
        yarn = dsm.Config(dict(dsm.DEEPSEEK_V3_671B, rope_scaling={
            "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}))
        self.assertAlmostEqual(dsm.softmax_scale(yarn), 0.1352338, delta=5e-8)
        base, blended = dsm.rope_frequencies(plain), dsm.rope_frequencies(yarn)  # oracle 5
        for j in range(32):
            ratio = base[j] / blended[j]
            if j <= 10:
                self.assertAlmostEqual(ratio, 1.0, delta=1e-12)
            elif j >= 23:
                self.assertAlmostEqual(ratio, 40.0, delta=1e-9)
            else:
                self.assertTrue(1.0 < ratio < 40.0)

    def test_naive_mla_equals_the_absorbed_form(self):
        """Oracle 7: fold W^UK into the query and W^UV after the attention over the latent."""
        model = make_model()
        cfg = model.cfg
        mla = model.model.layers[0].self_attn
        t = 6
        x = torch.randn(2, t, cfg.hidden_size, dtype=torch.float64)
        cos, sin = dsm.rope_table(cfg, t, torch.float64)
        with torch.no_grad():
            want = mla(x, cos, sin)
            h, nope, rope, dv = (cfg.num_attention_heads, cfg.qk_nope_head_dim,
                                 cfg.qk_rope_head_dim, cfg.v_head_dim)
            q = mla.q_b_proj(mla.q_a_layernorm(mla.q_a_proj(x))).view(2, t, h, nope + rope)
            kv_a = mla.kv_a_proj_with_mqa(x)
            c = mla.kv_a_layernorm(kv_a[..., :cfg.kv_lora_rank])  # [B, T, C]
            k_pe = dsm.apply_rope(kv_a[..., cfg.kv_lora_rank:].reshape(2, t, 1, rope), cos, sin)
            q_pe = dsm.apply_rope(q[..., nope:], cos, sin)
            wkv = mla.kv_b_proj.weight.view(h, nope + dv, cfg.kv_lora_rank)
            w_uk, w_uv = wkv[:, :nope], wkv[:, nope:]
            q_lat = torch.einsum("bthn,hnc->bthc", q[..., :nope], w_uk)
            scores = (torch.einsum("bthc,bsc->bhts", q_lat, c)
                      + torch.einsum("bthr,bsr->bhts", q_pe, k_pe[:, :, 0])) * mla.scale
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
            o_lat = torch.einsum("bhts,bsc->bthc", torch.softmax(scores, -1), c)
            o = torch.einsum("bthc,hvc->bthv", o_lat, w_uv).reshape(2, t, h * dv)
            got = mla.o_proj(o)
        self.assertTrue(torch.allclose(got, want, atol=1e-13))


def e4m3_test_points():
    """All 2^16 halves as float32, plus both neighbours and the midpoint of every pair of adjacent
    E4M3 values (with the float32 values one ulp either side of the midpoint), and specials."""
    halves = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    vals = sorted(v for v in mn.e4m3_code_values() if not math.isnan(v) and v >= 0)
    pts = []
    for a, b in zip(vals, vals[1:]):
        mid = np.float32((a + b) / 2)
        pts += [a, b, mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(1e9))]
    pts += [448, 464, np.nextafter(np.float32(464), np.float32(1e9)), 480, 1e30, np.inf,
            2.0 ** -10, np.nextafter(np.float32(2.0 ** -10), np.float32(1)), 2.0 ** -11, 1e-30]
    pts = np.array(pts, dtype=np.float32)
    return np.concatenate([halves, pts, -pts, np.array([np.nan, -0.0], dtype=np.float32)])


def bf16_round_scalar(x):
    """float32 -> nearest BF16 value (ties to an even last bit; past the largest finite BF16 the
    upper neighbour is 2^128, i.e. infinity), from the two BF16 neighbours of |x|."""
    if math.isnan(x):
        return math.nan
    mag = struct.unpack("<I", struct.pack("<f", x))[0] & 0x7FFFFFFF
    if mag >= 0x7F800000:
        return x
    f32 = lambda b: struct.unpack("<f", struct.pack("<I", b))[0]
    lo = mag & 0xFFFF0000
    hi = lo + 0x10000
    vlo, vhi = f32(lo), (2.0 ** 128 if hi == 0x7F800000 else f32(hi))
    a = abs(x)
    dlo, dhi = a - vlo, vhi - a  # exact in double
    r = vlo if dlo < dhi or (dlo == dhi and not (lo >> 16) & 1) else vhi
    return math.copysign(math.inf if r == 2.0 ** 128 else r, x)


def round_f32(exact):
    """A Fraction -> the nearest float32 (ties to an even last bit), by comparing neighbours."""
    near = np.float32(float(exact))
    cands = {near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf))}
    return min(cands, key=lambda v: (abs(Fraction(float(v)) - exact),
                                     int(np.array(v).view(np.uint32)) & 1))


class NumericsTest(unittest.TestCase):
    def same_bits(self, a, b):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))

    def test_e4m3_rounding_matches_the_scalar_definition(self):
        x = e4m3_test_points()
        fast = mn.e4m3_round(torch.from_numpy(x)).numpy()
        slow = np.array([mn.e4m3_round_scalar(float(v)) for v in x], dtype=np.float32)
        ok = self.same_bits(fast, slow)
        bad = np.flatnonzero(~ok)
        self.assertEqual(bad.size, 0, f"first mismatch x={x[bad[:1]]} fast={fast[bad[:1]]} "
                                      f"slow={slow[bad[:1]]}")
        self.assertEqual(mn.e4m3_round_scalar(464.0), 448.0)  # tie to the even code 0x7E
        self.assertEqual(mn.e4m3_round_scalar(2.0 ** -10), 0.0)  # half the smallest subnormal
        self.assertEqual(mn.e4m3_round_scalar(3 * 2.0 ** -10), 2.0 ** -8)  # 1.5 ulp: to even 2

    def test_bf16_rounding_matches_the_scalar_definition(self):
        rng = np.random.default_rng(SEED)
        x = np.concatenate([
            np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32),
            rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            np.array([3.3895314e38, 3.4028235e38, np.inf, -np.inf, 1.00390625, 1.01171875],
                     dtype=np.float32)])
        fast = mn.bf16_round(torch.from_numpy(x)).numpy()
        slow = np.array([bf16_round_scalar(float(v)) for v in x], dtype=np.float32)
        bad = np.flatnonzero(~self.same_bits(fast, slow))
        self.assertEqual(bad.size, 0, f"first mismatch x={x[bad[:1]]}")

    def test_quantizers_follow_the_tile_and_block_definitions(self):
        gen = torch.Generator().manual_seed(SEED)
        x = torch.randn(5, 300, generator=gen) * torch.logspace(-6, 2, 300)[None, :]
        x[1, 128:256] = 0  # an all-zero tile takes the 1e-4 floor
        q, s = mn.quantize_1x128(x)
        self.assertEqual(tuple(q.shape), (5, 384))
        self.assertEqual(tuple(s.shape), (5, 3))
        amax = torch.nn.functional.pad(x, (0, 84)).view(5, 3, 128).abs().amax(-1)
        want_s = torch.clamp(amax, min=np.float32(1e-4)) / 448
        self.assertTrue(torch.equal(s, want_s))
        self.assertEqual(s[1, 1].item(), np.float32(np.float32(1e-4) / np.float32(448)))
        self.assertLessEqual(q.abs().max().item(), 448)
        self.assertTrue(torch.equal(q, mn.e4m3_round(q)))
        self.assertTrue(torch.equal(q[:, 300:], torch.zeros(5, 84)))
        xr = mn.dequantize_1x128(q, s)[:, :300]
        rel = ((xr - x).abs() / (amax.repeat_interleave(128, 1)[:, :300] + 1e-30)).max()
        self.assertLess(rel.item(), 2 ** -4)  # within half an E4M3 ulp of the tile's top binade
        w = torch.randn(200, 130, generator=gen)
        qw, sw = mn.quantize_128x128(w)
        self.assertEqual(tuple(qw.shape), (256, 256))
        self.assertEqual(tuple(sw.shape), (2, 2))
        self.assertEqual(sw[1, 1].item(), np.float32(w[128:, 128:].abs().max().item() / 448.0))

    def test_the_fp8_gemm_is_the_product_of_the_dequantised_operands(self):
        gen = torch.Generator().manual_seed(SEED)
        x, w = torch.randn(37, 300, generator=gen), torch.randn(70, 300, generator=gen)
        xq, xs = mn.quantize_1x128(x)
        wq, ws = mn.quantize_128x128(w)
        y = mn.Fp8Linear.apply(x, w)
        xd = mn.dequantize_1x128(xq, xs).double()
        wd = (wq.view(1, 128, 3, 128) * ws[:, None, :, None]).view(128, 384).double()
        want = xd @ wd[:70].T
        self.assertLess(((y.double() - want).norm() / want.norm()).item(), 1e-6)
        # ... and close to the exact product (E4M3 has 3 mantissa bits).
        exact = x.double() @ w.double().T
        self.assertLess(((y.double() - exact).norm() / exact.norm()).item(), 0.05)

    def test_fma_f32_rounds_the_exact_value_once(self):
        gen = torch.Generator().manual_seed(SEED)
        a = torch.randn(3000, generator=gen)
        b = torch.randn(3000, generator=gen) * 1e-3
        c = torch.randn(3000, generator=gen) * 1e-3
        # Double-rounding traps: a*b = 1 + 2^-11 + 2^-24 is a float32 midpoint, and c = +-2^-80
        # vanishes in a float64 sum, yet decides the float32 result.
        u = 1 + 2 ** -12
        a[:2], b[:2], c[:2] = torch.tensor([u, u]), torch.tensor([u, u]), torch.tensor([2 ** -80,
                                                                                       -2 ** -80])
        got = mn.fma_f32(a, b, c).numpy()
        self.assertEqual(float(got[0]), 1 + 2 ** -11 + 2 ** -23)
        self.assertEqual(float(got[1]), 1 + 2 ** -11)
        for i in range(a.numel()):
            exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
            self.assertEqual(got[i], round_f32(exact), f"i={i}")

    def test_the_fp8_gemm_sums_in_the_order_of_gemm_h(self):
        gen = torch.Generator().manual_seed(SEED)
        x, w = torch.randn(3, 200, generator=gen), torch.randn(2, 200, generator=gen) * 1e-2
        xq, xs = mn.quantize_1x128(x)
        wq, ws = mn.quantize_128x128(w)
        got = mn.fp8_gemm(xq, xs, 1, wq, ws, 128)[:, :2].numpy()
        for m in range(3):
            for n in range(2):
                c = np.float32(0)
                for kb in range(2):
                    p = np.float32(0)
                    for pair in range(64):
                        for k in (128 * kb + 2 * pair + 1, 128 * kb + 2 * pair):
                            p = np.float32(p + np.float32(xq[m, k]) * np.float32(wq[n, k]))
                    scale = np.float32(xs[m, kb] * ws[0, kb])
                    c = round_f32(Fraction(float(p)) * Fraction(float(scale)) + Fraction(float(c)))
                self.assertEqual(got[m, n], c)

    def test_fp8_and_bf16_linear_backward_approximate_the_exact_gradients(self):
        gen = torch.Generator().manual_seed(SEED)
        x0, w0 = torch.randn(150, 200, generator=gen), torch.randn(140, 200, generator=gen)
        dy = torch.randn(150, 140, generator=gen)
        for fn, tol in ((mn.Fp8Linear, 0.08), (mn.Bf16Linear, 0.01)):
            x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
            fn.apply(x, w).backward(dy)
            ex, ew = dy.double() @ w0.double(), dy.double().T @ x0.double()
            self.assertLess(((x.grad.double() - ex).norm() / ex.norm()).item(), tol, fn.__name__)
            self.assertLess(((w.grad.double() - ew).norm() / ew.norm()).item(), tol, fn.__name__)

    def test_low_precision_modes_stay_close_to_fp64(self):
        weights = ref.random_weights(dsm.Config(TINY), SEED, 0.2, 0.1, 0.05)
        toks = tokens_for(dsm.Config(TINY))
        losses = {}
        for p in ("fp64", "fp32", "bf16", "fp8"):
            model = dsm.DeepseekV3(dsm.Config(TINY), p)
            model.load_weights(weights)
            losses[p] = model(toks)["loss"].item()
        self.assertAlmostEqual(losses["fp32"], losses["fp64"], delta=1e-5 * losses["fp64"])
        self.assertAlmostEqual(losses["bf16"], losses["fp64"], delta=2e-2 * losses["fp64"])
        self.assertAlmostEqual(losses["fp8"], losses["fp64"], delta=5e-2 * losses["fp64"])
        self.assertNotEqual(losses["fp8"], losses["fp32"])


class FilesAndCliTest(unittest.TestCase):
    def test_safetensors_round_trip_and_bf16_reading(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "t.safetensors")
            tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                       "b": np.array([1, -2], dtype=np.int32), "c": np.zeros((0, 4), np.float64)}
            model_safetensors.save(path, tensors, {"k": "v"})
            back, meta = model_safetensors.load(path)
            self.assertEqual(list(back), ["a", "b", "c"])
            self.assertEqual(meta, {"k": "v"})
            for k in tensors:
                self.assertTrue(np.array_equal(back[k], tensors[k]))
                self.assertEqual(back[k].dtype, tensors[k].dtype)
            # A hand-made BF16 file: 1.0 = 0x3F80, -2.5 = 0xC020.
            header = b'{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}'
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(header)) + header)
                f.write(struct.pack("<HH", 0x3F80, 0xC020))
            back, _ = model_safetensors.load(path)
            self.assertEqual(back["x"].tolist(), [1.0, -2.5])

    def test_init_eval_and_compare_end_to_end(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = os.path.join(tmp, "config.json")
            with open(cfg_path, "w") as f:
                json.dump(TINY, f)
            model_dir, tok = os.path.join(tmp, "m"), os.path.join(tmp, "tok.npy")
            quiet = io.StringIO()
            with redirect_stdout(quiet):
                ref.main(["init", f"--config={cfg_path}", f"--out={model_dir}", "--seed=5",
                          "--std=0.2", "--norm_std=0.1", "--bias_std=0.05"])
                ref.main(["tokens", "--vocab=64", "--batch=2", "--seq=6", "--seed=5",
                          f"--out={tok}"])
                for p in ("fp64", "fp32"):
                    ref.main(["eval", f"--model={model_dir}", f"--tokens={tok}",
                              f"--out={os.path.join(tmp, p)}", f"--precision={p}"])
            a, b = os.path.join(tmp, "fp32"), os.path.join(tmp, "fp64")
            self.assertEqual(np.load(tok).shape, (2, 7))
            self.assertEqual(np.load(os.path.join(b, "logits.npy")).dtype, np.float32)
            self.assertEqual(np.load(os.path.join(b, "logits.npy")).shape, (2, 6, 64))
            experts = np.load(os.path.join(b, "experts.npy"))
            self.assertEqual((experts.dtype, experts.shape), (np.int32, (2, 12, 3)))
            self.assertTrue((experts[1].reshape(2, 6, 3)[:, 5] == -1).all())
            grads, _ = model_safetensors.load(os.path.join(b, "grads.safetensors"))
            self.assertEqual(list(grads), list(dsm.parameter_shapes(dsm.Config(TINY))))
            self.assertTrue(all(g.dtype == np.float32 for g in grads.values()))
            with redirect_stdout(quiet):
                self.assertEqual(ref.compare_dirs(a, b, 1e-5, 1e-5, 1e-4), [])
            # A tampered gradient must be reported, by name.
            grads["model.layers.1.mlp.gate.weight"] *= 1.01
            model_safetensors.save(os.path.join(a, "grads.safetensors"), grads)
            with redirect_stdout(quiet):
                failures = ref.compare_dirs(a, b, 1e-5, 1e-5, 1e-4)
            self.assertEqual(failures, ["grads:model.layers.1.mlp.gate.weight"])


if __name__ == "__main__":
    unittest.main()
