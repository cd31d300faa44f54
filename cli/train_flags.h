// Flag parsing shared by dsv3-train's model verbs (eval, export): "--name=value", "--name value"
// and boolean "--name" / "--noname" / "--name=true|false", with unknown flags rejected. Only the
// syntax: each verb converts and checks the values itself. Not a general flags library.
#ifndef DSV3_CLI_TRAIN_FLAGS_H_
#define DSV3_CLI_TRAIN_FLAGS_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3::cli {

// Parses `args` (the arguments after the verb). `value_flags` take a value; `bool_flags` do not
// (a present boolean maps to "true", "--noNAME" to "false"; "--NAME=true|false|1|0" is accepted).
// "--help" and "-h" map "help" to "true". A repeated flag keeps its last value. Returns name ->
// value. Errors: INVALID_ARGUMENT naming the argument for a positional argument, an unknown
// flag, a value flag without a value, or a boolean with another value.
absl::StatusOr<std::map<std::string, std::string>> ParseVerbFlags(
    const std::vector<std::string>& args, const std::set<std::string>& value_flags,
    const std::set<std::string>& bool_flags);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_TRAIN_FLAGS_H_
