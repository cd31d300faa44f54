// PyTorch reference helpers; see torch_reference.h.
#include "kernels/testing/torch_reference.h"

#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#ifndef DSV3_TORCH_PYTHON
#define DSV3_TORCH_PYTHON "/usr/bin/python3"
#endif
#ifndef DSV3_SOURCE_ROOT
#define DSV3_SOURCE_ROOT "."
#endif

namespace dsv3::kernels::testing {
namespace {

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

std::string IndexString(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    const int64_t n = shape[d] > 0 ? shape[d] : 1;
    idx[d] = flat % n;
    flat /= n;
  }
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < idx.size(); ++i) out << (i ? ", " : "") << idx[i];
  out << "]";
  return out.str();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

}  // namespace

std::string MakeExchangeDir(const std::string& tag) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info != nullptr
                         ? std::string(info->test_suite_name()) + "." + info->name()
                         : std::string("no_test");
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / ("torchref_" + name);
  if (!tag.empty()) dir += "_" + tag;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

::testing::AssertionResult RunTorchReference(const std::string& script, const std::string& dir,
                                             const std::vector<std::string>& args) {
  std::string cmd = std::string(DSV3_TORCH_PYTHON) + " " +
                    Quote(std::string(DSV3_SOURCE_ROOT) + "/" + script) + " " + Quote(dir);
  for (const auto& a : args) cmd += " " + Quote(a);
  cmd += " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return ::testing::AssertionFailure() << "cannot run: " << cmd;
  std::string output;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) output.append(buf.data(), n);
  const int status = pclose(pipe);
  if (status != 0) {
    return ::testing::AssertionFailure()
           << "reference script failed (status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1)
           << "): " << cmd << "\n"
           << output;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult AllClose(const std::string& what, const float* got,
                                    const std::vector<double>& want,
                                    const std::vector<int64_t>& shape, double rtol, double atol) {
  int64_t failures = 0, worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    const double tol = atol + rtol * std::fabs(w);
    const double err = std::fabs(g - w);
    const bool bad = !(err <= tol) || std::isnan(g) != std::isnan(w);
    if (bad) {
      ++failures;
      const double excess = std::isnan(err) ? INFINITY : err - tol;
      if (worst < 0 || excess > worst_excess) {
        worst = static_cast<int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << failures << " of " << want.size() << " elements off (shape "
         << ShapeString(shape) << ", rtol " << rtol << ", atol " << atol << "); worst at "
         << IndexString(worst, shape) << ": got " << got[worst] << ", want " << want[worst];
}

::testing::AssertionResult RelativeErrorBelow(const std::string& what, const float* got,
                                              const std::vector<double>& want, double max_rel) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (rel <= max_rel) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": relative error " << rel << " exceeds " << max_rel;
}

}  // namespace dsv3::kernels::testing
