// Tests for the OpHeader protocol: encoding round trips, corrupt input, the descriptions and the
// messages of mismatches (what a user reads when ranks disagree).
#include "engine/parallel/communicator_protocol.h"

#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::IsOk;
using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

OpHeader Header(OpKind kind, DataType dtype, int64_t seq, uint64_t send, uint64_t recv) {
  OpHeader h;
  h.kind = kind;
  h.dtype = dtype;
  h.seq = seq;
  h.send_count = send;
  h.recv_count = recv;
  return h;
}

OpHeader AllReduceHeader(int64_t seq, uint64_t count) {
  return Header(OpKind::kAllReduce, DataType::kFloat32, seq, count, count);
}

TEST(OpHeaderTest, EncodingRoundTripsEveryField) {
  OpHeader h =
      Header(OpKind::kSendRecv, DataType::kInt64, (int64_t{1} << 40) + 3, 123456789012ull, 42);
  h.send_messages = 7;
  h.recv_messages = 1;
  h.send_signature = 0xfedcba9876543210ull;
  h.recv_signature = 0x0123456789abcdefull;
  const EncodedOpHeader bytes = EncodeOpHeader(h);
  EXPECT_THAT(DecodeOpHeader(absl::string_view(bytes.data(), bytes.size())), IsOkAndHolds(h));
}

TEST(OpHeaderTest, ABadMagicOrSizeIsAnInternalError) {
  EncodedOpHeader bytes = EncodeOpHeader(AllReduceHeader(1, 2));
  EXPECT_THAT(DecodeOpHeader(absl::string_view(bytes.data(), 10)),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("10 bytes")));
  bytes[0] ^= 0x5a;
  EXPECT_THAT(DecodeOpHeader(absl::string_view(bytes.data(), bytes.size())),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("magic")));
}

TEST(OpHeaderTest, DescriptionsNameTheOpTheSequenceNumberAndTheSizes) {
  EXPECT_EQ(DescribeOp(AllReduceHeader(7, 10), 1), "all_reduce #7 (float32 x 10)");
  EXPECT_EQ(DescribeOp(Header(OpKind::kBarrier, DataType::kUint8, 4, 0, 0), 1), "barrier #4");
  EXPECT_EQ(DescribeOp(Header(OpKind::kAllToAll, DataType::kInt64, 2, 5, 3), 1),
            "all_to_all #2 (int64: 5 to rank 1, 3 from it)");
  OpHeader batch = Header(OpKind::kSendRecv, DataType::kUint8, 3, 96, 0);
  batch.send_messages = 2;
  EXPECT_EQ(DescribeOp(batch, 1),
            "send_recv #3 (2 messages/96 elements to rank 1, nothing from it)");
}

TEST(OpHeaderTest, AHeaderMatchesItsMirrorImage) {
  EXPECT_THAT(CheckPeerHeader(AllReduceHeader(3, 8), AllReduceHeader(3, 8), "world", 0, 1), IsOk());
  const OpHeader mine = Header(OpKind::kAllToAll, DataType::kInt32, 3, 5, 2);
  EXPECT_THAT(CheckPeerHeader(mine, Mirror(mine), "world", 0, 1), IsOk());
  EXPECT_THAT(CheckPeerHeader(mine, mine, "world", 0, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(OpHeaderTest, ADifferentOpIsReportedAsOutOfSyncNamingBothRanks) {
  const OpHeader gather = Header(OpKind::kAllGather, DataType::kFloat32, 7, 10, 10);
  EXPECT_THAT(
      CheckPeerHeader(AllReduceHeader(7, 10), gather, "world", 0, 2),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("group 'world' rank 0"), HasSubstr("all_reduce #7"),
                     HasSubstr("rank 2, which issued all_gather #7"), HasSubstr("out of sync"))));
}

TEST(OpHeaderTest, ADifferentSequenceNumberIsReportedAsOutOfSync) {
  EXPECT_THAT(CheckPeerHeader(AllReduceHeader(7, 10), AllReduceHeader(8, 10), "dp", 1, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("all_reduce #7"), HasSubstr("all_reduce #8"),
                             HasSubstr("out of sync"))));
}

TEST(OpHeaderTest, ADifferentSizeIsReportedAsASizeMismatch) {
  EXPECT_THAT(CheckPeerHeader(AllReduceHeader(7, 10), AllReduceHeader(7, 12), "world", 0, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("float32 x 10"), HasSubstr("float32 x 12"),
                             HasSubstr("sizes or types differ"))));
}

TEST(OpHeaderTest, APairThatDisagreesInOneDirectionIsSeenByBothSides) {
  // Rank 0 sends 3 and expects 1; rank 1 sends 1 but expects 4.
  const OpHeader from0 = Header(OpKind::kAllToAll, DataType::kInt32, 0, 3, 1);
  const OpHeader from1 = Header(OpKind::kAllToAll, DataType::kInt32, 0, 1, 4);
  EXPECT_THAT(CheckPeerHeader(from0, from1, "ep", 0, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("which issued all_to_all #0 (int32: 1 to rank 0, 4 from it)")));
  EXPECT_THAT(CheckPeerHeader(from1, from0, "ep", 1, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("all_to_all #0 (int32: 1 to rank 0, 4 from it) does not match")));
}

TEST(OpHeaderTest, MessageSignaturesDependOnTheOrderOfTheMessages) {
  const uint64_t a = MessageSignature(MessageSignature(kEmptySignature, DataType::kFloat32, 3),
                                      DataType::kFloat32, 5);
  const uint64_t b = MessageSignature(MessageSignature(kEmptySignature, DataType::kFloat32, 5),
                                      DataType::kFloat32, 3);
  const uint64_t c = MessageSignature(MessageSignature(kEmptySignature, DataType::kInt32, 3),
                                      DataType::kFloat32, 5);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
}

}  // namespace
}  // namespace dsv3::parallel
