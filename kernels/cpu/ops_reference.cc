// The shared reference runner of kernels_ops_test; see ops_reference.h.

#include "kernels/cpu/ops_reference.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "kernels/testing/npy.h"
#include "kernels/testing/torch_reference.h"

#ifndef DSV3_SOURCE_ROOT
#define DSV3_SOURCE_ROOT "."
#endif

namespace dsv3::kernels::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kScript[] = "tests/reference/ops_ref.py";
constexpr uint64_t kDefaultSeed = 20250301;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ops_reference: %s\n", message.c_str());
  std::abort();
}

std::vector<RefCaseBuilder>& Builders() {
  static auto* builders = new std::vector<RefCaseBuilder>();
  return *builders;
}

uint64_t Fnv1a(uint64_t h, const char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t HashString(uint64_t h, const std::string& s) {
  h = Fnv1a(h, s.data(), s.size());
  return Fnv1a(h, "\0", 1);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

uint64_t HashBytes(uint64_t h, const void* data, size_t n) {
  h = Fnv1a(h, static_cast<const char*>(data), n);
  return Fnv1a(h, "\0", 1);
}

uint64_t RunSeed() {
  if (const char* env = std::getenv("DSV3_TEST_SEED")) return std::strtoull(env, nullptr, 0);
  return kDefaultSeed;
}

struct RootState {
  std::string root;   // "" on failure
  std::string error;  // why it failed
};

RootState BuildAndRun() {
  RootState state;
  const uint64_t seed = RunSeed();
  std::printf("[   SEED   ] ops reference cases seed=%llu (set DSV3_TEST_SEED to change)\n",
              static_cast<unsigned long long>(seed));
  const fs::path tmp = ::testing::TempDir();
  RefCaseSet set(seed);
  for (RefCaseBuilder b : Builders()) b(set);
  const uint64_t hash = HashString(set.Hash(), ReadFile(fs::path(DSV3_SOURCE_ROOT) / kScript));
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  const fs::path final_dir = tmp / (std::string("dsv3_ops_ref_") + hex);
  if (fs::exists(final_dir / "DONE")) {  // The usual case: nothing to write.
    state.root = final_dir.string();
    return state;
  }
  // Parallel ctest processes wait here for the first one's result instead of all running Python.
  const int lock_fd = open((tmp / "dsv3_ops_ref.lock").c_str(), O_CREAT | O_RDWR, 0644);
  if (lock_fd >= 0) flock(lock_fd, LOCK_EX);
  struct Unlock {
    int fd;
    ~Unlock() {
      if (fd >= 0) close(fd);  // Releases the lock.
    }
  } unlock{lock_fd};
  if (fs::exists(final_dir / "DONE")) {
    state.root = final_dir.string();
    return state;
  }
  const fs::path stage = tmp / ("dsv3_ops_ref_stage_" + std::to_string(getpid()));
  fs::remove_all(stage);
  fs::create_directories(stage);
  if (std::string err = set.WriteTo(stage.string()); !err.empty()) {
    state.error = err;
    return state;
  }
  ::testing::AssertionResult r = RunTorchReference(kScript, stage.string());
  if (!r) {
    state.error = r.message();
    return state;
  }
  std::ofstream(stage / "DONE") << "ok\n";
  std::error_code ec;
  fs::rename(stage, final_dir, ec);  // Atomic: final_dir only ever appears complete.
  if (ec) {                          // Another process finished first; use its result.
    fs::remove_all(stage);
    if (!fs::exists(final_dir / "DONE")) {
      state.error = "cannot move " + stage.string() + " to " + final_dir.string();
      return state;
    }
  }
  state.root = final_dir.string();
  return state;
}

const RootState& Root() {
  static const RootState* state = new RootState(BuildAndRun());
  return *state;
}

}  // namespace

RefCaseWriter& RefCaseWriter::Param(const std::string& key, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", value);
  set_->params_[dir_] += key + " " + buf + "\n";
  return *this;
}

RefCaseWriter& RefCaseWriter::IntParam(const std::string& key, int64_t value) {
  set_->params_[dir_] += key + " " + std::to_string(value) + "\n";
  return *this;
}

RefCaseWriter& RefCaseWriter::Array(const std::string& name, const std::vector<int64_t>& shape,
                                    const std::vector<float>& data) {
  RefCaseSet::Array& a = set_->arrays_[dir_ + "/" + name + ".npy"];
  a.shape = shape;
  a.f32 = data;
  return *this;
}

RefCaseWriter& RefCaseWriter::Array(const std::string& name, const std::vector<int64_t>& shape,
                                    const std::vector<int32_t>& data) {
  RefCaseSet::Array& a = set_->arrays_[dir_ + "/" + name + ".npy"];
  a.shape = shape;
  a.is_int = true;
  a.i32 = data;
  return *this;
}

RefCaseWriter RefCaseSet::Add(const std::string& op, const std::string& name) {
  const std::string dir = op + "/" + name;
  if (params_.count(dir)) Die("duplicate case " + dir);
  params_[dir] = "";
  return RefCaseWriter(this, dir);
}

std::mt19937_64 RefCaseSet::Rng(const std::string& op) const {
  return std::mt19937_64(HashString(seed_, op));
}

uint64_t RefCaseSet::Hash() const {
  uint64_t h = 14695981039346656037ull;
  for (const auto& [dir, text] : params_) {
    h = HashString(h, dir);
    h = HashString(h, text);
  }
  for (const auto& [path, a] : arrays_) {
    h = HashString(h, path);
    h = HashBytes(h, &a.is_int, 1);
    h = HashBytes(h, a.shape.data(), a.shape.size() * sizeof(int64_t));
    h = HashBytes(h, a.f32.data(), a.f32.size() * sizeof(float));
    h = HashBytes(h, a.i32.data(), a.i32.size() * sizeof(int32_t));
  }
  return h;
}

std::string RefCaseSet::WriteTo(const std::string& root) const {
  for (const auto& [dir, text] : params_) {
    fs::create_directories(fs::path(root) / dir);
    std::ofstream out(fs::path(root) / dir / "params.txt");
    out << text;
    if (!out) return "cannot write " + (fs::path(root) / dir / "params.txt").string();
  }
  for (const auto& [path, a] : arrays_) {
    const std::string full = (fs::path(root) / path).string();
    const std::string err =
        a.is_int ? WriteNpy(full, a.shape, a.i32.data()) : WriteNpy(full, a.shape, a.f32.data());
    if (!err.empty()) return err;
  }
  return "";
}

bool RegisterRefCaseBuilder(RefCaseBuilder builder) {
  Builders().push_back(builder);
  return true;
}

RefCase::RefCase(std::string op, std::string name, std::string dir)
    : name_(op + "/" + name), dir_(std::move(dir)) {
  std::ifstream in(fs::path(dir_) / "params.txt");
  std::string key, value;
  while (in >> key >> value) params_[key] = value;
}

double RefCase::Param(const std::string& key) const {
  auto it = params_.find(key);
  if (it == params_.end()) Die(name_ + ": no parameter " + key);
  return std::strtod(it->second.c_str(), nullptr);
}

int64_t RefCase::IntParam(const std::string& key) const {
  auto it = params_.find(key);
  if (it == params_.end()) Die(name_ + ": no parameter " + key);
  return std::strtoll(it->second.c_str(), nullptr, 10);
}

namespace {
NpyArray Load(const std::string& dir, const std::string& case_name, const std::string& array) {
  NpyArray a;
  const std::string err = ReadNpy(dir + "/" + array + ".npy", &a);
  if (!err.empty()) Die(case_name + ": " + err);
  return a;
}
}  // namespace

std::vector<float> RefCase::F32(const std::string& array) const {
  return Load(dir_, name_, array).AsFloat32();
}

std::vector<double> RefCase::F64(const std::string& array) const {
  return Load(dir_, name_, array).AsFloat64();
}

std::vector<int32_t> RefCase::I32(const std::string& array) const {
  return Load(dir_, name_, array).AsInt32();
}

std::vector<int64_t> RefCase::Shape(const std::string& array) const {
  return Load(dir_, name_, array).shape;
}

std::vector<RefCase> RefCases(const std::string& op) {
  const RootState& root = Root();
  std::vector<RefCase> cases;
  if (root.root.empty()) {
    ADD_FAILURE() << "the PyTorch reference did not run: " << root.error;
    return cases;
  }
  std::vector<std::string> names;
  const fs::path dir = fs::path(root.root) / op;
  if (fs::is_directory(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_directory()) names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) cases.emplace_back(op, n, (dir / n).string());
  if (cases.empty()) ADD_FAILURE() << "no reference cases for op " << op;
  return cases;
}

::testing::AssertionResult SameBits(const std::string& what, const std::vector<float>& a,
                                    const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure()
           << what << ": sizes differ, " << a.size() << " vs " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure()
             << what << ": first difference at element " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<float> RandomNormal(std::mt19937_64& rng, int64_t n, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(rng));
  return v;
}

std::vector<float> RandomUniform(std::mt19937_64& rng, int64_t n, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(rng));
  return v;
}

}  // namespace dsv3::kernels::testing
