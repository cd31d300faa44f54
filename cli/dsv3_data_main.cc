// dsv3-data: corpus preparation (Brown -> SentencePiece BPE -> llm.c token shards) and shard tools.
// Everything is in RunData (cli/data_tool.h). This binary links neither protobuf nor gRPC: it hosts
// SentencePiece, which cannot share a process with the system protobuf (DESIGN.md, Dependencies).
#include <iostream>

#include "cli/data_tool.h"

int main(int argc, char** argv) { return dsv3::cli::RunData(argc, argv, std::cout, std::cerr); }
