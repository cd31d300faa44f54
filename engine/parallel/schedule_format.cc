// Appendix A's schedule notation (schedule_format.h): printing ops and schedules, and parsing them
// back (for hand-written schedules in tests and tools). No schedule logic here.
#include "engine/parallel/schedule_format.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace dsv3::parallel {
namespace {

std::string ChunkText(absl::string_view prefix, const Chunk& c) {
  return absl::StrCat(prefix, std::string(1, DirectionLetter(c.direction)), c.micro_batch);
}

std::string P2PText(const P2P& p) {
  return absl::StrCat(p.send ? "s" : "r", p.payload == Payload::kActivation ? "F" : "B",
                      std::string(1, DirectionLetter(p.direction)), p.micro_batch, ">", p.peer);
}

absl::Status Bad(absl::string_view token, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("bad op \"", token, "\": ", why));
}

// Parses "<a|b><digits>" (all of `text`).
absl::Status ParseDirMb(absl::string_view text, absl::string_view token, Direction* d, int* mb) {
  if (text.size() < 2 || (text[0] != 'a' && text[0] != 'b')) {
    return Bad(token, "expected a direction a|b and a micro-batch number");
  }
  *d = text[0] == 'a' ? Direction::kA : Direction::kB;
  if (!absl::SimpleAtoi(text.substr(1), mb) || *mb < 0 || !std::isdigit(text[1])) {
    return Bad(token, "expected a micro-batch number");
  }
  return absl::OkStatus();
}

absl::StatusOr<Chunk> ParseChunk(absl::string_view text, absl::string_view prefix,
                                 absl::string_view token, const PipelineLayout& layout, int rank) {
  if (!absl::ConsumePrefix(&text, prefix)) return Bad(token, absl::StrCat("expected ", prefix));
  Chunk c;
  RETURN_IF_ERROR(ParseDirMb(text, token, &c.direction, &c.micro_batch));
  c.stage = layout.StageOf(rank, c.direction);
  if (c.stage < 0) {
    return Bad(token, absl::StrCat("rank ", rank, " holds no stage of direction ",
                                   std::string(1, DirectionLetter(c.direction))));
  }
  return c;
}

absl::StatusOr<P2P> ParseP2P(absl::string_view text, absl::string_view token) {
  P2P p;
  if (text.size() < 2) return Bad(token, "empty comm element");
  if (text[0] != 's' && text[0] != 'r') return Bad(token, "comm element must start with s or r");
  if (text[1] != 'F' && text[1] != 'B') return Bad(token, "comm payload must be F or B");
  p.send = text[0] == 's';
  p.payload = text[1] == 'F' ? Payload::kActivation : Payload::kGradient;
  const std::vector<absl::string_view> parts = absl::StrSplit(text.substr(2), '>');
  if (parts.size() != 2) return Bad(token, "comm element needs exactly one >peer");
  RETURN_IF_ERROR(ParseDirMb(parts[0], token, &p.direction, &p.micro_batch));
  if (!absl::SimpleAtoi(parts[1], &p.peer) || p.peer < 0) return Bad(token, "bad peer rank");
  return p;
}

absl::StatusOr<Op> ParseOp(absl::string_view token, const PipelineLayout& layout, int rank) {
  if (absl::StartsWith(token, "{")) {
    if (!absl::EndsWith(token, "}") || token.size() < 3) return Bad(token, "unclosed comm batch");
    std::vector<P2P> elements;
    for (absl::string_view e : absl::StrSplit(token.substr(1, token.size() - 2), ',')) {
      ASSIGN_OR_RETURN(P2P p, ParseP2P(e, token));
      elements.push_back(p);
    }
    return Op::CommBatch(std::move(elements));
  }
  if (const size_t amp = token.find('&'); amp != absl::string_view::npos) {
    ASSIGN_OR_RETURN(Chunk f, ParseChunk(token.substr(0, amp), "F", token, layout, rank));
    ASSIGN_OR_RETURN(Chunk b, ParseChunk(token.substr(amp + 1), "B", token, layout, rank));
    return Op::ForwardBackward(f, b);
  }
  if (absl::StartsWith(token, "Bi")) {
    ASSIGN_OR_RETURN(Chunk c, ParseChunk(token, "Bi", token, layout, rank));
    return Op::BackwardInput(c);
  }
  if (absl::StartsWith(token, "B")) {
    ASSIGN_OR_RETURN(Chunk c, ParseChunk(token, "B", token, layout, rank));
    return Op::Backward(c);
  }
  if (absl::StartsWith(token, "F")) {
    ASSIGN_OR_RETURN(Chunk c, ParseChunk(token, "F", token, layout, rank));
    return Op::Forward(c);
  }
  if (absl::StartsWith(token, "W")) {
    ASSIGN_OR_RETURN(Chunk c, ParseChunk(token, "W", token, layout, rank));
    return Op::Weight(c);
  }
  return Bad(token, "expected F, B, Bi, W, F&B or {...}");
}

}  // namespace

std::string FormatOp(const Op& op) {
  switch (op.kind) {
    case OpKind::kForward:
      return ChunkText("F", op.chunk);
    case OpKind::kBackward:
      return ChunkText("B", op.chunk);
    case OpKind::kBackwardInput:
      return ChunkText("Bi", op.chunk);
    case OpKind::kWeight:
      return ChunkText("W", op.chunk);
    case OpKind::kForwardBackward:
      return absl::StrCat(ChunkText("F", op.chunk), "&", ChunkText("B", op.backward));
    case OpKind::kCommBatch:
      return absl::StrCat(
          "{",
          absl::StrJoin(op.comm, ",",
                        [](std::string* out, const P2P& p) { absl::StrAppend(out, P2PText(p)); }),
          "}");
  }
  return "?";
}

std::string FormatOps(const std::vector<Op>& ops, const FormatOptions& options) {
  std::string out;
  for (const Op& op : ops) {
    if (!options.comm && !op.is_compute()) continue;
    if (!out.empty()) out += ' ';
    out += FormatOp(op);
  }
  return out;
}

std::string FormatSchedule(const Schedule& schedule, const FormatOptions& options) {
  std::string out;
  for (int r = 0; r < static_cast<int>(schedule.ops.size()); ++r) {
    absl::StrAppend(&out, "rank ", r, " : ", FormatOps(schedule.ops[r], options), "\n");
  }
  return out;
}

absl::StatusOr<std::vector<Op>> ParseOps(absl::string_view text, const PipelineLayout& layout,
                                         int rank) {
  std::vector<Op> ops;
  for (absl::string_view token : absl::StrSplit(text, ' ', absl::SkipWhitespace())) {
    ASSIGN_OR_RETURN(Op op, ParseOp(absl::StripAsciiWhitespace(token), layout, rank));
    ops.push_back(std::move(op));
  }
  return ops;
}

absl::StatusOr<std::vector<std::vector<Op>>> ParseScheduleText(absl::string_view text,
                                                               const PipelineLayout& layout) {
  std::vector<std::vector<Op>> ops(layout.num_ranks);
  std::vector<bool> seen(layout.num_ranks, false);
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    const size_t colon = line.find(':');
    absl::string_view head = line.substr(0, colon);
    int rank = -1;
    if (colon == absl::string_view::npos || !absl::ConsumePrefix(&head, "rank ") ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(head), &rank)) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected \"rank R : OPS\", got \"", line, "\""));
    }
    if (rank < 0 || rank >= layout.num_ranks || seen[rank]) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank, " is out of range or listed twice"));
    }
    seen[rank] = true;
    ASSIGN_OR_RETURN(ops[rank], ParseOps(line.substr(colon + 1), layout, rank));
  }
  for (int r = 0; r < layout.num_ranks; ++r) {
    if (!seen[r]) return absl::InvalidArgumentError(absl::StrCat("rank ", r, " is missing"));
  }
  return ops;
}

}  // namespace dsv3::parallel
