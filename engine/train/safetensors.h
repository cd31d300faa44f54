// Reading and writing safetensors files (the Hugging Face tensor file format): an 8-byte
// little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the data section) plus an
// optional "__metadata__" string-to-string map, then the data: little-endian, row-major,
// contiguous, no holes. The reader validates everything before handing out data and reads with
// pread (a file is never loaded whole); the writer writes atomically. No tensor math or dtype
// conversion beyond ReadAsFloat; no sharded-model index files (model.safetensors.index.json).
#ifndef DSV3_ENGINE_TRAIN_SAFETENSORS_H_
#define DSV3_ENGINE_TRAIN_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/train/checksum.h"
#include "engine/train/posix_file.h"

namespace dsv3::train {

// The element types of the safetensors format. BF16 and F16 hold uint16 bit patterns, the F8 types
// uint8 codes, BOOL one byte per element (0 or 1).
enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E4M3,
  kF8E5M2,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kI64,
  kU64,
  kF64,
};

// The format's name of `dtype`: "BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "I16", "U16", "F16",
// "BF16", "I32", "U32", "F32", "I64", "U64", "F64".
std::string_view DTypeName(DType dtype);
// The inverse of DTypeName; INVALID_ARGUMENT naming `name` and the known names when unknown.
absl::StatusOr<DType> DTypeFromName(std::string_view name);
// Bytes per element (1, 2, 4 or 8).
size_t DTypeSize(DType dtype);
// Every dtype, in enum order.
absl::Span<const DType> AllDTypes();

// The dtype a C++ element type is stored as, for the typed helpers below. uint16_t has none (it is
// the storage of F16, BF16 and U16 alike): use the byte-level calls with an explicit dtype.
// (Read<bool> does not compile, std::vector<bool> having no data(); read BOOL with ReadBytes.)
template <typename T>
struct DTypeOfT;
template <>
struct DTypeOfT<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOfT<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOfT<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOfT<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOfT<int16_t> {
  static constexpr DType value = DType::kI16;
};
template <>
struct DTypeOfT<int8_t> {
  static constexpr DType value = DType::kI8;
};
template <>
struct DTypeOfT<uint8_t> {
  static constexpr DType value = DType::kU8;
};
template <>
struct DTypeOfT<uint32_t> {
  static constexpr DType value = DType::kU32;
};
template <>
struct DTypeOfT<uint64_t> {
  static constexpr DType value = DType::kU64;
};
template <>
struct DTypeOfT<bool> {
  static constexpr DType value = DType::kBool;
};
template <typename T>
inline constexpr DType kDTypeOf = DTypeOfT<T>::value;

// "[2, 3]" ("[]" for a scalar).
std::string ShapeToString(absl::Span<const int64_t> shape);

// One tensor of a file, as its header describes it.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // outermost first; [] is a scalar (one element)
  uint64_t data_begin = 0;     // [data_begin, data_end) within the data section
  uint64_t data_end = 0;

  int64_t num_elements() const;
  uint64_t num_bytes() const { return data_end - data_begin; }
};

// The largest header the reader accepts (the limit of the reference implementation).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// An open, validated safetensors file. Every error message starts "safetensors <path>:" and names
// the tensor it concerns. Move-only; const methods are safe to call from several threads.
class SafetensorsReader {
 public:
  // Opens `path` and validates its header completely:
  //   NOT_FOUND / PERMISSION_DENIED / ...  the file cannot be opened (code from errno);
  //   DATA_LOSS  the file is shorter than 8 bytes; the header length runs past the end of the file
  //              or exceeds kMaxSafetensorsHeaderBytes; the header is not valid UTF-8 JSON, not an
  //              object, or repeats a key (a duplicate tensor name); "__metadata__" is not a map of
  //              strings; an entry lacks or mistypes dtype/shape/data_offsets or has another key;
  //              an unknown dtype; a negative or non-integer dimension or offset; begin > end; the
  //              byte range does not match dtype x shape; the ranges overlap, leave a gap, do not
  //              start at 0, or do not end exactly at the end of the file.
  static absl::StatusOr<SafetensorsReader> Open(const std::string& path);
  // The same for a file already open (the checkpoint loader checksums and parses one descriptor).
  static absl::StatusOr<SafetensorsReader> Open(ReadOnlyFile file);

  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  // The file offset of the data section (8 + header length).
  uint64_t data_offset() const { return data_offset_; }
  // The tensors in the order of their data.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  bool Contains(std::string_view name) const;
  // NOT_FOUND naming the tensor and the file when there is no tensor `name`.
  absl::StatusOr<const TensorInfo*> Find(std::string_view name) const;
  // Find, then checks that the tensor has `dtype` and `shape`: NOT_FOUND, or INVALID_ARGUMENT
  // naming the stored and the requested dtype and shape.
  absl::StatusOr<const TensorInfo*> Expect(std::string_view name, DType dtype,
                                           absl::Span<const int64_t> shape) const;

  // Reads tensor `name` into `dst` (`dst_bytes` bytes, which must equal the tensor's size) after
  // checking that it has `dtype` and `shape`. Errors: NOT_FOUND (no such tensor); INVALID_ARGUMENT
  // naming both the stored and the requested dtype and shape on a mismatch, or both sizes when
  // `dst_bytes` is wrong; DATA_LOSS when the file was truncated since it was opened; errno codes.
  absl::Status ReadInto(std::string_view name, DType dtype, absl::Span<const int64_t> shape,
                        void* dst, size_t dst_bytes) const;

  // Reads tensor `name`'s bytes after checking its dtype (any shape). Errors as ReadInto.
  absl::StatusOr<std::vector<uint8_t>> ReadBytes(std::string_view name, DType dtype) const;

  // Reads tensor `name` as T's dtype (kDTypeOf<T>) with `shape` checked. Errors as ReadInto.
  template <typename T>
  absl::StatusOr<std::vector<T>> Read(std::string_view name,
                                      absl::Span<const int64_t> shape) const {
    absl::StatusOr<const TensorInfo*> info = Expect(name, kDTypeOf<T>, shape);
    if (!info.ok()) return info.status();
    std::vector<T> out(static_cast<size_t>((*info)->num_elements()));
    absl::Status status = ReadInto(name, kDTypeOf<T>, shape, out.data(), out.size() * sizeof(T));
    if (!status.ok()) return status;
    return out;
  }

  // Reads a floating-point tensor (F32, F64, F16, BF16, F8_E4M3, F8_E5M2) converted exactly to
  // float (F64 is rounded to nearest; FP8 codes are decoded without any scale), with `shape`
  // checked. INVALID_ARGUMENT for an integer or BOOL tensor; otherwise errors as ReadInto.
  absl::StatusOr<std::vector<float>> ReadAsFloat(std::string_view name,
                                                 absl::Span<const int64_t> shape) const;

 private:
  SafetensorsReader(ReadOnlyFile file) : file_(std::move(file)) {}
  absl::Status Parse();
  absl::StatusOr<const TensorInfo*> Check(std::string_view name, DType dtype,
                                          absl::Span<const int64_t> shape, bool check_shape) const;
  absl::Status ReadTensor(const TensorInfo& info, void* dst) const;

  ReadOnlyFile file_;
  uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and metadata and writes them as one safetensors file. The data section holds
// the tensors sorted by element size, largest first (then in the order added), so every tensor
// starts at a multiple of its element size; the header lists them in that order after
// "__metadata__" and is padded with spaces to a multiple of 8 bytes. Not thread-safe.
class SafetensorsWriter {
 public:
  SafetensorsWriter() = default;
  SafetensorsWriter(SafetensorsWriter&&) = default;
  SafetensorsWriter& operator=(SafetensorsWriter&&) = default;

  // Adds a tensor whose `num_bytes` bytes at `data` are BORROWED: they must stay valid and
  // unchanged until the last WriteFile/Serialize call. `shape` is outermost first; `data` holds the
  // elements row-major, little-endian. INVALID_ARGUMENT naming the tensor for an empty name,
  // "__metadata__", a name already added, a negative dimension, or num_bytes != elements x size.
  absl::Status Add(std::string name, DType dtype, std::vector<int64_t> shape, const void* data,
                   size_t num_bytes);
  // As Add, but the writer keeps its own copy of the bytes.
  absl::Status AddCopy(std::string name, DType dtype, std::vector<int64_t> shape, const void* data,
                       size_t num_bytes);
  // Typed forms (borrowed / copied): the dtype is kDTypeOf<T>.
  template <typename T>
  absl::Status Add(std::string name, std::vector<int64_t> shape, absl::Span<const T> data) {
    return Add(std::move(name), kDTypeOf<T>, std::move(shape), data.data(),
               data.size() * sizeof(T));
  }
  template <typename T>
  absl::Status AddCopy(std::string name, std::vector<int64_t> shape, absl::Span<const T> data) {
    return AddCopy(std::move(name), kDTypeOf<T>, std::move(shape), data.data(),
                   data.size() * sizeof(T));
  }

  // Sets "__metadata__"[key] = value (replacing an earlier value).
  void SetMetadata(std::string key, std::string value);

  size_t num_tensors() const { return entries_.size(); }

  // Writes the file atomically (temporary file in the same directory, fsync, rename, fsync of the
  // directory) and returns its size and CRC32C, computed from the bytes written. Errors: the
  // errno's code naming the path (NOT_FOUND when the directory does not exist, RESOURCE_EXHAUSTED
  // when the disk is full); `path` is left as it was on any error.
  absl::StatusOr<FileDigest> WriteFile(const std::string& path) const;

  // The whole file's bytes in memory (for small files and tests).
  std::string Serialize() const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t num_bytes;
    std::shared_ptr<const std::string> owned;  // set by AddCopy
  };
  // The padded header (with its 8-byte length) and the entries in data order.
  std::string Header(std::vector<const Entry*>* order) const;
  absl::Status CheckNew(const std::string& name, const std::vector<int64_t>& shape, DType dtype,
                        size_t num_bytes) const;

  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_SAFETENSORS_H_
