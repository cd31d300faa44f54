// Shared helpers of the trainer tests: a tiny DeepSeek-V3 config (MLA, one dense and one MoE
// layer, MTP), a scratch directory that removes itself, and synthetic token shards. Test-only;
// header-only.
#ifndef DSV3_ENGINE_TRAIN_TRAINER_TEST_UTIL_H_
#define DSV3_ENGINE_TRAIN_TRAINER_TEST_UTIL_H_

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model_config.h"
#include "common/status_macros.h"
#include "engine/train/data_loader.h"
#include "engine/train/token_shard.h"
#include "gtest/gtest.h"

namespace dsv3::train::testing {

// vocab 64, hidden 32, 2 layers (layer 0 dense, layer 1 MoE with 4 routed experts in 2 groups,
// 1 shared, top-2), MLA with q_lora 16 / kv_lora 16, MTP on.
inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 64;
  c.moe_intermediate_size = 16;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 2;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 2;
  c.q_lora_rank = 16;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 8;
  c.num_nextn_predict_layers = 1;
  return c;
}

// A fresh directory under the test temp dir, removed (recursively) by the destructor.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    std::string pattern = ::testing::TempDir() + "/" + prefix + ".XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << pattern << " failed";
    }
    path_ = std::filesystem::path(pattern).lexically_normal().string();
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes a version-1 shard of `count` tokens in [0, vocab): a noisy first-order chain, so there is
// something to learn quickly -- t_i = (5 * t_{i-1} + 3) mod vocab with probability 7/8, else a
// uniform token (SplitMix64 with `seed`). The best possible loss is about 0.6 nats per token.
inline absl::Status WriteSyntheticShard(const std::string& path, int64_t count, int64_t vocab,
                                        uint64_t seed) {
  ASSIGN_OR_RETURN(std::unique_ptr<TokenShardWriter> writer, TokenShardWriter::Create(path, 1));
  SplitMix64 rng(seed);
  std::vector<uint32_t> tokens(static_cast<size_t>(count));
  uint32_t prev = 0;
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t r = rng.Next();
    prev = (r % 8 == 0) ? static_cast<uint32_t>((r >> 8) % vocab)
                        : static_cast<uint32_t>((5 * prev + 3) % vocab);
    tokens[i] = prev;
  }
  RETURN_IF_ERROR(writer->Append(tokens));
  return writer->Finish();
}

}  // namespace dsv3::train::testing

#endif  // DSV3_ENGINE_TRAIN_TRAINER_TEST_UTIL_H_
