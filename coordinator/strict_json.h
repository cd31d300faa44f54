// Strict JSON to protobuf: parses JSON text into a message, rejecting unknown fields, wrong types,
// duplicate keys and malformed text with INVALID_ARGUMENT messages that name the field path
// ("unknown field \"model.hiden_size\" (did you mean \"hidden_size\"?)"). The protobuf JSON parser
// builds the message; a pre-scan with nlohmann::json against the message descriptor produces the
// readable errors. Knows nothing about job specs.
#ifndef DSV3_COORDINATOR_STRICT_JSON_H_
#define DSV3_COORDINATOR_STRICT_JSON_H_

#include <string_view>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace dsv3::coordinator {

// Parses `text` into `*message` (proto3 JSON mapping; original and lowerCamel field names
// accepted). `what` names the document in messages ("job spec"). INVALID_ARGUMENT on any problem.
absl::Status ParseProtoJsonStrictly(std::string_view text, std::string_view what,
                                    google::protobuf::Message* message);

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_STRICT_JSON_H_
