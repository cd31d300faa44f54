// Tests for the checkpoint store: write-commit-load round trips (ranks in one process and in
// separate processes), crashes at each point of the protocol, corrupted files, repeated and
// concurrent commits, a step written again replacing its committed checkpoint, retention, finding
// one step and rolling back to it, and checkpoints from another world size or model config.
#include "engine/train/checkpoint.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/model_config.h"
#include "common/status_matchers.h"
#include "engine/train/checkpoint_reader.h"
#include "engine/train/checksum.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) /
                       (std::string("ckpt_") + info->test_suite_name() + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x01));
}

ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 16;
  c.hidden_size = 4;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 8;
  c.moe_intermediate_size = 8;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.num_attention_heads = 2;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 2;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 2;
  c.num_nextn_predict_layers = 1;
  return c;
}

// One rank's tensors: values depend on (rank, step), so a mix-up shows.
struct RankData {
  RankData(int rank, int64_t step) : weight(32), embed(64), master(32), moment(32) {
    for (size_t i = 0; i < weight.size(); ++i) {
      weight[i] = static_cast<float>(rank * 1000 + step) + 0.5f * static_cast<float>(i);
      master[i] = weight[i] + 0.25f;
      moment[i] = -weight[i];
    }
    for (size_t i = 0; i < embed.size(); ++i) {
      embed[i] = static_cast<uint16_t>(0x3F80 + rank * 7 + step + i);
    }
    state.tokens_seen = 4096 * step;
    state.data_position = 32 * step;
    state.rng_state = std::string("\x00\x01\xff rng", 7) + std::to_string(rank);
    state.extra = {{"loss_scale", "1024"}, {"rank_note", "r" + std::to_string(rank)}};
  }
  void Fill(SafetensorsWriter* model, SafetensorsWriter* optimizer) const {
    EXPECT_OK(model->Add<float>("model.layers.0.mlp.gate_proj.weight", {8, 4}, weight));
    EXPECT_OK(model->Add("model.embed_tokens.weight", DType::kBF16, {16, 4}, embed.data(),
                         embed.size() * 2));
    EXPECT_OK(optimizer->Add<float>("model.layers.0.mlp.gate_proj.weight.master", {8, 4}, master));
    EXPECT_OK(optimizer->Add<float>("model.layers.0.mlp.gate_proj.weight.exp_avg", {8, 4}, moment));
  }
  std::vector<float> weight;
  std::vector<uint16_t> embed;
  std::vector<float> master, moment;
  RankState state;
};

absl::StatusOr<RankFiles> WriteRank(const std::string& root, const CheckpointKey& key, int rank) {
  const RankData data(rank, key.step);
  SafetensorsWriter model, optimizer;
  data.Fill(&model, &optimizer);
  return WriteRankCheckpoint(root, key, rank, model, optimizer, data.state);
}

CommitRequest Request(const CheckpointKey& key, std::vector<RankFiles> acks) {
  CommitRequest r;
  r.key = key;
  r.model_config = TinyConfig();
  r.layout = {{"pipeline_parallel", key.world_size}};
  r.ranks = std::move(acks);
  return r;
}

// Writes every rank in this process and commits; returns the committed directory.
std::string WriteAndCommit(const std::string& root, const CheckpointKey& key) {
  std::vector<RankFiles> acks;
  for (int r = 0; r < key.world_size; ++r) {
    absl::StatusOr<RankFiles> ack = WriteRank(root, key, r);
    EXPECT_TRUE(ack.ok()) << ack.status();
    if (ack.ok()) acks.push_back(*ack);
  }
  absl::StatusOr<std::string> dir = CommitCheckpoint(root, Request(key, acks));
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? *dir : "";
}

void ExpectRankLoads(const std::string& dir, int rank, int64_t step, int world_size) {
  absl::StatusOr<LoadedRank> loaded =
      LoadRank(dir, rank, LoadExpectations{world_size, TinyConfig()});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const RankData want(rank, step);
  EXPECT_THAT(loaded->model.Read<float>("model.layers.0.mlp.gate_proj.weight", {8, 4}),
              ::dsv3::testing::IsOkAndHolds(want.weight));
  absl::StatusOr<std::vector<uint8_t>> embed =
      loaded->model.ReadBytes("model.embed_tokens.weight", DType::kBF16);
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(std::memcmp(embed->data(), want.embed.data(), embed->size()), 0);
  EXPECT_THAT(loaded->optimizer.Read<float>("model.layers.0.mlp.gate_proj.weight.master", {8, 4}),
              ::dsv3::testing::IsOkAndHolds(want.master));
  EXPECT_THAT(loaded->optimizer.Read<float>("model.layers.0.mlp.gate_proj.weight.exp_avg", {8, 4}),
              ::dsv3::testing::IsOkAndHolds(want.moment));
  EXPECT_EQ(loaded->state, want.state);
  EXPECT_EQ(loaded->manifest.step, step);
}

TEST(CheckpointTest, WriteCommitLoadRoundTrips) {
  const std::string root = TestDir() + "/run";  // created by the first rank
  const CheckpointKey key{50, 3, 2};
  const std::string dir = WriteAndCommit(root, key);
  EXPECT_EQ(dir, root + "/step-00000050");
  EXPECT_THAT(Entries(root), ElementsAre("step-00000050"));
  EXPECT_THAT(Entries(dir),
              ElementsAre("MANIFEST.json", "rank-0-optim.safetensors", "rank-0-state.json",
                          "rank-0.safetensors", "rank-1-optim.safetensors", "rank-1-state.json",
                          "rank-1.safetensors"));
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(root);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->path, dir);
  EXPECT_EQ(latest->manifest.step, 50);
  EXPECT_EQ(latest->manifest.epoch, 3);
  EXPECT_EQ(latest->manifest.world_size, 2);
  EXPECT_EQ(latest->manifest.layout.at("pipeline_parallel"), 2);
  for (int r = 0; r < 2; ++r) ExpectRankLoads(dir, r, 50, 2);
}

TEST(CheckpointTest, TheManifestRecordsTheTrueSizeAndChecksumOfEveryFile) {
  const std::string root = TestDir();
  const std::string dir = WriteAndCommit(root, CheckpointKey{1, 0, 3});
  absl::StatusOr<Manifest> m = ReadManifest(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->files.size(), 9u);
  for (const CheckpointFile& f : m->files) {
    const std::string bytes = ReadAll(dir + "/" + f.name);
    EXPECT_EQ(f.size, bytes.size()) << f.name;
    EXPECT_EQ(f.crc32c, Crc32cExtendPortable(0, bytes.data(), bytes.size())) << f.name;
  }
}

TEST(CheckpointTest, RanksInSeparateProcessesWriteOneStagingDirectory) {
  const std::string root = TestDir();
  const CheckpointKey key{10, 1, 4};
  std::vector<pid_t> children;
  std::vector<int> pipes;
  for (int rank = 0; rank < key.world_size; ++rank) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // the rank: write, then send the acknowledgement as text
      close(fds[0]);
      absl::StatusOr<RankFiles> ack = WriteRank(root, key, rank);
      std::ostringstream out;
      if (ack.ok()) {
        for (const CheckpointFile& f : ack->files) out << f.size << " " << f.crc32c << "\n";
      }
      const std::string text = out.str();
      const bool sent =
          write(fds[1], text.data(), text.size()) == static_cast<ssize_t>(text.size());
      _exit(ack.ok() && sent ? 0 : 1);
    }
    close(fds[1]);
    children.push_back(pid);
    pipes.push_back(fds[0]);
  }
  std::vector<RankFiles> acks;
  for (int rank = 0; rank < key.world_size; ++rank) {
    std::string text;
    char buf[256];
    ssize_t n;
    while ((n = read(pipes[rank], buf, sizeof(buf))) > 0) text.append(buf, n);
    close(pipes[rank]);
    int status = 0;
    ASSERT_EQ(waitpid(children[rank], &status, 0), children[rank]);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank " << rank;
    std::istringstream in(text);
    RankFiles ack;
    ack.rank = rank;
    for (CheckpointFileKind kind :
         {CheckpointFileKind::kModel, CheckpointFileKind::kOptimizer, CheckpointFileKind::kState}) {
      CheckpointFile f{CheckpointFileName(rank, kind), rank, kind, 0, 0};
      ASSERT_TRUE(in >> f.size >> f.crc32c) << "rank " << rank << " sent: " << text;
      ack.files.push_back(f);
    }
    acks.push_back(ack);
  }
  std::reverse(acks.begin(), acks.end());  // acknowledgements may arrive in any order
  std::reverse(acks[0].files.begin(), acks[0].files.end());
  CommitRequest request = Request(key, acks);
  request.verify_checksums = true;
  absl::StatusOr<std::string> dir = CommitCheckpoint(root, request);
  ASSERT_TRUE(dir.ok()) << dir.status();
  for (int r = 0; r < key.world_size; ++r) ExpectRankLoads(*dir, r, 10, 4);
}

TEST(CheckpointTest, DescribeStagedRankReproducesTheAcknowledgement) {
  const std::string root = TestDir();
  const CheckpointKey key{5, 2, 1};
  absl::StatusOr<RankFiles> ack = WriteRank(root, key, 0);
  ASSERT_TRUE(ack.ok()) << ack.status();
  absl::StatusOr<RankFiles> described = DescribeStagedRank(root, key, 0);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->files, ack->files);
  EXPECT_THAT(DescribeStagedRank(root, CheckpointKey{6, 2, 1}, 0),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("rank-0.safetensors")));
}

TEST(CheckpointTest, ACrashBeforeTheManifestIsInvisibleAndPruned) {
  const std::string root = TestDir();
  WriteAndCommit(root, CheckpointKey{100, 1, 2});
  // Epoch 1 writes step 200 on both ranks, then dies before anyone commits.
  ASSERT_OK(WriteRank(root, CheckpointKey{200, 1, 2}, 0).status());
  ASSERT_OK(WriteRank(root, CheckpointKey{200, 1, 2}, 1).status());
  EXPECT_THAT(Entries(root), ElementsAre("step-00000100", "step-00000200.tmp-e1"));
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(root);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->manifest.step, 100);
  EXPECT_THAT(ReadManifest(root + "/step-00000200.tmp-e1"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not a committed checkpoint")));
  // Epoch 2 resumes from step 100 and prunes: the dead epoch's staging directory goes.
  absl::StatusOr<std::vector<std::string>> removed = Prune(root, 5, /*current_epoch=*/2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed, ElementsAre(root + "/step-00000200.tmp-e1"));
  EXPECT_THAT(Entries(root), ElementsAre("step-00000100"));
}

TEST(CheckpointTest, AStagingDirectoryOfTheLiveEpochAheadOfTheNewestIsKept) {
  const std::string root = TestDir();
  WriteAndCommit(root, CheckpointKey{100, 1, 1});
  ASSERT_OK(WriteRank(root, CheckpointKey{200, 1, 1}, 0).status());  // being written right now
  absl::StatusOr<std::vector<std::string>> removed = Prune(root, 1, /*current_epoch=*/1);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed, IsEmpty());
  EXPECT_THAT(Entries(root), ElementsAre("step-00000100", "step-00000200.tmp-e1"));
}

TEST(CheckpointTest, ACrashAfterTheManifestButBeforeTheRenameIsInvisibleThenCompleted) {
  const std::string root = TestDir();
  const CheckpointKey key{7, 4, 2};
  std::vector<RankFiles> acks;
  for (int r = 0; r < 2; ++r) acks.push_back(*WriteRank(root, key, r));
  // The committer wrote the manifest into the staging directory and died before renaming it.
  Manifest m;
  m.step = 7;
  m.epoch = 4;
  m.world_size = 2;
  m.model_config = TinyConfig();
  for (const RankFiles& a : acks) m.files.insert(m.files.end(), a.files.begin(), a.files.end());
  std::ofstream(root + "/step-00000007.tmp-e4/MANIFEST.json") << ManifestToJson(m);
  EXPECT_THAT(LatestCommitted(root), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(CheckpointReader::Open(root + "/step-00000007.tmp-e4/"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("staging")));
  // The coordinator retries the commit.
  absl::StatusOr<std::string> dir = CommitCheckpoint(root, Request(key, acks));
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_THAT(Entries(root), ElementsAre("step-00000007"));
  ExpectRankLoads(*dir, 1, 7, 2);
}

TEST(CheckpointTest, ACorruptedFileIsDataLossNamingItOnLoad) {
  const std::string root = TestDir();
  const std::string dir = WriteAndCommit(root, CheckpointKey{3, 0, 2});
  const std::string victim = dir + "/rank-1-optim.safetensors";
  FlipByte(victim, fs::file_size(victim) - 5);  // inside the tensor data: still valid safetensors
  EXPECT_THAT(LoadRank(dir, 1, {}),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr(victim), HasSubstr("CRC32C"))));
  absl::StatusOr<CheckpointReader> reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_THAT(reader->OpenModel(1), IsOk());  // the other files of rank 1 are fine
  EXPECT_THAT(reader->OpenOptimizer(1),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-1-optim.safetensors")));
  EXPECT_THAT(reader->VerifyAll(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-1-optim.safetensors")));
  EXPECT_THAT(LoadRank(dir, 0, {}), IsOk());
}

TEST(CheckpointTest, ACorruptedStateFileIsDataLossNamingIt) {
  const std::string root = TestDir();
  const std::string dir = WriteAndCommit(root, CheckpointKey{3, 0, 1});
  // Change one digit of the data position: still valid JSON, but not what was written.
  const std::string path = dir + "/rank-0-state.json";
  const size_t at = ReadAll(path).find("\"data_position\": ");
  ASSERT_NE(at, std::string::npos);
  FlipByte(path, at + 17);
  EXPECT_THAT(LoadRank(dir, 0, {}),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("rank-0-state.json"), HasSubstr("CRC32C"))));
}

TEST(CheckpointTest, ATruncatedFileHidesTheCheckpointFromLatestCommitted) {
  const std::string root = TestDir();
  WriteAndCommit(root, CheckpointKey{1, 0, 1});
  const std::string dir2 = WriteAndCommit(root, CheckpointKey{2, 0, 1});
  fs::resize_file(dir2 + "/rank-0.safetensors", 10);
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(root);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->manifest.step, 1);
  EXPECT_THAT(LoadRank(dir2, 0, {}),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-0.safetensors")));
}

TEST(CheckpointTest, ALostManifestHidesTheCheckpoint) {
  const std::string root = TestDir();
  WriteAndCommit(root, CheckpointKey{1, 0, 1});
  const std::string dir2 = WriteAndCommit(root, CheckpointKey{2, 0, 1});
  FlipByte(dir2 + "/MANIFEST.json", 40);
  EXPECT_EQ(LatestCommitted(root)->manifest.step, 1);
  fs::remove(dir2 + "/MANIFEST.json");
  EXPECT_EQ(LatestCommitted(root)->manifest.step, 1);
}

TEST(CheckpointTest, CommittingTwiceIsHarmless) {
  const std::string root = TestDir();
  const CheckpointKey key{20, 2, 2};
  std::vector<RankFiles> acks;
  for (int r = 0; r < 2; ++r) acks.push_back(*WriteRank(root, key, r));
  absl::StatusOr<std::string> first = CommitCheckpoint(root, Request(key, acks));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string manifest = ReadAll(*first + "/MANIFEST.json");
  absl::StatusOr<std::string> second = CommitCheckpoint(root, Request(key, acks));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, *first);
  EXPECT_EQ(ReadAll(*first + "/MANIFEST.json"), manifest);
  EXPECT_THAT(Entries(root), ElementsAre("step-00000020"));
  ExpectRankLoads(*first, 0, 20, 2);
}

TEST(CheckpointTest, ConcurrentCommitsConvergeOnOneCheckpoint) {
  const std::string root = TestDir();
  for (int64_t step = 1; step <= 20; ++step) {
    const CheckpointKey key{step, 1, 2};
    std::vector<RankFiles> acks;
    for (int r = 0; r < 2; ++r) acks.push_back(*WriteRank(root, key, r));
    const CommitRequest request = Request(key, acks);
    absl::StatusOr<std::string> results[3];
    std::vector<std::thread> threads;
    for (auto& result : results) {
      threads.emplace_back([&] { result = CommitCheckpoint(root, request); });
    }
    for (auto& t : threads) t.join();
    for (const auto& result : results) {
      ASSERT_TRUE(result.ok()) << "step " << step << ": " << result.status();
      EXPECT_EQ(*result, root + "/" + CommittedDirName(step));
    }
  }
  absl::StatusOr<std::vector<CommittedCheckpoint>> all = ListCommitted(root);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 20u);
  EXPECT_EQ(Entries(root).size(), 20u);  // no staging, temporary or trash left
  for (const auto& c : *all) EXPECT_THAT(Entries(c.path).size(), 7u) << c.path;
}

TEST(CheckpointTest, ACommitWithoutEveryRankIsRefusedNamingTheMissingRanks) {
  const std::string root = TestDir();
  const CheckpointKey key{4, 0, 3};
  absl::StatusOr<RankFiles> ack = WriteRank(root, key, 1);
  ASSERT_TRUE(ack.ok());
  EXPECT_THAT(CommitCheckpoint(root, Request(key, {*ack})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank(s) 0, 2")));
  EXPECT_THAT(CommitCheckpoint(root, Request(key, {*ack, *ack})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(LatestCommitted(root), StatusIs(absl::StatusCode::kNotFound));
}

TEST(CheckpointTest, ACommitWhoseFilesAreMissingOrDifferIsRefused) {
  const std::string root = TestDir();
  const CheckpointKey key{4, 0, 1};
  absl::StatusOr<RankFiles> ack = WriteRank(root, key, 0);
  ASSERT_TRUE(ack.ok());
  const std::string staging = root + "/" + StagingDirName(4, 0);

  RankFiles wrong_size = *ack;
  wrong_size.files[0].size += 1;
  EXPECT_THAT(CommitCheckpoint(root, Request(key, {wrong_size})),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank-0.safetensors")));

  FlipByte(staging + "/rank-0-optim.safetensors", 100);
  CommitRequest verified = Request(key, {*ack});
  verified.verify_checksums = true;
  EXPECT_THAT(CommitCheckpoint(root, verified),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("rank-0-optim.safetensors"), HasSubstr("CRC32C"))));

  fs::remove(staging + "/rank-0-state.json");
  EXPECT_THAT(CommitCheckpoint(root, Request(key, {*ack})),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("rank-0-state.json")));
  EXPECT_THAT(CommitCheckpoint(root, Request(CheckpointKey{5, 0, 1}, {*ack})),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not exist")));
  EXPECT_THAT(LatestCommitted(root), StatusIs(absl::StatusCode::kNotFound));
}

TEST(CheckpointTest, AStepCommittedByANewerEpochStands) {
  const std::string root = TestDir();
  const std::string dir = WriteAndCommit(root, CheckpointKey{30, 2, 1});
  const std::string manifest = ReadAll(dir + "/MANIFEST.json");
  // A rank of an older epoch (a stale one) writes step 30 again and tries to commit it.
  ASSERT_THAT(WriteRank(root, CheckpointKey{30, 1, 1}, 0),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already committed by epoch 2")));
  fs::create_directories(root + "/" + StagingDirName(30, 1));
  RankFiles fake{0, {}};
  for (CheckpointFileKind kind :
       {CheckpointFileKind::kModel, CheckpointFileKind::kOptimizer, CheckpointFileKind::kState}) {
    fake.files.push_back(CheckpointFile{CheckpointFileName(0, kind), 0, kind, 1, 2});
  }
  EXPECT_THAT(CommitCheckpoint(root, Request(CheckpointKey{30, 1, 1}, {fake})),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("by epoch 2, newer than epoch 1")));
  EXPECT_EQ(ReadAll(dir + "/MANIFEST.json"), manifest);
  // Prune cleans the loser's staging directory (its step is not newer than the newest).
  ASSERT_OK(Prune(root, 1).status());
  EXPECT_THAT(Entries(root), ElementsAre("step-00000030"));
}

TEST(CheckpointTest, AStepWrittenAgainReplacesTheCommittedOneAtomically) {
  const std::string root = TestDir();
  const std::string dir = root + "/step-00000030";
  // Two ranks committed step 30, went on, and the job was rolled back to step 20; four ranks of
  // the same epoch number (the trainer's) write step 30 again: theirs replaces it.
  ASSERT_EQ(WriteAndCommit(root, CheckpointKey{30, 0, 2}), dir);
  EXPECT_EQ(WriteAndCommit(root, CheckpointKey{30, 0, 4}), dir);
  absl::StatusOr<Manifest> m = ReadManifest(dir);
  ASSERT_OK(m);
  EXPECT_EQ(m->world_size, 4);
  EXPECT_THAT(Entries(root), ElementsAre("step-00000030")) << "no staging or trash left";
  for (int r = 0; r < 4; ++r) ExpectRankLoads(dir, r, 30, 4);
  // A newer epoch replaces an older one's checkpoint of the step too.
  EXPECT_EQ(WriteAndCommit(root, CheckpointKey{30, 1, 1}), dir);
  m = ReadManifest(dir);
  ASSERT_OK(m);
  EXPECT_EQ(m->epoch, 1);
  EXPECT_EQ(m->world_size, 1);
  EXPECT_THAT(Entries(root), ElementsAre("step-00000030"));
  ExpectRankLoads(dir, 0, 30, 1);
  // Committing the same files again is still a no-op.
  EXPECT_EQ(WriteAndCommit(root, CheckpointKey{30, 1, 1}), dir);
  EXPECT_THAT(Entries(root), ElementsAre("step-00000030"));

  // While it is replaced over and over, step 30 never disappears.
  std::atomic<bool> done{false};
  std::atomic<int> missing{0};
  std::thread reader([&] {
    while (!done.load()) missing += fs::is_directory(dir) ? 0 : 1;
  });
  for (int i = 0; i < 20; ++i) WriteAndCommit(root, CheckpointKey{30, 1, i % 2 == 0 ? 2 : 1});
  done = true;
  reader.join();
  EXPECT_EQ(missing.load(), 0);
  EXPECT_THAT(Entries(root), ElementsAre("step-00000030"));
  ExpectRankLoads(dir, 0, 30, 1);
}

TEST(CheckpointTest, FindCommittedFindsExactlyTheStepOrSaysWhatIsThere) {
  const std::string root = TestDir();
  EXPECT_THAT(FindCommitted(root + "/none", 10),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("there is no checkpoint of step 10 under " + root +
                                 "/none (no committed checkpoint at all)")));
  for (int64_t step : {10, 20}) WriteAndCommit(root, CheckpointKey{step, 0, 1});
  absl::StatusOr<CommittedCheckpoint> found = FindCommitted(root, 10);
  ASSERT_OK(found);
  EXPECT_EQ(found->path, root + "/step-00000010");
  EXPECT_EQ(found->manifest.step, 10);
  EXPECT_THAT(FindCommitted(root, 15),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("(committed steps: 10, 20)")));
  fs::create_directories(root + "/step-00000025");
  EXPECT_THAT(FindCommitted(root, 25),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("step-00000025 has no MANIFEST.json: not a committed checkpoint")));
  fs::resize_file(root + "/step-00000020/rank-0.safetensors", 10);
  EXPECT_THAT(FindCommitted(root, 20),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("step-00000020 is not a usable committed checkpoint"),
                             HasSubstr("rank-0.safetensors has 10 bytes"))));
}

TEST(CheckpointTest, DiscardAfterRemovesEveryLaterStepCommittedDamagedOrStaged) {
  const std::string root = TestDir();
  EXPECT_THAT(DiscardAfter(root + "/none", 0), ::dsv3::testing::IsOkAndHolds(IsEmpty()));
  for (int64_t step : {10, 20, 30}) WriteAndCommit(root, CheckpointKey{step, 0, 1});
  ASSERT_OK(WriteRank(root, CheckpointKey{5, 0, 1}, 0).status());   // staged, older: stays
  ASSERT_OK(WriteRank(root, CheckpointKey{40, 0, 2}, 1).status());  // staged, later
  fs::create_directories(root + "/step-00000050");                  // damaged, later
  std::ofstream(root + "/notes.txt") << "not a checkpoint";
  EXPECT_THAT(DiscardAfter(root, 20),
              ::dsv3::testing::IsOkAndHolds(ElementsAre(
                  root + "/step-00000030", root + "/step-00000040.tmp-e0",
                  root + "/step-00000050")));
  EXPECT_THAT(Entries(root), ElementsAre("notes.txt", "step-00000005.tmp-e0", "step-00000010",
                                         "step-00000020"));
  absl::StatusOr<CommittedCheckpoint> latest = LatestCommitted(root);
  ASSERT_OK(latest);
  EXPECT_EQ(latest->manifest.step, 20);
  EXPECT_THAT(DiscardAfter(root, 20), ::dsv3::testing::IsOkAndHolds(IsEmpty()));

  // Several processes (here threads) rolling back at once remove each directory once.
  for (int64_t step : {30, 40, 50, 60}) WriteAndCommit(root, CheckpointKey{step, 0, 1});
  std::vector<std::string> removed[4];
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      absl::StatusOr<std::vector<std::string>> r = DiscardAfter(root, 0);
      EXPECT_OK(r);
      if (r.ok()) removed[t] = *r;
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> all;
  for (const auto& r : removed) all.insert(all.end(), r.begin(), r.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all.size(), 7u) << "steps 10-60 and the staged step 5, each once";
  EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end());
  EXPECT_THAT(Entries(root), ElementsAre("notes.txt"));
}

TEST(CheckpointTest, ADirectoryWithTheCommittedNameButNoManifestIsReplacedByTheCommit) {
  const std::string root = TestDir();
  fs::create_directories(root + "/step-00000008");
  std::ofstream(root + "/step-00000008/rank-0.safetensors") << "junk";
  const std::string dir = WriteAndCommit(root, CheckpointKey{8, 0, 1});
  EXPECT_EQ(dir, root + "/step-00000008");
  ExpectRankLoads(dir, 0, 8, 1);
  ASSERT_OK(Prune(root, 1).status());  // removes the junk moved to the trash
  EXPECT_THAT(Entries(root), ElementsAre("step-00000008"));
}

TEST(CheckpointTest, PruneKeepsTheNewestN) {
  const std::string root = TestDir();
  for (int64_t step : {10, 20, 30, 40, 50}) WriteAndCommit(root, CheckpointKey{step, 0, 1});
  std::ofstream(root + "/notes.txt") << "not a checkpoint";
  fs::create_directories(root + "/tensorboard");
  absl::StatusOr<std::vector<std::string>> removed = Prune(root, 2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed, ElementsAre(root + "/step-00000010", root + "/step-00000020",
                                    root + "/step-00000030"));
  EXPECT_THAT(Entries(root),
              ElementsAre("notes.txt", "step-00000040", "step-00000050", "tensorboard"));
  ExpectRankLoads(root + "/step-00000050", 0, 50, 1);
  // Pruning again changes nothing; keep=1 leaves the newest.
  EXPECT_THAT(Prune(root, 2), ::dsv3::testing::IsOkAndHolds(IsEmpty()));
  ASSERT_OK(Prune(root, 1).status());
  EXPECT_THAT(Entries(root), ElementsAre("notes.txt", "step-00000050", "tensorboard"));
}

TEST(CheckpointTest, PruneNeverRemovesTheNewest) {
  const std::string root = TestDir();
  WriteAndCommit(root, CheckpointKey{10, 0, 1});
  EXPECT_THAT(Prune(root, 0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keep=0")));
  EXPECT_THAT(Entries(root), ElementsAre("step-00000010"));
  EXPECT_THAT(Prune(TestDir() + "/missing", 1), ::dsv3::testing::IsOkAndHolds(IsEmpty()));
}

TEST(CheckpointTest, PruneCleansTrashAndOldBrokenDirectoriesButNotNewerOnes) {
  const std::string root = TestDir();
  WriteAndCommit(root, CheckpointKey{10, 0, 1});
  WriteAndCommit(root, CheckpointKey{20, 0, 1});
  fs::create_directories(root + "/step-00000005.trash-1-2-3/x");  // a crash mid-deletion
  fs::create_directories(root + "/step-00000015");                // no manifest, older
  fs::create_directories(root + "/step-00000025");                // no manifest, newer
  absl::StatusOr<std::vector<std::string>> removed = Prune(root, 2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed,
              UnorderedElementsAre(root + "/step-00000005.trash-1-2-3", root + "/step-00000015"));
  EXPECT_THAT(Entries(root), ElementsAre("step-00000010", "step-00000020", "step-00000025"));
  EXPECT_EQ(LatestCommitted(root)->manifest.step, 20);
}

TEST(CheckpointTest, AnotherWorldSizeOrModelConfigIsReportedClearlyOnLoad) {
  const std::string root = TestDir();
  const std::string dir = WriteAndCommit(root, CheckpointKey{60, 1, 2});
  ModelConfig other = TinyConfig();
  other.hidden_size = 8;
  other.n_routed_experts = 8;
  EXPECT_THAT(LoadRank(dir, 0, LoadExpectations{4, other}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(dir), HasSubstr("world_size: checkpoint 2, job 4"),
                             HasSubstr("model_config.hidden_size: checkpoint 4, job 8"),
                             HasSubstr("model_config.n_routed_experts: checkpoint 4, job 8"))));
  EXPECT_THAT(LoadRank(dir, 0, LoadExpectations{4, std::nullopt}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("world_size"), Not(HasSubstr("model_config")))));
  // The resume code may still read every rank's shards to reshard onto a new world size.
  absl::StatusOr<CheckpointReader> reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->manifest().world_size, 2);
  EXPECT_OK(reader->VerifyAll());
  EXPECT_THAT(reader->OpenModel(2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank=2")));
}

TEST(CheckpointTest, RankWritesValidateTheirArguments) {
  const std::string root = TestDir();
  SafetensorsWriter model, optimizer;
  EXPECT_THAT(WriteRankCheckpoint(root, CheckpointKey{1, 0, 2}, 2, model, optimizer, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank=2")));
  EXPECT_THAT(WriteRankCheckpoint(root, CheckpointKey{-1, 0, 2}, 0, model, optimizer, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step=-1")));
  RankState bad;
  bad.extra["k"] = "\xff\xfe not utf-8";
  EXPECT_THAT(WriteRankCheckpoint(root, CheckpointKey{1, 0, 1}, 0, model, optimizer, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
}

TEST(CheckpointTest, RewritingARanksFilesReplacesThem) {
  const std::string root = TestDir();
  const CheckpointKey key{9, 0, 1};
  ASSERT_OK(WriteRank(root, key, 0).status());
  absl::StatusOr<RankFiles> again = WriteRank(root, key, 0);  // a retried write
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(Entries(root + "/" + StagingDirName(9, 0)),
              ElementsAre("rank-0-optim.safetensors", "rank-0-state.json", "rank-0.safetensors"));
  ASSERT_OK(CommitCheckpoint(root, Request(key, {*again})).status());
  ExpectRankLoads(root + "/step-00000009", 0, 9, 1);
}

}  // namespace
}  // namespace dsv3::train
