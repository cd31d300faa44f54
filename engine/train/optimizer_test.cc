// Tests of AdamW over the flat parameter set: weight decay only on decay tensors, the router bias
// untouched, global-norm clipping, agreement with a plain double-precision AdamW, and the
// checkpoint state's round trip and strict loading. No model forward or backward runs here.
#include "engine/train/optimizer.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "engine/model/parameters.h"
#include "engine/train/data_loader.h"
#include "engine/train/safetensors.h"
#include "engine/train/trainer_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/fp8.h"

namespace dsv3::train {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::HasSubstr;
using testing::ScratchDir;
using testing::TinyConfig;

model::ParameterSet MakeParams(uint64_t seed = 7) {
  model::ParameterSet params(model::ParameterLayout::Build(TinyConfig()));
  model::InitParameters(seed, 0.02, &params);
  // Non-zero router biases, so "untouched" is visible.
  for (const model::ParamInfo& p : params.layout.params()) {
    if (!p.trainable) {
      for (int64_t i = 0; i < p.size; ++i) params.values[p.offset + i] = 0.01f * (i + 1);
    }
  }
  return params;
}

void FillGrads(uint64_t seed, model::ParameterSet* params) {
  SplitMix64 rng(seed);
  for (float& g : params->grads) {
    g = static_cast<float>((static_cast<double>(rng.Next() >> 11) * 0x1.0p-53 - 0.5) * 0.2);
  }
}

AdamW MakeAdamW(const model::ParameterSet& params, AdamWConfig config) {
  absl::StatusOr<AdamW> adamw = AdamW::Create(params.layout, config);
  EXPECT_OK(adamw);
  return *std::move(adamw);
}

int64_t TrainableElements(const model::ParameterSet& params) {
  int64_t n = 0;
  for (const model::ParamInfo& p : params.layout.params()) n += p.trainable ? p.size : 0;
  return n;
}

TEST(AdamWTest, TheTinyLayoutHasDecayTensorsNormsAndARouterBias) {
  const model::ParameterSet params = MakeParams();
  int decay = 0, no_decay = 0, frozen = 0;
  for (const model::ParamInfo& p : params.layout.params()) {
    if (!p.trainable) {
      ++frozen;
      EXPECT_THAT(p.name, HasSubstr("e_score_correction_bias"));
    } else if (p.weight_decay) {
      ++decay;
    } else {
      ++no_decay;
    }
  }
  EXPECT_GT(decay, 0);
  EXPECT_GT(no_decay, 0);
  EXPECT_EQ(frozen, 2);  // layer 1 and the MTP layer
}

TEST(AdamWTest, WeightDecayShrinksOnlyDecayTensorsAndTheRouterBiasIsUntouched) {
  model::ParameterSet params = MakeParams();
  const std::vector<float> before = params.values;
  std::fill(params.grads.begin(), params.grads.end(), 0.0f);
  AdamWConfig config;
  config.weight_decay = 0.5;
  config.moments = MomentDType::kF32;
  AdamW adamw = MakeAdamW(params, config);
  const kernels::CpuContext ctx;
  ASSERT_OK(adamw.Step(ctx, /*lr=*/0.1, &params));
  // Zero gradients: m = v = 0, so the Adam term is 0 and only the decay moves a parameter.
  const float factor = static_cast<float>(1.0 - 0.1 * 0.5);
  for (const model::ParamInfo& p : params.layout.params()) {
    for (int64_t i = 0; i < p.size; ++i) {
      const float want =
          p.trainable && p.weight_decay ? before[p.offset + i] * factor : before[p.offset + i];
      ASSERT_EQ(params.values[p.offset + i], want) << p.name << " element " << i;
    }
  }
}

TEST(AdamWTest, TheRouterBiasGetsNoUpdateNoMomentsAndNoShareOfTheNorm) {
  model::ParameterSet params = MakeParams();
  std::fill(params.grads.begin(), params.grads.end(), 1.0f);
  for (const model::ParamInfo& p : params.layout.params()) {
    if (!p.trainable)
      std::fill(params.grads.begin() + p.offset, params.grads.begin() + p.offset + p.size, 1000.0f);
  }
  const std::vector<float> before = params.values;
  AdamWConfig config;
  config.grad_clip = 0;
  AdamW adamw = MakeAdamW(params, config);
  absl::StatusOr<OptimizerStepResult> r = adamw.Step(kernels::CpuContext{}, 0.01, &params);
  ASSERT_OK(r);
  EXPECT_DOUBLE_EQ(r->grad_norm, std::sqrt(static_cast<double>(TrainableElements(params))));
  for (const model::ParamInfo& p : params.layout.params()) {
    if (p.trainable) {
      EXPECT_NE(params.values[p.offset], before[p.offset]) << p.name;
      continue;
    }
    for (int64_t i = 0; i < p.size; ++i) {
      EXPECT_EQ(params.values[p.offset + i], before[p.offset + i]) << p.name;
    }
  }
}

TEST(AdamWTest, ClippingScalesTheGradientToTheMaxNormAndReportsThePreClipNorm) {
  model::ParameterSet params = MakeParams();
  std::fill(params.grads.begin(), params.grads.end(), 0.5f);
  const double norm = 0.5 * std::sqrt(static_cast<double>(TrainableElements(params)));
  AdamWConfig config;
  config.grad_clip = 1.0;
  config.moments = MomentDType::kF32;
  AdamW adamw = MakeAdamW(params, config);
  absl::StatusOr<OptimizerStepResult> r = adamw.Step(kernels::CpuContext{}, 0.01, &params);
  ASSERT_OK(r);
  EXPECT_NEAR(r->grad_norm, norm, 1e-9 * norm);
  const double scale = 1.0 / (norm + 1e-6);  // torch's clip_grad_norm_ factor
  EXPECT_NEAR(r->grad_scale, scale, 1e-12);
  // After step 1, m = (1 - beta1) * g * scale for every trainable element.
  for (const model::ParamInfo& p : params.layout.params()) {
    if (!p.trainable) continue;
    const std::vector<float> m = adamw.ExpAvg(p);
    for (int64_t i = 0; i < p.size; ++i) {
      ASSERT_NEAR(m[i], 0.1 * 0.5 * scale, 1e-6 * 0.1 * 0.5 * scale) << p.name << " " << i;
    }
  }
}

TEST(AdamWTest, AGradientBelowTheMaxNormIsNotScaled) {
  model::ParameterSet params = MakeParams();
  std::fill(params.grads.begin(), params.grads.end(), 1e-4f);
  AdamW adamw = MakeAdamW(params, AdamWConfig{});
  absl::StatusOr<OptimizerStepResult> r = adamw.Step(kernels::CpuContext{}, 0.01, &params);
  ASSERT_OK(r);
  EXPECT_LT(r->grad_norm, 1.0);
  EXPECT_EQ(r->grad_scale, 1.0);
  EXPECT_EQ(r->step, 1);
  EXPECT_EQ(adamw.step(), 1);
}

// Plain AdamW in double, tensor by tensor (torch.optim.AdamW's update), as the reference.
struct ReferenceAdamW {
  std::vector<double> p, m, v;
  void Step(const model::ParameterSet& params, const std::vector<float>& grads, double lr,
            double wd, double clip, int64_t t) {
    double ss = 0;
    for (const model::ParamInfo& info : params.layout.params()) {
      if (!info.trainable) continue;
      for (int64_t i = 0; i < info.size; ++i)
        ss += double(grads[info.offset + i]) * grads[info.offset + i];
    }
    const double norm = std::sqrt(ss);
    const double scale = clip > 0 ? std::min(1.0, clip / (norm + 1e-6)) : 1.0;
    for (const model::ParamInfo& info : params.layout.params()) {
      if (!info.trainable) continue;
      for (int64_t i = info.offset; i < info.offset + info.size; ++i) {
        const double g = grads[i] * scale;
        if (info.weight_decay) p[i] *= 1 - lr * wd;
        m[i] = 0.9 * m[i] + 0.1 * g;
        v[i] = 0.95 * v[i] + 0.05 * g * g;
        const double mhat = m[i] / (1 - std::pow(0.9, t));
        const double vhat = v[i] / (1 - std::pow(0.95, t));
        p[i] -= lr * mhat / (std::sqrt(vhat) + 1e-8);
      }
    }
  }
};

TEST(AdamWTest, ThreeStepsAgreeWithAPlainDoubleAdamW) {
  model::ParameterSet params = MakeParams();
  ReferenceAdamW ref;
  ref.p.assign(params.values.begin(), params.values.end());
  ref.m.assign(params.values.size(), 0.0);
  ref.v.assign(params.values.size(), 0.0);
  AdamWConfig config;
  config.moments = MomentDType::kF32;
  config.weight_decay = 0.1;
  config.grad_clip = 1.0;  // the random gradients have norm ~ 0.06 * sqrt(n) > 1: clipped
  AdamW adamw = MakeAdamW(params, config);
  kernels::ThreadPool pool(2);
  const kernels::CpuContext ctx{&pool};
  for (int t = 1; t <= 3; ++t) {
    FillGrads(100 + t, &params);
    const double lr = 0.01 * t;
    ref.Step(params, params.grads, lr, 0.1, 1.0, t);
    absl::StatusOr<OptimizerStepResult> r = adamw.Step(ctx, lr, &params);
    ASSERT_OK(r);
    EXPECT_LT(r->grad_scale, 1.0);
  }
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < params.values.size(); ++i) {
    const double err = std::abs(params.values[i] - ref.p[i]);
    if (err > worst) {
      worst = err;
      worst_i = i;
    }
  }
  EXPECT_LT(worst, 2e-6) << "worst element " << worst_i << " of " << params.values.size() << ": "
                         << params.values[worst_i] << " vs " << ref.p[worst_i];
}

TEST(AdamWTest, Bf16MomentsAreStoredRoundedToBf16) {
  model::ParameterSet params = MakeParams();
  FillGrads(5, &params);
  AdamW adamw = MakeAdamW(params, AdamWConfig{});  // BF16 by default
  ASSERT_OK(adamw.Step(kernels::CpuContext{}, 0.01, &params));
  for (const model::ParamInfo& p : params.layout.params()) {
    if (!p.trainable) continue;
    for (float x : adamw.ExpAvg(p)) {
      ASSERT_EQ(kernels::Bf16ToFloat(kernels::FloatToBf16(x)), x) << p.name;
    }
  }
}

TEST(AdamWTest, ANonFiniteGradientIsRefusedAndNothingChanges) {
  model::ParameterSet params = MakeParams();
  FillGrads(5, &params);
  params.grads[params.layout.params()[0].offset + 3] = NAN;
  const std::vector<float> before = params.values;
  AdamW adamw = MakeAdamW(params, AdamWConfig{});
  EXPECT_THAT(adamw.Step(kernels::CpuContext{}, 0.01, &params),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("diverged")));
  EXPECT_EQ(params.values, before);
  EXPECT_EQ(adamw.step(), 0);
}

TEST(AdamWTest, CreateRejectsBadHyperParameters) {
  const model::ParameterSet params = MakeParams();
  AdamWConfig c;
  c.beta1 = 1.0;
  EXPECT_THAT(AdamW::Create(params.layout, c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("beta1=1")));
  c = AdamWConfig{};
  c.grad_clip = -1;
  EXPECT_THAT(AdamW::Create(params.layout, c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("grad_clip=-1")));
}

// --- state save / load -----------------------------------------------------------------------

class AdamWStateTest : public ::testing::TestWithParam<MomentDType> {
 protected:
  // Two steps, then the state written to `path`.
  AdamW TrainedAndSaved(model::ParameterSet* params, const std::string& path) {
    AdamWConfig config;
    config.moments = GetParam();
    AdamW adamw = MakeAdamW(*params, config);
    for (int t = 1; t <= 2; ++t) {
      FillGrads(t, params);
      EXPECT_OK(adamw.Step(kernels::CpuContext{}, 0.01, params));
    }
    SafetensorsWriter writer;
    EXPECT_OK(adamw.AddTo(&writer));
    EXPECT_OK(writer.WriteFile(path));
    return adamw;
  }
  AdamW Fresh(const model::ParameterSet& params) {
    AdamWConfig config;
    config.moments = GetParam();
    return MakeAdamW(params, config);
  }
  ScratchDir dir_{"optimizer_state_test"};
};

TEST_P(AdamWStateTest, ARoundTripContinuesBitForBit) {
  model::ParameterSet a = MakeParams();
  const std::string path = dir_.Sub("optim.safetensors");
  AdamW saved = TrainedAndSaved(&a, path);
  model::ParameterSet b = a;  // same values
  AdamW loaded = Fresh(b);
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(path);
  ASSERT_OK(reader);
  ASSERT_OK(loaded.Load(*reader));
  EXPECT_EQ(loaded.step(), 2);
  EXPECT_EQ(reader->metadata().at("moment_dtype"), MomentDTypeName(GetParam()));
  // Every trainable tensor has both moments with its shape; the router bias has none.
  for (const model::ParamInfo& p : a.layout.params()) {
    EXPECT_EQ(reader->Contains(p.name + ".exp_avg"), p.trainable) << p.name;
    EXPECT_EQ(reader->Contains(p.name + ".exp_avg_sq"), p.trainable) << p.name;
  }
  FillGrads(3, &a);
  b.grads = a.grads;
  ASSERT_OK(saved.Step(kernels::CpuContext{}, 0.01, &a));
  ASSERT_OK(loaded.Step(kernels::CpuContext{}, 0.01, &b));
  ASSERT_EQ(a.values.size(), b.values.size());
  for (size_t i = 0; i < a.values.size(); ++i) {
    ASSERT_EQ(std::memcmp(&a.values[i], &b.values[i], sizeof(float)), 0) << "element " << i;
  }
}

// Rewrites the saved state with `edit` applied to a copy of its tensors and metadata.
absl::Status Rewrite(const std::string& from, const std::string& to,
                     const std::function<void(std::map<std::string, std::string>*,
                                              std::vector<TensorInfo>*)>& edit) {
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(from);
  if (!reader.ok()) return reader.status();
  std::map<std::string, std::string> metadata = reader->metadata();
  std::vector<TensorInfo> tensors = reader->tensors();
  edit(&metadata, &tensors);
  SafetensorsWriter writer;
  for (const TensorInfo& t : tensors) {
    // Bytes: the original tensor's when it exists with this dtype, else zeros.
    std::vector<uint8_t> bytes(static_cast<size_t>(t.num_elements()) * DTypeSize(t.dtype), 0);
    if (const absl::StatusOr<const TensorInfo*> orig = reader->Find(t.name);
        orig.ok() && (*orig)->dtype == t.dtype && (*orig)->shape == t.shape) {
      absl::StatusOr<std::vector<uint8_t>> b = reader->ReadBytes(t.name, t.dtype);
      if (!b.ok()) return b.status();
      bytes = *b;
    }
    absl::Status s = writer.AddCopy(t.name, t.dtype, t.shape, bytes.data(), bytes.size());
    if (!s.ok()) return s;
  }
  for (const auto& [k, v] : metadata) writer.SetMetadata(k, v);
  return writer.WriteFile(to).status();
}

TEST_P(AdamWStateTest, LoadIsStrictAndLeavesTheStateAsItWasOnError) {
  model::ParameterSet params = MakeParams();
  const std::string good = dir_.Sub("good.safetensors");
  TrainedAndSaved(&params, good);
  const std::string bad = dir_.Sub("bad.safetensors");
  const std::string some = params.layout.params()[0].name;  // model.embed_tokens.weight
  struct Case {
    std::string what;
    std::function<void(std::map<std::string, std::string>*, std::vector<TensorInfo>*)> edit;
    absl::StatusCode code;
    std::string message;
  };
  const DType other = GetParam() == MomentDType::kBf16 ? DType::kF32 : DType::kBF16;
  const std::vector<Case> cases = {
      {"a missing moment",
       [&](auto*, std::vector<TensorInfo>* t) {
         std::erase_if(*t, [&](const TensorInfo& x) { return x.name == some + ".exp_avg_sq"; });
       },
       absl::StatusCode::kDataLoss, "no tensor \"" + some + ".exp_avg_sq\""},
      {"an extra tensor",
       [&](auto*, std::vector<TensorInfo>* t) {
         TensorInfo x = t->front();
         x.name = "model.layers.1.mlp.gate.e_score_correction_bias.exp_avg";
         x.shape = {4};
         t->push_back(x);
       },
       absl::StatusCode::kDataLoss, "unexpected tensor"},
      {"a wrong shape",
       [&](auto*, std::vector<TensorInfo>* t) {
         for (TensorInfo& x : *t) {
           if (x.name == some + ".exp_avg") x.shape = {x.shape[0] * x.shape[1]};
         }
       },
       absl::StatusCode::kDataLoss, "expected"},
      {"another moment dtype in the metadata",
       [&](std::map<std::string, std::string>* m, std::vector<TensorInfo>* t) {
         (*m)["moment_dtype"] = std::string(DTypeName(other));
         for (TensorInfo& x : *t) x.dtype = other;
       },
       absl::StatusCode::kFailedPrecondition, "the precision changed"},
      {"a tensor of another dtype",
       [&](auto*, std::vector<TensorInfo>* t) {
         for (TensorInfo& x : *t) {
           if (x.name == some + ".exp_avg") x.dtype = other;
         }
       },
       absl::StatusCode::kDataLoss, "expected"},
      {"no format", [&](std::map<std::string, std::string>* m, auto*) { m->erase("format"); },
       absl::StatusCode::kDataLoss, "metadata format"},
      {"a bad step", [&](std::map<std::string, std::string>* m, auto*) { (*m)["step"] = "-3"; },
       absl::StatusCode::kDataLoss, "metadata step"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_OK(Rewrite(good, bad, c.edit));
    absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(bad);
    ASSERT_OK(reader);
    AdamW adamw = Fresh(params);
    ASSERT_OK(adamw.Step(kernels::CpuContext{}, 0.01, &params));  // some state to keep
    const std::vector<float> m_before = adamw.ExpAvg(params.layout.params()[0]);
    EXPECT_THAT(adamw.Load(*reader), StatusIs(c.code, HasSubstr(c.message)));
    EXPECT_EQ(adamw.step(), 1);
    EXPECT_EQ(adamw.ExpAvg(params.layout.params()[0]), m_before);
  }
}

INSTANTIATE_TEST_SUITE_P(Moments, AdamWStateTest,
                         ::testing::Values(MomentDType::kF32, MomentDType::kBf16),
                         [](const ::testing::TestParamInfo<MomentDType>& info) {
                           return MomentDTypeName(info.param);
                         });

}  // namespace
}  // namespace dsv3::train
