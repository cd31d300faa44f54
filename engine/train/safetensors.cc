// safetensors reader and writer; see safetensors.h.
#include "engine/train/safetensors.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_join.h"
#include "engine/train/str_cat.h"
#include "kernels/cpu/fp8.h"
#include "nlohmann/json.hpp"

namespace dsv3::train {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr std::array<DType, 15> kAllDTypes = {
    DType::kBool, DType::kU8,  DType::kI8,  DType::kF8E4M3, DType::kF8E5M2,
    DType::kI16,  DType::kU16, DType::kF16, DType::kBF16,   DType::kI32,
    DType::kU32,  DType::kF32, DType::kI64, DType::kU64,    DType::kF64,
};

constexpr std::string_view kMetadataKey = "__metadata__";

uint64_t LoadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Exact binary16 -> binary32 (NaN payloads kept).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // exact
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Tracks the keys of every open object while nlohmann parses, so a repeated key (which nlohmann
// would silently overwrite) is reported.
class DuplicateKeyDetector {
 public:
  bool operator()(int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        keys_.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys_.empty()) keys_.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys_.empty() && parsed.is_string() && duplicate_.empty()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!keys_.back().insert(key).second) {
            duplicate_ = depth <= 1 ? StrCat("tensor name '", key, "' appears twice")
                                    : StrCat("key '", key, "' appears twice in one entry");
          }
        }
        break;
      default:
        break;
    }
    return true;
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> keys_;
  std::string duplicate_;
};

// A JSON value as a non-negative integer below 2^63; false otherwise.
bool AsNonNegativeInt(const Json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return *out <= static_cast<uint64_t>(INT64_MAX);
  }
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

}  // namespace

// ---- dtypes and shapes -----------------------------------------------------------------------

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return "BOOL";
    case DType::kU8:
      return "U8";
    case DType::kI8:
      return "I8";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E5M2:
      return "F8_E5M2";
    case DType::kI16:
      return "I16";
    case DType::kU16:
      return "U16";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kU32:
      return "U32";
    case DType::kF32:
      return "F32";
    case DType::kI64:
      return "I64";
    case DType::kU64:
      return "U64";
    case DType::kF64:
      return "F64";
  }
  return "?";
}

absl::StatusOr<DType> DTypeFromName(std::string_view name) {
  for (DType d : kAllDTypes) {
    if (DTypeName(d) == name) return d;
  }
  std::vector<std::string> names;
  for (DType d : kAllDTypes) names.emplace_back(DTypeName(d));
  return absl::InvalidArgumentError(
      StrCat("unknown dtype '", name, "' (known: ", absl::StrJoin(names, ", "), ")"));
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBool:
    case DType::kU8:
    case DType::kI8:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return 1;
    case DType::kI16:
    case DType::kU16:
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI32:
    case DType::kU32:
    case DType::kF32:
      return 4;
    case DType::kI64:
    case DType::kU64:
    case DType::kF64:
      return 8;
  }
  return 0;
}

absl::Span<const DType> AllDTypes() { return kAllDTypes; }

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- SafetensorsReader -------------------------------------------------------------------------

absl::StatusOr<SafetensorsReader> SafetensorsReader::Open(const std::string& path) {
  absl::StatusOr<ReadOnlyFile> file = ReadOnlyFile::Open(path);
  if (!file.ok()) return file.status();
  return Open(*std::move(file));
}

absl::StatusOr<SafetensorsReader> SafetensorsReader::Open(ReadOnlyFile file) {
  SafetensorsReader reader(std::move(file));
  absl::Status status = reader.Parse();
  if (!status.ok()) return status;
  return reader;
}

absl::Status SafetensorsReader::Parse() {
  const std::string& path = file_.path();
  const uint64_t size = file_.size();
  auto corrupt = [&path](auto&&... parts) {
    return absl::DataLossError(StrCat("safetensors ", path, ": ", parts...));
  };
  if (size < 8) {
    return corrupt("the file has ", size, " bytes, fewer than the 8 of the header length");
  }
  unsigned char length_bytes[8];
  if (absl::Status s = file_.ReadAt(0, length_bytes, 8); !s.ok()) return s;
  const uint64_t header_length = LoadLe64(length_bytes);
  if (header_length > size - 8) {
    return corrupt("the header length ", header_length, " runs past the end of the file (", size,
                   " bytes, so at most ", size - 8, ")");
  }
  if (header_length > kMaxSafetensorsHeaderBytes) {
    return corrupt("the header length ", header_length, " exceeds the limit of ",
                   kMaxSafetensorsHeaderBytes, " bytes");
  }
  data_offset_ = 8 + header_length;
  const uint64_t data_size = size - data_offset_;

  std::string header(header_length, '\0');
  if (absl::Status s = file_.ReadAt(8, header.data(), header.size()); !s.ok()) return s;
  if (header.empty() || header[0] != '{') {
    return corrupt("the header does not start with '{'");
  }
  DuplicateKeyDetector detector;
  Json root;
  try {
    root = Json::parse(header, std::ref(detector));
  } catch (const Json::exception& e) {
    return corrupt("the header is not valid JSON: ", e.what());
  }
  if (!detector.duplicate().empty())
    return corrupt("the header is invalid: ", detector.duplicate());
  if (!root.is_object()) return corrupt("the header is not a JSON object");

  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const Json& entry = it.value();
    if (name == kMetadataKey) {
      if (!entry.is_object()) return corrupt("\"__metadata__\" is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return corrupt("\"__metadata__\" value of '", m.key(), "' is not a string");
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](auto&&... parts) { return corrupt("tensor '", name, "': ", parts...); };
    if (!entry.is_object()) return bad("the entry is not an object");
    for (auto f = entry.begin(); f != entry.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets") {
        return bad("unexpected key '", f.key(), "'");
      }
    }
    TensorInfo info;
    info.name = name;
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return bad("no string \"dtype\"");
    absl::StatusOr<DType> dtype = DTypeFromName(dtype_it->get_ref<const std::string&>());
    if (!dtype.ok()) return bad(dtype.status().message());
    info.dtype = *dtype;

    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) return bad("no array \"shape\"");
    uint64_t elements = 1;
    bool overflow = false;
    for (const Json& dim : *shape_it) {
      uint64_t d;
      if (!AsNonNegativeInt(dim, &d))
        return bad("\"shape\" is not a list of non-negative integers");
      info.shape.push_back(static_cast<int64_t>(d));
      overflow |= __builtin_mul_overflow(elements, d, &elements);
    }
    uint64_t expected_bytes = 0;
    overflow |= __builtin_mul_overflow(elements, DTypeSize(info.dtype), &expected_bytes);
    overflow |= elements > static_cast<uint64_t>(INT64_MAX);

    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !AsNonNegativeInt((*offsets_it)[0], &info.data_begin) ||
        !AsNonNegativeInt((*offsets_it)[1], &info.data_end)) {
      return bad("\"data_offsets\" is not a pair of non-negative integers");
    }
    if (info.data_begin > info.data_end) {
      return bad("data_offsets [", info.data_begin, ", ", info.data_end, ") end before they begin");
    }
    if (overflow || expected_bytes != info.num_bytes()) {
      return bad("data_offsets [", info.data_begin, ", ", info.data_end, ") hold ",
                 info.num_bytes(), " bytes but ", DTypeName(info.dtype), " ",
                 ShapeToString(info.shape), " needs ",
                 overflow ? std::string("more than 2^63") : StrCat(expected_bytes));
    }
    tensors_.push_back(std::move(info));
  }

  std::stable_sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.data_end < b.data_end;
  });
  uint64_t expected_begin = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors_) {
    if (t.data_begin != expected_begin) {
      const std::string range = StrCat("[", t.data_begin, ", ", t.data_end, ")");
      if (previous == nullptr) {
        return corrupt("tensor '", t.name,
                       "': the data does not start at offset 0 (the first "
                       "tensor's data_offsets are ",
                       range, ")");
      }
      const std::string prev = StrCat("tensor '", previous->name, "' [", previous->data_begin, ", ",
                                      previous->data_end, ")");
      if (t.data_begin < expected_begin) {
        return corrupt("tensor '", t.name, "': data_offsets ", range, " overlap ", prev);
      }
      return corrupt("tensor '", t.name, "': data_offsets ", range, " leave a gap after ", prev);
    }
    expected_begin = t.data_end;
    previous = &t;
  }
  if (expected_begin != data_size) {
    return corrupt("the tensors' data ends at offset ", expected_begin,
                   previous ? StrCat(" (tensor '", previous->name, "')") : std::string(),
                   " but the data section holds ", data_size, " bytes");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  return absl::OkStatus();
}

bool SafetensorsReader::Contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

absl::StatusOr<const TensorInfo*> SafetensorsReader::Find(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(StrCat("safetensors ", path(), ": no tensor '", name, "'"));
  }
  return &tensors_[it->second];
}

absl::StatusOr<const TensorInfo*> SafetensorsReader::Check(std::string_view name, DType dtype,
                                                           absl::Span<const int64_t> shape,
                                                           bool check_shape) const {
  absl::StatusOr<const TensorInfo*> info = Find(name);
  if (!info.ok()) return info.status();
  const TensorInfo& t = **info;
  const bool shape_ok = !check_shape || absl::Span<const int64_t>(t.shape) == shape;
  if (t.dtype != dtype || !shape_ok) {
    return absl::InvalidArgumentError(
        StrCat("safetensors ", path(), ": tensor '", name, "' is ", DTypeName(t.dtype), " ",
               ShapeToString(t.shape), ", requested ", DTypeName(dtype),
               check_shape ? StrCat(" ", ShapeToString(shape)) : std::string(" (any shape)")));
  }
  return *info;
}

absl::StatusOr<const TensorInfo*> SafetensorsReader::Expect(std::string_view name, DType dtype,
                                                            absl::Span<const int64_t> shape) const {
  return Check(name, dtype, shape, /*check_shape=*/true);
}

absl::Status SafetensorsReader::ReadTensor(const TensorInfo& info, void* dst) const {
  absl::Status status = file_.ReadAt(data_offset_ + info.data_begin, dst, info.num_bytes());
  if (!status.ok()) {
    return absl::Status(status.code(), StrCat("safetensors ", path(), ": tensor '", info.name,
                                              "': ", status.message()));
  }
  return absl::OkStatus();
}

absl::Status SafetensorsReader::ReadInto(std::string_view name, DType dtype,
                                         absl::Span<const int64_t> shape, void* dst,
                                         size_t dst_bytes) const {
  absl::StatusOr<const TensorInfo*> info = Check(name, dtype, shape, /*check_shape=*/true);
  if (!info.ok()) return info.status();
  if (dst_bytes != (*info)->num_bytes()) {
    return absl::InvalidArgumentError(StrCat("safetensors ", path(), ": tensor '", name, "' has ",
                                             (*info)->num_bytes(), " bytes, the destination ",
                                             dst_bytes));
  }
  return ReadTensor(**info, dst);
}

absl::StatusOr<std::vector<uint8_t>> SafetensorsReader::ReadBytes(std::string_view name,
                                                                  DType dtype) const {
  absl::StatusOr<const TensorInfo*> info = Check(name, dtype, {}, /*check_shape=*/false);
  if (!info.ok()) return info.status();
  std::vector<uint8_t> out((*info)->num_bytes());
  absl::Status status = ReadTensor(**info, out.data());
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<float>> SafetensorsReader::ReadAsFloat(
    std::string_view name, absl::Span<const int64_t> shape) const {
  absl::StatusOr<const TensorInfo*> found = Find(name);
  if (!found.ok()) return found.status();
  const DType dtype = (*found)->dtype;
  switch (dtype) {
    case DType::kF32:
    case DType::kF64:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      break;
    default:
      return absl::InvalidArgumentError(StrCat("safetensors ", path(), ": tensor '", name, "' is ",
                                               DTypeName(dtype), ", not a floating-point dtype"));
  }
  absl::StatusOr<const TensorInfo*> info = Check(name, dtype, shape, /*check_shape=*/true);
  if (!info.ok()) return info.status();
  const size_t n = static_cast<size_t>((*info)->num_elements());
  std::vector<float> out(n);
  if (dtype == DType::kF32) {
    if (absl::Status s = ReadTensor(**info, out.data()); !s.ok()) return s;
    return out;
  }
  std::vector<unsigned char> raw((*info)->num_bytes());
  if (absl::Status s = ReadTensor(**info, raw.data()); !s.ok()) return s;
  for (size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::kF64: {
        double v;
        std::memcpy(&v, &raw[8 * i], 8);
        out[i] = static_cast<float>(v);
        break;
      }
      case DType::kF16: {
        uint16_t v;
        std::memcpy(&v, &raw[2 * i], 2);
        out[i] = HalfToFloat(v);
        break;
      }
      case DType::kBF16: {
        uint16_t v;
        std::memcpy(&v, &raw[2 * i], 2);
        out[i] = kernels::Bf16ToFloat(v);
        break;
      }
      case DType::kF8E4M3:
        out[i] = kernels::E4M3ToFloat(raw[i]);
        break;
      case DType::kF8E5M2:
        out[i] = kernels::E5M2ToFloat(raw[i]);
        break;
      default:
        break;
    }
  }
  return out;
}

// ---- SafetensorsWriter -------------------------------------------------------------------------

absl::Status SafetensorsWriter::CheckNew(const std::string& name, const std::vector<int64_t>& shape,
                                         DType dtype, size_t num_bytes) const {
  auto bad = [&name](auto&&... parts) {
    return absl::InvalidArgumentError(StrCat("safetensors tensor '", name, "': ", parts...));
  };
  if (name.empty()) return bad("the name is empty");
  if (name == kMetadataKey) return bad("the name is reserved for metadata");
  for (const Entry& e : entries_) {
    if (e.name == name) return bad("a tensor of this name was already added");
  }
  uint64_t elements = 1;
  bool overflow = false;
  for (int64_t d : shape) {
    if (d < 0) return bad("negative dimension in shape ", ShapeToString(shape));
    overflow |= __builtin_mul_overflow(elements, static_cast<uint64_t>(d), &elements);
  }
  uint64_t bytes = 0;
  overflow |= __builtin_mul_overflow(elements, DTypeSize(dtype), &bytes);
  if (overflow || bytes != num_bytes) {
    return bad(DTypeName(dtype), " ", ShapeToString(shape), " needs ",
               overflow ? std::string("more than 2^64") : StrCat(bytes), " bytes, the data has ",
               num_bytes);
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Add(std::string name, DType dtype, std::vector<int64_t> shape,
                                    const void* data, size_t num_bytes) {
  if (absl::Status s = CheckNew(name, shape, dtype, num_bytes); !s.ok()) return s;
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), data, num_bytes, nullptr});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::AddCopy(std::string name, DType dtype, std::vector<int64_t> shape,
                                        const void* data, size_t num_bytes) {
  if (absl::Status s = CheckNew(name, shape, dtype, num_bytes); !s.ok()) return s;
  auto owned = std::make_shared<const std::string>(static_cast<const char*>(data), num_bytes);
  const void* bytes = owned->data();
  entries_.push_back(
      Entry{std::move(name), dtype, std::move(shape), bytes, num_bytes, std::move(owned)});
  return absl::OkStatus();
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::string SafetensorsWriter::Header(std::vector<const Entry*>* order) const {
  order->clear();
  for (const Entry& e : entries_) order->push_back(&e);
  std::stable_sort(order->begin(), order->end(), [](const Entry* a, const Entry* b) {
    return DTypeSize(a->dtype) > DTypeSize(b->dtype);
  });
  OrderedJson header = OrderedJson::object();
  if (!metadata_.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header[std::string(kMetadataKey)] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Entry* e : *order) {
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = DTypeName(e->dtype);
    entry["shape"] = e->shape;
    entry["data_offsets"] = {offset, offset + e->num_bytes};
    offset += e->num_bytes;
    header[e->name] = std::move(entry);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + json;
}

std::string SafetensorsWriter::Serialize() const {
  std::vector<const Entry*> order;
  std::string out = Header(&order);
  for (const Entry* e : order) out.append(static_cast<const char*>(e->data), e->num_bytes);
  return out;
}

absl::StatusOr<FileDigest> SafetensorsWriter::WriteFile(const std::string& path) const {
  std::vector<const Entry*> order;
  const std::string header = Header(&order);
  absl::StatusOr<AtomicFileWriter> file = AtomicFileWriter::Create(path);
  if (!file.ok()) return file.status();
  FileDigest digest;
  digest.crc32c = Crc32c(header);
  if (absl::Status s = file->Append(header); !s.ok()) return s;
  for (const Entry* e : order) {
    // Checksum and write in blocks, so each block is checksummed while it is still in cache.
    constexpr size_t kBlock = size_t{4} << 20;
    const auto* p = static_cast<const char*>(e->data);
    for (size_t done = 0; done < e->num_bytes; done += kBlock) {
      const size_t n = std::min(kBlock, e->num_bytes - done);
      digest.crc32c = Crc32cExtend(digest.crc32c, p + done, n);
      if (absl::Status s = file->Append(p + done, n); !s.ok()) return s;
    }
  }
  digest.size = file->bytes_written();
  if (absl::Status s = file->Commit(); !s.ok()) return s;
  return digest;
}

}  // namespace dsv3::train
