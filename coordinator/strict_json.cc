// Strict JSON to protobuf; see strict_json.h.
#include "coordinator/strict_json.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace dsv3::coordinator {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Parsing: a pre-scan of the JSON tree against the message descriptor.

std::string JoinPath(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : absl::StrFormat("%s.%s", parent, key);
}

// A short rendering of a JSON value for error messages.
std::string Describe(const json& value) {
  switch (value.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    default: {
      std::string text = value.dump();
      if (text.size() > 60) {
        text = absl::StrCat(text.substr(0, 57), "...");
      }
      return text;
    }
  }
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

const FieldDescriptor* FindField(const Descriptor& descriptor, std::string_view key) {
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const FieldDescriptor* field = descriptor.field(i);
    if (field->name() == key || field->json_name() == key) {
      return field;
    }
  }
  return nullptr;
}

absl::Status UnknownField(const Descriptor& descriptor, const std::string& path,
                          std::string_view key) {
  const FieldDescriptor* closest = nullptr;
  size_t best = 3;  // suggest only within two edits
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const size_t d = EditDistance(key, descriptor.field(i)->name());
    if (d < best) {
      best = d;
      closest = descriptor.field(i);
    }
  }
  std::string message = absl::StrFormat("unknown field \"%s\"", path);
  if (closest != nullptr) {
    absl::StrAppend(&message, " (did you mean \"", closest->name(), "\"?)");
  }
  return absl::InvalidArgumentError(message);
}

absl::Status WrongType(const std::string& path, std::string_view expected, const json& value) {
  return absl::InvalidArgumentError(
      absl::StrFormat("field \"%s\": expected %s, got %s", path, expected, Describe(value)));
}

bool IsIntegerJson(const json& value, bool is_unsigned) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned()) {
      return is_unsigned ||
             value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    }
    return !is_unsigned || value.get<int64_t>() >= 0;
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    return std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2e18 &&
           (!is_unsigned || d >= 0);
  }
  if (value.is_string()) {  // proto3 JSON writes 64-bit integers as strings: digits only
    const std::string& s = value.get_ref<const std::string&>();
    const size_t digits_from = (!is_unsigned && !s.empty() && s[0] == '-') ? 1 : 0;
    if (s.size() == digits_from) {
      return false;
    }
    for (size_t i = digits_from; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') {
        return false;
      }
    }
    if (is_unsigned) {
      uint64_t u;
      return absl::SimpleAtoi(s, &u);
    }
    int64_t i;
    return absl::SimpleAtoi(s, &i);
  }
  return false;
}

bool IsNumberJson(const json& value) {
  if (value.is_number()) {
    return true;
  }
  if (!value.is_string()) {
    return false;
  }
  const std::string& s = value.get_ref<const std::string&>();
  if (s == "NaN" || s == "Infinity" || s == "-Infinity") {
    return true;
  }
  double d;
  return absl::SimpleAtod(s, &d);
}

absl::Status CheckMessage(const json& object, const Descriptor& descriptor,
                          const std::string& path);

// Checks one (non-repeated) value against a field's type.
absl::Status CheckScalar(const json& value, const FieldDescriptor& field, const std::string& path) {
  if (value.is_null()) {
    return absl::OkStatus();  // proto3 JSON: null means "not set"
  }
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
      if (!IsIntegerJson(value, /*is_unsigned=*/false)) {
        return WrongType(path, "an integer", value);
      }
      if (field.cpp_type() == FieldDescriptor::CPPTYPE_INT32 && value.is_number_integer()) {
        const int64_t v = value.get<int64_t>();
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
          return WrongType(path, "a 32-bit integer", value);
        }
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      if (!IsIntegerJson(value, /*is_unsigned=*/true)) {
        return WrongType(path, "a non-negative integer", value);
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      if (!IsNumberJson(value)) {
        return WrongType(path, "a number", value);
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_BOOL:
      if (!value.is_boolean()) {
        return WrongType(path, "true or false", value);
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_STRING:
      if (!value.is_string()) {
        return WrongType(path, "a string", value);
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_ENUM:
      if (!value.is_string() && !value.is_number_integer()) {
        return WrongType(path, "an enum name", value);
      }
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (!value.is_object()) {
        return WrongType(path, "an object", value);
      }
      return CheckMessage(value, *field.message_type(), path);
  }
  return absl::OkStatus();
}

absl::Status CheckField(const json& value, const FieldDescriptor& field, const std::string& path) {
  if (value.is_null()) {
    return absl::OkStatus();
  }
  if (field.is_map()) {
    if (!value.is_object()) {
      return WrongType(path, "an object", value);
    }
    const FieldDescriptor& map_value = *field.message_type()->map_value();
    for (const auto& [key, item] : value.items()) {
      RETURN_IF_ERROR(CheckScalar(item, map_value, JoinPath(path, key)));
    }
    return absl::OkStatus();
  }
  if (field.is_repeated()) {
    if (!value.is_array()) {
      return WrongType(path, "an array", value);
    }
    for (size_t i = 0; i < value.size(); ++i) {
      RETURN_IF_ERROR(CheckScalar(value[i], field, absl::StrCat(path, "[", i, "]")));
    }
    return absl::OkStatus();
  }
  return CheckScalar(value, field, path);
}

absl::Status CheckMessage(const json& object, const Descriptor& descriptor,
                          const std::string& path) {
  std::vector<const FieldDescriptor*> seen;
  for (const auto& [key, value] : object.items()) {
    const std::string field_path = JoinPath(path, key);
    const FieldDescriptor* field = FindField(descriptor, key);
    if (field == nullptr) {
      return UnknownField(descriptor, field_path, key);
    }
    if (std::find(seen.begin(), seen.end(), field) != seen.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("field \"%s\" is given twice (as \"%s\" and \"%s\")",
                          JoinPath(path, field->name()), field->name(), field->json_name()));
    }
    seen.push_back(field);
    RETURN_IF_ERROR(CheckField(value, *field, field_path));
  }
  return absl::OkStatus();
}

// Finds the first key repeated within one JSON object while nlohmann parses (it would keep the
// last value silently). Paths name object keys only; JobSpec has no arrays of objects.
class DuplicateKeyFinder {
 public:
  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        frames_.push_back(Frame{});
        break;
      case json::parse_event_t::array_start:
        frames_.push_back(Frame{.is_array = true});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!frames_.empty()) {
          frames_.pop_back();
        }
        break;
      case json::parse_event_t::key: {
        if (frames_.empty() || frames_.back().is_array) {
          break;
        }
        Frame& frame = frames_.back();
        const std::string key = parsed.get<std::string>();
        if (duplicate_.empty() &&
            std::find(frame.keys.begin(), frame.keys.end(), key) != frame.keys.end()) {
          std::string path;
          for (size_t i = 0; i + 1 < frames_.size(); ++i) {
            if (!frames_[i].is_array) {
              path = JoinPath(path, frames_[i].current);
            }
          }
          duplicate_ = JoinPath(path, key);
        }
        frame.keys.push_back(key);
        frame.current = key;
        break;
      }
      case json::parse_event_t::value:
        break;
    }
    return true;
  }
  // The path of the first repeated key, or empty.
  const std::string& duplicate() const { return duplicate_; }

 private:
  struct Frame {
    bool is_array = false;
    std::vector<std::string> keys;
    std::string current;
  };
  std::vector<Frame> frames_;
  std::string duplicate_;
};

// nlohmann's what() reads "[json.exception.parse_error.101] parse error at line 3, column 7: ...".
std::string ParseErrorText(const json::parse_error& error) {
  std::string_view text = error.what();
  constexpr std::string_view kPrefix = "parse error ";
  const size_t at = text.find(kPrefix);
  if (at != std::string_view::npos) {
    text.remove_prefix(at + kPrefix.size());
  }
  return std::string(text);
}

}  // namespace

absl::Status ParseProtoJsonStrictly(std::string_view text, std::string_view what,
                                    google::protobuf::Message* message) {
  json tree;
  DuplicateKeyFinder duplicates;
  try {
    tree = json::parse(text.begin(), text.end(), std::ref(duplicates));
  } catch (const json::parse_error& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " is not valid JSON: ", ParseErrorText(error)));
  }
  if (!duplicates.duplicate().empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("field \"%s\" is given twice", duplicates.duplicate()));
  }
  if (!tree.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " must be a JSON object, got ", Describe(tree)));
  }
  RETURN_IF_ERROR(CheckMessage(tree, *message->GetDescriptor(), ""));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(std::string(text), message, options);
  if (!status.ok()) {
    // The pre-scan accepts what the protobuf parser does, so this is a gap in it: still say what.
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " JSON does not fit ",
                                                   message->GetDescriptor()->full_name(), ": ",
                                                   status.message().ToString()));
  }
  return absl::OkStatus();
}

}  // namespace dsv3::coordinator
