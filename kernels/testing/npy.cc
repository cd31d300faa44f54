// NPY 1.0 reading and writing; see npy.h.
#include "kernels/testing/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace dsv3::kernels {
namespace {

struct DtypeInfo {
  NpyDtype dtype;
  const char* descr;
  size_t bytes;
};

constexpr DtypeInfo kDtypes[] = {
    {NpyDtype::kFloat32, "<f4", 4}, {NpyDtype::kFloat64, "<f8", 8}, {NpyDtype::kInt32, "<i4", 4},
    {NpyDtype::kInt64, "<i8", 8},   {NpyDtype::kUint8, "|u1", 1},
};

const DtypeInfo& Info(NpyDtype d) {
  for (const auto& i : kDtypes) {
    if (i.dtype == d) return i;
  }
  std::abort();
}

int64_t Count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Write(const std::string& path, const std::vector<int64_t>& shape, NpyDtype dtype,
                  const void* data) {
  std::ostringstream dict;
  dict << "{'descr': '" << Info(dtype).descr << "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) dict << shape[i] << (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  dict << "), }";
  std::string header = dict.str();
  // Pad with spaces so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return "cannot write " + path;
  const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data),
            static_cast<std::streamsize>(Count(shape) * Info(dtype).bytes));
  return out.good() ? "" : "write failed for " + path;
}

}  // namespace

int64_t NpyArray::size() const { return Count(shape); }

std::vector<float> NpyArray::AsFloat32() const {
  if (dtype != NpyDtype::kFloat32) {
    std::fprintf(stderr, "NpyArray::AsFloat32 on another dtype\n");
    std::abort();
  }
  std::vector<float> v(size());
  std::memcpy(v.data(), data.data(), v.size() * sizeof(float));
  return v;
}

std::vector<double> NpyArray::AsFloat64() const {
  std::vector<double> v(size());
  if (dtype == NpyDtype::kFloat64) {
    std::memcpy(v.data(), data.data(), v.size() * sizeof(double));
  } else {
    const std::vector<float> f = AsFloat32();
    for (size_t i = 0; i < f.size(); ++i) v[i] = f[i];
  }
  return v;
}

std::vector<int32_t> NpyArray::AsInt32() const {
  if (dtype != NpyDtype::kInt32) {
    std::fprintf(stderr, "NpyArray::AsInt32 on another dtype\n");
    std::abort();
  }
  std::vector<int32_t> v(size());
  std::memcpy(v.data(), data.data(), v.size() * sizeof(int32_t));
  return v;
}

std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  return Write(path, shape, NpyDtype::kFloat32, data);
}
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const double* data) {
  return Write(path, shape, NpyDtype::kFloat64, data);
}
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                     const int32_t* data) {
  return Write(path, shape, NpyDtype::kInt32, data);
}
std::string WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                     const int64_t* data) {
  return Write(path, shape, NpyDtype::kInt64, data);
}

std::string ReadNpy(const std::string& path, NpyArray* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot read " + path;
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    return path + " is not an .npy file";
  }
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) return path + ": truncated header";
    header_len = b[0] | (b[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) return path + ": truncated header";
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    return path + ": unsupported .npy version " + std::to_string(magic[6]);
  }
  if (header_len > (1u << 20)) return path + ": header too large";
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) return path + ": truncated header";
  if (header.find("'fortran_order': False") == std::string::npos) {
    return path + ": only C-order arrays are supported";
  }
  const DtypeInfo* info = nullptr;
  for (const auto& i : kDtypes) {
    if (header.find(std::string("'descr': '") + i.descr + "'") != std::string::npos) info = &i;
  }
  if (info == nullptr) return path + ": unsupported dtype in header " + header;
  const size_t open = header.find("'shape': (");
  const size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) return path + ": no shape";
  std::vector<int64_t> shape;
  std::string dims = header.substr(open + 10, close - open - 10);
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    try {
      shape.push_back(std::stoll(item));
    } catch (...) {
      return path + ": bad shape '" + dims + "'";
    }
    if (shape.back() < 0) return path + ": negative dimension";
  }
  out->dtype = info->dtype;
  out->shape = shape;
  out->data.assign(static_cast<size_t>(Count(shape)) * info->bytes, '\0');
  if (!in.read(out->data.data(), static_cast<std::streamsize>(out->data.size()))) {
    return path + ": truncated data (expected " + std::to_string(out->data.size()) + " bytes)";
  }
  return "";
}

}  // namespace dsv3::kernels
