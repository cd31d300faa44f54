// Minimal NumPy .npy (format 1.0) reading and writing for float32, float64, int32, int64 and uint8
// arrays in C order, little-endian. Used by tests that exchange tensors with the PyTorch reference
// scripts and by tools that read or write token batches and logits. Not a general NPY library.
#ifndef DSV3_KERNELS_TESTING_NPY_H_
#define DSV3_KERNELS_TESTING_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace dsv3::kernels {

enum class NpyDtype { kFloat32, kFloat64, kInt32, kInt64, kUint8 };

struct NpyArray {
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<int64_t> shape;
  std::vector<char> data;  // raw little-endian elements, C order

  int64_t size() const;  // element count (1 for a 0-d array)
  // Element access after checking the dtype; aborts on a mismatch (a programmer error).
  std::vector<float> AsFloat32() const;
  std::vector<double> AsFloat64() const;  // converts float32 too
  std::vector<int32_t> AsInt32() const;
};

// Writes an array. Returns "" on success or a message naming the path and the problem.
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const float* data);
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const double* data);
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data);
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data);

// Reads an array. Returns "" on success or a message naming the path and the problem (missing file,
// bad magic, unsupported dtype or order, truncated data).
std::string ReadNpy(const std::string& path, NpyArray* out);

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_TESTING_NPY_H_
