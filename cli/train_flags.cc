// Flag syntax for dsv3-train's model verbs (train_flags.h).
#include "cli/train_flags.h"

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dsv3::cli {

absl::StatusOr<std::map<std::string, std::string>> ParseVerbFlags(
    const std::vector<std::string>& args, const std::set<std::string>& value_flags,
    const std::set<std::string>& bool_flags) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", args[i], "\""));
    }
    std::string name(arg);
    std::optional<std::string> value;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    }
    if ((name == "help" || name == "h") && !value) {
      out["help"] = "true";
    } else if (value_flags.count(name)) {
      if (!value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        }
        value = args[++i];
      }
      out[name] = *value;
    } else if (bool_flags.count(name)) {
      if (!value || *value == "true" || *value == "1") {
        out[name] = "true";
      } else if (*value == "false" || *value == "0") {
        out[name] = "false";
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs true or false, got \"", *value, "\""));
      }
    } else if (absl::StartsWith(name, "no") && bool_flags.count(name.substr(2)) && !value) {
      out[name.substr(2)] = "false";
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  return out;
}

}  // namespace dsv3::cli
