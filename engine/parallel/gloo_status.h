// The one conversion from Gloo's exceptions to absl::Status: DSV3_GLOO_CALL(statement) runs a
// statement that may throw and returns a Status (carrying file:line, the mapped code and Gloo's own
// message) from the enclosing function when it does. Only Gloo backend sources include this; no
// exception crosses it upwards.
#ifndef DSV3_ENGINE_PARALLEL_GLOO_STATUS_H_
#define DSV3_ENGINE_PARALLEL_GLOO_STATUS_H_

#include <exception>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "gloo/common/error.h"

namespace dsv3::parallel {

// Thrown by our side of Gloo's interfaces (the rendezvous store adapter) to carry a Status
// through Gloo's code unchanged.
class GlooStatusException : public ::gloo::IoException {
 public:
  explicit GlooStatusException(absl::Status status)
      : ::gloo::IoException(std::string(status.message())), status_(std::move(status)) {}
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

// GlooStatusException: its status. Gloo's timeouts ("Timed out ...") -> DEADLINE_EXCEEDED; other
// I/O errors (a closed or reset connection) -> UNAVAILABLE; anything else (a failed Gloo check)
// -> INTERNAL. The message is "gloo: <what> [file:line]".
absl::Status GlooExceptionToStatus(const std::exception& e, const char* file, int line);

}  // namespace dsv3::parallel

#define DSV3_GLOO_CALL(statement)                                                               \
  do {                                                                                          \
    try {                                                                                       \
      statement;                                                                                \
    } catch (const std::exception& dsv3_gloo_exception_) {                                      \
      return ::dsv3::parallel::GlooExceptionToStatus(dsv3_gloo_exception_, __FILE__, __LINE__); \
    }                                                                                           \
  } while (0)

#endif  // DSV3_ENGINE_PARALLEL_GLOO_STATUS_H_
