// StrCat for the checkpoint code: absl::StrCat that also takes std::string_view. Debian's abseil
// 20220623 has its own absl::string_view type, which std::string_view does not convert to. Nothing
// else lives here.
#ifndef DSV3_ENGINE_TRAIN_STR_CAT_H_
#define DSV3_ENGINE_TRAIN_STR_CAT_H_

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dsv3::train {
namespace str_cat_internal {

template <typename T>
decltype(auto) Piece(const T& value) {
  if constexpr (std::is_same_v<T, std::string_view>) {
    return absl::string_view(value.data(), value.size());
  } else {
    return (value);
  }
}

}  // namespace str_cat_internal

template <typename... Parts>
std::string StrCat(const Parts&... parts) {
  return absl::StrCat(str_cat_internal::Piece(parts)...);
}

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_STR_CAT_H_
