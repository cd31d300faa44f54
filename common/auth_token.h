// Reading the shared bearer token that --auth_token_file names (the coordinator, workers and dsv3ctl
// all take one). The file holds the token; surrounding whitespace is ignored.
#ifndef DSV3_COMMON_AUTH_TOKEN_H_
#define DSV3_COMMON_AUTH_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"

namespace dsv3 {

// NOT_FOUND when the file cannot be read, INVALID_ARGUMENT when it holds no token or contains
// whitespace inside the token.
absl::StatusOr<std::string> ReadAuthTokenFile(const std::string& path);

}  // namespace dsv3

#endif  // DSV3_COMMON_AUTH_TOKEN_H_
