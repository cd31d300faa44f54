// RETURN_IF_ERROR and ASSIGN_OR_RETURN for absl::Status / absl::StatusOr (abseil 20220623 has
// neither). Header-only; no other helpers live here.
#ifndef DSV3_COMMON_STATUS_MACROS_H_
#define DSV3_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if it is not OK.
#define RETURN_IF_ERROR(expr)                                      \
  do {                                                             \
    ::absl::Status dsv3_status_ = (expr);                          \
    if (!dsv3_status_.ok()) return dsv3_status_;                   \
  } while (0)

#define DSV3_STATUS_CONCAT_INNER_(a, b) a##b
#define DSV3_STATUS_CONCAT_(a, b) DSV3_STATUS_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on error returns its status,
// otherwise moves the value into `lhs` (which may be a declaration: `ASSIGN_OR_RETURN(auto x, F());`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  DSV3_ASSIGN_OR_RETURN_IMPL_(DSV3_STATUS_CONCAT_(dsv3_statusor_, __LINE__), lhs, expr)

#define DSV3_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // DSV3_COMMON_STATUS_MACROS_H_
