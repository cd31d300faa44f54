// Test-only: the shared PyTorch reference of kernels_ops_test. Each op's test file registers a
// builder that adds its cases (parameters and input arrays); the first test that asks for a
// reference runs every builder, writes all cases into one exchange directory and runs
// tests/reference/ops_ref.py ONCE on it (importing torch costs seconds). The finished directory
// stays under the test temp dir, named by a hash of all inputs and the script, so later runs and
// ctest's one-process-per-test runs reuse it without writing anything or starting Python. Not
// linked into any library.
//
// Layout: ROOT/<op>/<case>/params.txt ("key value" lines), <array>.npy inputs, and the script's
// outputs ref_<array>.npy beside them.
#ifndef DSV3_KERNELS_CPU_OPS_REFERENCE_H_
#define DSV3_KERNELS_CPU_OPS_REFERENCE_H_

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dsv3::kernels::testing {

class RefCaseSet;

// Adds one case's parameters and arrays to its set (kept in memory until the set is written).
// Array names and keys: letters, digits and '_'.
class RefCaseWriter {
 public:
  RefCaseWriter(RefCaseSet* set, std::string dir) : set_(set), dir_(std::move(dir)) {}
  RefCaseWriter& Param(const std::string& key, double value);
  RefCaseWriter& IntParam(const std::string& key, int64_t value);
  RefCaseWriter& Array(const std::string& name, const std::vector<int64_t>& shape,
                       const std::vector<float>& data);
  RefCaseWriter& Array(const std::string& name, const std::vector<int64_t>& shape,
                       const std::vector<int32_t>& data);

 private:
  RefCaseSet* set_;
  std::string dir_;  // "op/case"
};

// Where builders add cases; gives each op its own seeded generator. Holds everything in memory,
// so that a run whose inputs are already in the cache writes nothing.
class RefCaseSet {
 public:
  explicit RefCaseSet(uint64_t seed) : seed_(seed) {}
  // A new case `name` of `op`; aborts on a duplicate.
  RefCaseWriter Add(const std::string& op, const std::string& name);
  // A generator seeded from the run's seed (DSV3_TEST_SEED or a fixed default) and `op`.
  std::mt19937_64 Rng(const std::string& op) const;

  // A hash of every case's contents (in path order).
  uint64_t Hash() const;
  // Writes the cases under `root`. Returns "" or the error.
  std::string WriteTo(const std::string& root) const;

 private:
  friend class RefCaseWriter;
  struct Array {
    std::vector<int64_t> shape;
    bool is_int = false;
    std::vector<float> f32;    // when !is_int
    std::vector<int32_t> i32;  // when is_int
  };
  uint64_t seed_;
  std::map<std::string, std::string> params_;  // "op/case" -> params.txt contents
  std::map<std::string, Array> arrays_;        // "op/case/name.npy" -> array
};

using RefCaseBuilder = void (*)(RefCaseSet& set);

// Registers a builder; call from a namespace-scope initialiser (DSV3_REGISTER_REF_CASES).
bool RegisterRefCaseBuilder(RefCaseBuilder builder);
#define DSV3_REGISTER_REF_CASES(fn)                    \
  [[maybe_unused]] static const bool fn##_registered = \
      ::dsv3::kernels::testing::RegisterRefCaseBuilder(&fn)

// A finished case: its parameters, inputs and the reference outputs ("ref_" + name). Reading an
// array that is not there aborts (a bug in the test or the script).
class RefCase {
 public:
  RefCase(std::string op, std::string name, std::string dir);
  const std::string& name() const { return name_; }  // "op/case"
  double Param(const std::string& key) const;
  int64_t IntParam(const std::string& key) const;
  bool HasParam(const std::string& key) const { return params_.count(key) != 0; }
  std::vector<float> F32(const std::string& array) const;
  std::vector<double> F64(const std::string& array) const;  // float32 or float64 files
  std::vector<int32_t> I32(const std::string& array) const;
  std::vector<int64_t> Shape(const std::string& array) const;

 private:
  std::string name_;
  std::string dir_;
  std::map<std::string, std::string> params_;
};

// All cases of `op` in name order, with the reference run (once per process, cached on disk).
// On failure (script error, or no case of `op`) adds a gtest failure and returns no cases.
std::vector<RefCase> RefCases(const std::string& op);

// Success when a and b have the same size and identical bits; otherwise names the first
// difference.
::testing::AssertionResult SameBits(const std::string& what, const std::vector<float>& a,
                                    const std::vector<float>& b);

// Generates n values ~ N(0, stddev^2) / U[lo, hi) as float32.
std::vector<float> RandomNormal(std::mt19937_64& rng, int64_t n, double stddev = 1.0);
std::vector<float> RandomUniform(std::mt19937_64& rng, int64_t n, double lo, double hi);

}  // namespace dsv3::kernels::testing

#endif  // DSV3_KERNELS_CPU_OPS_REFERENCE_H_
