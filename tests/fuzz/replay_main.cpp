// Runs fuzz inputs without libFuzzer, so the fuzz target's invariant checks run in every build:
// each argument is an input file or a directory of them (the seed corpus). A broken invariant
// aborts the process, which fails the test.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool replay(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "connection_fuzz_replay: cannot read %s\n", file.c_str());
        return false;
    }
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::vector<std::uint8_t> data(bytes.begin(), bytes.end());  // owned copy: the target may not keep pointers
    LLVMFuzzerTestOneInput(data.data(), data.size());
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t inputs = 0;
    for (int i = 1; i < argc; ++i) {
        std::vector<std::filesystem::path> files;
        if (std::filesystem::is_directory(argv[i])) {
            for (const auto& entry : std::filesystem::directory_iterator(argv[i])) {
                if (entry.is_regular_file()) {
                    files.push_back(entry.path());
                }
            }
            std::sort(files.begin(), files.end());  // a stable order, for readable failures
        } else {
            files.emplace_back(argv[i]);
        }
        for (const auto& file : files) {
            std::printf("replaying %s\n", file.c_str());
            std::fflush(stdout);  // names the input if the next call aborts
            if (!replay(file)) {
                return 1;
            }
            ++inputs;
        }
    }
    std::printf("connection_fuzz_replay: %zu inputs, every invariant held\n", inputs);
    return inputs > 0 ? 0 : 1;
}
