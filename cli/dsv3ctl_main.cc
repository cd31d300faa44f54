// dsv3ctl: the command-line client of dsv3-coordinator. Everything is in RunCtl (cli/ctl.h).
#include <iostream>

#include "cli/ctl.h"

int main(int argc, char** argv) { return dsv3::cli::RunCtl(argc, argv, std::cout, std::cerr); }
