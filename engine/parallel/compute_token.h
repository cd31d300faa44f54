// Turn-taking between the two chunks of an overlapped forward&backward pair (spec §6.6; the
// pipeline executor's F&B op). Each chunk runs on its own thread, but only the thread holding the
// token computes: a thread that blocks in a communicator wait (StateWork::Wait: an expert
// all-to-all, a pipeline transfer) hands the token over for as long as it waits, so the other
// chunk computes while this one's communication is in flight. Between waits a thread runs alone,
// so the chunks never compute at the same time and need no other locking: the result does not
// depend on how they interleave. On CPU the communicators' own threads move the data; on GPU the
// same role is played by a second stream (not here).
#ifndef DSV3_ENGINE_PARALLEL_COMPUTE_TOKEN_H_
#define DSV3_ENGINE_PARALLEL_COMPUTE_TOKEN_H_

#include <chrono>

#include "absl/synchronization/mutex.h"

namespace dsv3::parallel {

class ComputeToken {
 public:
  void Acquire() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](bool* held) { return !*held; }, &held_));
    held_ = true;
    since_ = std::chrono::steady_clock::now();
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
    held_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count();
  }
  // Total time the token was held: the time a chunk computed.
  double held_seconds() {
    absl::MutexLock lock(&mu_);
    return held_seconds_;
  }

 private:
  absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point since_ ABSL_GUARDED_BY(mu_);
  double held_seconds_ ABSL_GUARDED_BY(mu_) = 0;
};

// The token the calling thread takes turns with (nullptr: none, the usual case).
inline ComputeToken*& CurrentComputeToken() {
  thread_local ComputeToken* token = nullptr;
  return token;
}

// Holds `token` on the calling thread for its lifetime (acquired in the constructor, which may
// block until the other chunk yields).
class ScopedComputeTurn {
 public:
  explicit ScopedComputeTurn(ComputeToken* token) : token_(token), outer_(CurrentComputeToken()) {
    token_->Acquire();
    CurrentComputeToken() = token_;
  }
  ~ScopedComputeTurn() {
    CurrentComputeToken() = outer_;
    token_->Release();
  }
  ScopedComputeTurn(const ScopedComputeTurn&) = delete;
  ScopedComputeTurn& operator=(const ScopedComputeTurn&) = delete;

 private:
  ComputeToken* token_;
  ComputeToken* outer_;
};

// Gives the calling thread's token (if any) to the other chunk for this scope: around a blocking
// wait for communication.
class ScopedComputeYield {
 public:
  ScopedComputeYield() : token_(CurrentComputeToken()) {
    if (token_ != nullptr) token_->Release();
  }
  ~ScopedComputeYield() {
    if (token_ != nullptr) token_->Acquire();
  }
  ScopedComputeYield(const ScopedComputeYield&) = delete;
  ScopedComputeYield& operator=(const ScopedComputeYield&) = delete;

 private:
  ComputeToken* token_;
};

}  // namespace dsv3::parallel

#endif  // DSV3_ENGINE_PARALLEL_COMPUTE_TOKEN_H_
