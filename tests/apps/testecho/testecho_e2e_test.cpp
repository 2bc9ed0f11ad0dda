// End-to-end tests of testecho and echo-client: the real echoplex server (ECHOPLEX_BIN, on the
// backend named by ECHOPLEX_BACKEND) and the real programs (TESTECHO_BIN, ECHO_CLIENT_BIN) as
// child processes over loopback on ephemeral ports; testecho's --json output is parsed and
// checked. Faulty echo peers run on a thread of this test. Every run is bounded by -n or a short
// -d; waits are on child exit (pidfd) and poll(2), never sleeps.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/child_process.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

// ---- a small JSON reader: enough to prove the output is one well-formed object ----

struct Json {
    enum class Type { null, boolean, number, string, array, object } type = Type::null;
    bool boolean = false;
    double number = 0;
    std::string string;
    std::vector<Json> array;
    // An object's members in order, keys[i] naming values[i]. (Not a vector of pair<string, Json>:
    // with libstdc++ 12, clang instantiates that pair while Json is still incomplete.)
    std::vector<std::string> keys;
    std::vector<Json> values;

    const Json& operator[](std::string_view key) const {
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if (keys[i] == key) {
                return values[i];
            }
        }
        throw std::runtime_error("JSON has no field '" + std::string(key) + "'");
    }
    bool has(std::string_view key) const {
        for (const auto& k : keys) {
            if (k == key) {
                return true;
            }
        }
        return false;
    }
    std::uint64_t u64() const { return static_cast<std::uint64_t>(number); }
};

class JsonReader {
public:
    explicit JsonReader(std::string_view text) : text_(text) {}

    Json document() {
        if (!valid_utf8(text_)) {
            fail("not UTF-8 (RFC 8259 section 8.1)");
        }
        Json v = value();
        skip_space();
        if (pos_ != text_.size()) {
            fail("trailing text");
        }
        return v;
    }

private:
    // Lead and continuation bytes in order (overlongs and surrogates are the report's unit
    // test's business).
    static bool valid_utf8(std::string_view text) {
        for (std::size_t i = 0; i < text.size();) {
            const auto lead = static_cast<unsigned char>(text[i]);
            const std::size_t n = lead < 0x80 ? 1 : lead >= 0xc2 && lead < 0xe0 ? 2 : lead >= 0xe0 && lead < 0xf0 ? 3
                                                                                : lead >= 0xf0 && lead < 0xf5 ? 4 : 0;
            if (n == 0 || i + n > text.size()) {
                return false;
            }
            for (std::size_t k = 1; k < n; ++k) {
                if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) {
                    return false;
                }
            }
            i += n;
        }
        return true;
    }
    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("bad JSON at " + std::to_string(pos_) + ": " + why);
    }
    void skip_space() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t' || text_[pos_] == '\r')) {
            ++pos_;
        }
    }
    bool take(std::string_view word) {
        if (text_.substr(pos_, word.size()) == word) {
            pos_ += word.size();
            return true;
        }
        return false;
    }
    std::string string() {
        if (!take("\"")) {
            fail("string expected");
        }
        std::string out;
        while (pos_ < text_.size() && text_[pos_] != '"') {
            char c = text_[pos_++];
            if (static_cast<unsigned char>(c) < 0x20) {
                fail("raw control character in string");
            }
            if (c == '\\') {
                if (pos_ >= text_.size()) {
                    fail("truncated escape");
                }
                const char e = text_[pos_++];
                switch (e) {
                case 'n': c = '\n'; break;
                case 't': c = '\t'; break;
                case 'r': c = '\r'; break;
                case '"': case '\\': case '/': c = e; break;
                case 'u': {
                    unsigned code = 0;
                    const auto hex = text_.substr(pos_, 4);
                    if (std::from_chars(hex.data(), hex.data() + hex.size(), code, 16).ptr != hex.data() + 4) {
                        fail("bad \\u escape");
                    }
                    pos_ += 4;
                    c = static_cast<char>(code);
                    break;
                }
                default: fail("unknown escape");
                }
            }
            out += c;
        }
        if (!take("\"")) {
            fail("unterminated string");
        }
        return out;
    }
    Json value() {
        skip_space();
        Json v;
        if (take("null")) {
            return v;
        }
        if (take("true") || take("false")) {
            v.type = Json::Type::boolean;
            v.boolean = text_[pos_ - 1] == 'e' && text_[pos_ - 2] == 'u';
            return v;
        }
        if (pos_ < text_.size() && text_[pos_] == '"') {
            v.type = Json::Type::string;
            v.string = string();
            return v;
        }
        if (take("[")) {
            v.type = Json::Type::array;
            skip_space();
            if (take("]")) {
                return v;
            }
            do {
                v.array.push_back(value());
                skip_space();
            } while (take(","));
            if (!take("]")) {
                fail("] expected");
            }
            return v;
        }
        if (take("{")) {
            v.type = Json::Type::object;
            skip_space();
            if (take("}")) {
                return v;
            }
            do {
                skip_space();
                std::string key = string();
                skip_space();
                if (!take(":")) {
                    fail(": expected");
                }
                v.keys.push_back(std::move(key));
                v.values.push_back(value());
                skip_space();
            } while (take(","));
            if (!take("}")) {
                fail("} expected");
            }
            return v;
        }
        v.type = Json::Type::number;
        const auto [end, ec] = std::from_chars(text_.data() + pos_, text_.data() + text_.size(), v.number);
        if (ec != std::errc{}) {
            fail("value expected");
        }
        pos_ = static_cast<std::size_t>(end - text_.data());
        return v;
    }

    std::string_view text_;
    std::size_t pos_ = 0;
};

// ---- running the programs ----

std::string env_path(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') {
        throw std::runtime_error(std::string(name) + " is not set (run the tests through meson)");
    }
    return value;
}

std::string backend() { return std::string(backend_name(backend_under_test())); }

RunResult testecho(std::vector<std::string> args) {
    args.insert(args.begin(), "--backend=" + backend());
    return run_to_completion(env_path("TESTECHO_BIN"), args, 30s);
}

std::string port_list(const ServerProcess& server) {
    std::string out;
    for (const auto port : server.ports()) {
        if (!out.empty()) {
            out += ',';
        }
        out += std::to_string(port);
    }
    return out;
}

// Runs testecho --json and parses stdout, which must be exactly one object.
Json testecho_json(std::vector<std::string> args, int want_exit = 0) {
    args.emplace_back("--json");
    const RunResult r = testecho(args);
    INFO("testecho stderr: ", r.err);
    INFO("testecho stdout: ", r.out);
    REQUIRE_MESSAGE(r.status.exited, r.status.describe());
    CHECK(r.status.code == want_exit);
    REQUIRE(!r.out.empty());
    CHECK(r.out.back() == '\n');
    CHECK(r.out.find('\n') == r.out.size() - 1);  // one line
    Json j = JsonReader(r.out).document();
    REQUIRE(j.type == Json::Type::object);
    return j;
}

// A loopback port where connects are refused: bound but not listening, so nobody else can
// take it while the test holds it.
class RefusingPort {
public:
    RefusingPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        socklen_t len = sizeof addr;
        REQUIRE(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
        port_ = ntohs(addr.sin_port);
    }
    std::string number() const { return std::to_string(port_); }

private:
    UniqueFd fd_;
    std::uint16_t port_ = 0;
};

// The checks every clean run must pass.
void check_clean(const Json& j, std::uint64_t messages) {
    CHECK(j["verified"].boolean);
    CHECK(j["first_error"].type == Json::Type::null);
    CHECK(j["errors"]["connect"].u64() == 0);
    CHECK(j["errors"]["mismatch"].u64() == 0);
    CHECK(j["errors"]["closed"].u64() == 0);
    CHECK(j["errors"]["timeout"].u64() == 0);
    CHECK(j["settings"]["backend"].string == backend());
    if (messages != 0) {
        CHECK(j["messages"].u64() == messages);
    }
    CHECK(j["latency_ms"]["count"].u64() == j["messages"].u64());
    const auto& lat = j["latency_ms"];
    CHECK(lat["min"].number <= lat["p50"].number);
    CHECK(lat["p50"].number <= lat["p90"].number);
    CHECK(lat["p90"].number <= lat["p99"].number);
    CHECK(lat["p99"].number <= lat["p99_9"].number);
    CHECK(lat["p99_9"].number <= lat["max"].number);
    CHECK(j["duration_s"].number > 0);
    CHECK(j["rps"].number > 0);
}

TEST_CASE("lockstep over both ports: every message verified, byte counts exact") {
    ServerProcess server({"--port", "0", "--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-n", "400"});
    check_clean(j, 400);
    CHECK(j["settings"]["ports"].array.size() == 2);
    CHECK(j["settings"]["connections"].u64() == 8);
    CHECK(j["settings"]["message"].string == "Hello network world");
    CHECK(j["bytes_sent"].u64() == 400 * 19);
    CHECK(j["bytes_received"].u64() == 400 * 19);
    CHECK(j["connections"]["established"].u64() == 8);
    CHECK(j["connect_ms"]["count"].u64() == 8);
}

TEST_CASE("pipelined generated payloads of 4 KiB") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "4", "-P", "16", "-s", "4k", "-n", "2000"});
    check_clean(j, 2000);
    CHECK(j["settings"]["pipeline"].u64() == 16);
    CHECK(j["settings"]["size"].u64() == 4096);
    CHECK(j["bytes_received"].u64() == 2000 * 4096);
}

TEST_CASE("payloads larger than the socket buffers, pipelined") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "2", "-P", "4", "-s", "1m", "-n", "24"});
    check_clean(j, 24);
    CHECK(j["bytes_received"].u64() == 24ULL * 1024 * 1024);
}

TEST_CASE("--procs merges the children's results") {
    ServerProcess server({"--port", "0", "--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "--procs", "2", "-c", "6", "-P", "2", "-n", "600"});
    check_clean(j, 600);
    CHECK(j["settings"]["procs"].u64() == 2);
    CHECK(j["connections"]["established"].u64() == 6);
    CHECK(j["connect_ms"]["count"].u64() == 6);
    // Every process's intervals and connections, merged.
    std::uint64_t in_intervals = 0;
    for (const Json& i : j["intervals"].array) {
        in_intervals += i["messages"].u64();
    }
    CHECK(in_intervals == 600);
    CHECK(j["per_connection"]["count"].u64() == 6);
    CHECK(j["per_connection"]["min"].u64() == 100);
    CHECK(j["per_connection"]["max"].u64() == 100);
    // Each port's address, resolved by every process and merged: the one connected to.
    REQUIRE(j["addresses"].array.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        const std::string address = "127.0.0.1:" + std::to_string(server.port(i));
        CHECK(j["addresses"].array[i]["used"].string == address);
        REQUIRE(j["addresses"].array[i]["resolved"].array.size() == 1);
        CHECK(j["addresses"].array[i]["resolved"].array[0].string == address);
    }
}

TEST_CASE("a host name: the report says what it resolved to and which address was used") {
    ServerProcess server({"--port", "0"});
    const RunResult r = testecho({"-H", "localhost", "--port", std::to_string(server.port()), "-c", "2", "-n", "20"});
    CHECK_MESSAGE(r.status.ok(), r.err);
    const std::string used = "connected to 127.0.0.1:" + std::to_string(server.port());
    CHECK_MESSAGE(r.out.find("localhost port " + std::to_string(server.port()) + ": resolved to ") != std::string::npos, r.out);
    CHECK_MESSAGE(r.out.find(used) != std::string::npos, r.out);
}

TEST_CASE("--idle connections are held open for the whole run") {
    ServerProcess server({"--port", "0", "--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "--idle", "100", "-n", "200"});
    check_clean(j, 200);
    CHECK(j["connections"]["idle_held"].u64() == 100);
    CHECK(j["connections"]["established"].u64() == 108);
}

TEST_CASE("a duration run stops on time and verifies what it sent") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-d", "300ms", "-c", "4"});
    check_clean(j, 0);
    CHECK(j["messages"].u64() > 0);
    CHECK(j["settings"]["duration_s"].number == doctest::Approx(0.3));
    CHECK(j["settings"]["requests"].type == Json::Type::null);
    CHECK(j["duration_s"].number >= 0.3);
    CHECK(j["duration_s"].number < 5.0);
}

TEST_CASE("--rate paces each connection") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "2", "-r", "100", "-d", "500ms"});
    check_clean(j, 0);
    // 2 connections x 100/s x 0.5 s = 100; the bounds allow for a loaded machine running late.
    CHECK(j["messages"].u64() >= 80);
    CHECK(j["messages"].u64() <= 120);
}

TEST_CASE("--reply=stamp verifies the book's stamped replies") {
    ServerProcess server({"--port", "0", "--port", "0", "--reply=stamp"});
    const Json j = testecho_json({"--port", port_list(server), "--reply=stamp", "-n", "200"});
    check_clean(j, 200);
    CHECK(j["settings"]["reply"].string == "stamp");
    // Each message comes back as at least one "Echo=>... at <24 chars>".
    CHECK(j["bytes_received"].u64() >= 200 * (19 + 34));
}

TEST_CASE("--reply=stamp with large pipelined messages split over many chunks") {
    ServerProcess server({"--port", "0", "--reply=stamp"});
    const Json j = testecho_json({"--port", port_list(server), "--reply=stamp", "-c", "2", "-P", "2", "-s", "200k", "-n", "20"});
    check_clean(j, 20);
}

TEST_CASE("a plain echo is not mistaken for stamped replies") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "--reply=stamp", "-n", "8"}, 1);
    CHECK_FALSE(j["verified"].boolean);
    CHECK(j["errors"]["mismatch"].u64() >= 1);
}

TEST_CASE("the book's form: HOST WORD... runs 8 clients sending each word once") {
    ServerProcess server({"--port", "0", "--port", "0"});
    const RunResult r = testecho({"--port", port_list(server), "127.0.0.1", "spam", "eggs", "toast"});
    INFO("stderr: ", r.err);
    CHECK(r.status.ok());
    CHECK(r.out.find("24 messages completed") != std::string::npos);
    CHECK(r.out.find("verified: OK") != std::string::npos);
    CHECK(r.out.find("p99.9") != std::string::npos);
    CHECK(r.out.find("8 connections") != std::string::npos);
}

TEST_CASE("an unreachable server: connect errors and exit status 1") {
    const RefusingPort port;
    const Json j = testecho_json({"--port", port.number(), "-c", "3", "-n", "3"}, 1);
    CHECK_FALSE(j["verified"].boolean);
    CHECK(j["errors"]["connect"].u64() == 3);
    CHECK(j["first_error"].string.find("ECONNREFUSED") != std::string::npos);
}

TEST_CASE("SIGINT ends a long run early, still reports, and says it was interrupted (exit 1 unless allowed)") {
    for (const std::string procs : {"1", "2"}) {
        CAPTURE(procs);
        // One process exits 1 as an interrupted run does; the --procs run is allowed to be one.
        const bool allowed = procs == "2";
        ServerProcess server({"--port", "0", "--port", "0"});
        std::vector<std::string> args = {"--backend=" + backend(), "--port", port_list(server), "-c", "4",
                                         "--procs", procs, "-d", "120", "--json"};
        if (allowed) {
            args.emplace_back("--allow-interrupt");
        }
        ChildProcess run(env_path("TESTECHO_BIN"), args);
        // Traffic has begun once the server has echoed something: ask it (SIGUSR1) until it says so.
        const auto seen = server.ask_stats_until([](const Stats& s) { return s.bytes_out > 0; });
        REQUIRE((seen && seen->bytes_out > 0));
        REQUIRE(run.send_signal(SIGINT));
        const auto status = run.wait_exit(30s);  // far below -d 120: only the signal can end it this soon
        REQUIRE(status.has_value());
        run.wait_output_eof(5s);
        INFO("stderr: ", run.stderr_text());
        INFO("stdout: ", run.stdout_text());
        REQUIRE(status->exited);
        CHECK(status->code == (allowed ? 0 : 1));
        if (!allowed) {
            CHECK(run.stderr_text().find("interrupted") != std::string::npos);
        }
        const Json j = JsonReader(run.stdout_text()).document();
        CHECK(j["interrupted"].boolean);
        CHECK(j["verified"].boolean);
        CHECK(j["messages"].u64() > 0);
        CHECK(j["duration_s"].number < 60);
        CHECK(j["bytes_sent"].u64() == j["bytes_received"].u64());
    }
}

// ---- faulty echo peers ----

// A deliberately broken echo server on a thread of the test: it flips one byte, closes early,
// or never answers. Stopped by a byte on a pipe, so it never needs a timeout.
class FaultyPeer {
public:
    enum class Fault { flip_byte, close_early, silent, bad_chargen };

    explicit FaultyPeer(Fault fault) : fault_(fault) {
        listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (!listener_ || ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::listen(listener_.get(), 64) != 0 ||
            ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
            throw std::runtime_error("faulty peer: cannot listen");
        }
        port_ = ntohs(addr.sin_port);
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            throw std::runtime_error("faulty peer: pipe2");
        }
        stop_read_.reset(fds[0]);
        stop_write_.reset(fds[1]);
        thread_ = std::thread([this] { serve(); });
    }
    FaultyPeer(const FaultyPeer&) = delete;
    FaultyPeer& operator=(const FaultyPeer&) = delete;
    ~FaultyPeer() {
        const char byte = 'x';
        [[maybe_unused]] const ssize_t n = ::write(stop_write_.get(), &byte, 1);
        thread_.join();
    }

    std::uint16_t port() const noexcept { return port_; }

    // The stream offset of each connection whose byte is flipped.
    static constexpr std::size_t flipped_offset = 30;
    // bad_chargen: 100 RFC 864 lines (7400 bytes) at once, wrong at this offset, then silence.
    static constexpr std::size_t chargen_bad_offset = 5000;

    static std::string bad_chargen_stream() {
        std::string out;
        for (std::size_t line = 0; line < 100; ++line) {
            for (std::size_t i = 0; i < 72; ++i) {
                out += static_cast<char>(' ' + (line + i) % 95);
            }
            out += "\r\n";
        }
        out[chargen_bad_offset] = out[chargen_bad_offset] == 'x' ? 'y' : 'x';
        return out;
    }

private:
    struct Peer {
        UniqueFd fd;
        std::size_t offset = 0;
    };

    void serve() {
        std::vector<Peer> peers;
        char buf[65536];
        for (;;) {
            std::vector<pollfd> fds = {{stop_read_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
            for (const auto& p : peers) {
                fds.push_back({p.fd.get(), POLLIN, 0});
            }
            if (::poll(fds.data(), fds.size(), -1) < 0) {
                continue;
            }
            if (fds[0].revents != 0) {
                return;
            }
            // Peers first: accepting may grow `peers`, which the indexes below refer to.
            for (std::size_t i = peers.size(); i-- > 0;) {
                if (fds[i + 2].revents == 0) {
                    continue;
                }
                const ssize_t n = ::read(peers[i].fd.get(), buf, sizeof buf);
                if (n <= 0 || fault_ == Fault::close_early) {
                    peers.erase(peers.begin() + static_cast<std::ptrdiff_t>(i));
                    continue;
                }
                if (fault_ == Fault::flip_byte) {
                    const auto count = static_cast<std::size_t>(n);
                    if (peers[i].offset <= flipped_offset && flipped_offset < peers[i].offset + count) {
                        buf[flipped_offset - peers[i].offset] ^= 0x20;
                    }
                    peers[i].offset += count;
                    // Blocking socket and small test messages: the whole echo fits the send buffer.
                    [[maybe_unused]] const ssize_t w = ::write(peers[i].fd.get(), buf, count);
                }
            }
            if (fds[1].revents != 0) {
                UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (fd) {
                    if (fault_ == Fault::bad_chargen) {
                        const std::string stream = bad_chargen_stream();  // fits the socket buffer
                        [[maybe_unused]] const ssize_t w = ::write(fd.get(), stream.data(), stream.size());
                    }
                    peers.push_back({std::move(fd), 0});
                }
            }
        }
    }

    Fault fault_;
    UniqueFd listener_;
    UniqueFd stop_read_;
    UniqueFd stop_write_;
    std::uint16_t port_ = 0;
    std::thread thread_;
};

TEST_CASE("a peer that flips a byte: mismatch reported with connection and offset, exit 1") {
    FaultyPeer peer(FaultyPeer::Fault::flip_byte);
    const Json j = testecho_json({"--port", std::to_string(peer.port()), "-c", "2", "-n", "20"}, 1);
    CHECK_FALSE(j["verified"].boolean);
    CHECK(j["errors"]["mismatch"].u64() == 2);
    const std::string& first = j["first_error"].string;
    CHECK(first.find("conn ") == 0);
    CHECK(first.find("mismatch") != std::string::npos);
    CHECK(first.find("offset " + std::to_string(FaultyPeer::flipped_offset)) != std::string::npos);
}

TEST_CASE("a peer that closes early: counted as closed, exit 1") {
    FaultyPeer peer(FaultyPeer::Fault::close_early);
    const Json j = testecho_json({"--port", std::to_string(peer.port()), "-c", "2", "-n", "20"}, 1);
    CHECK_FALSE(j["verified"].boolean);
    CHECK(j["errors"]["closed"].u64() == 2);
    CHECK(j["messages"].u64() == 0);
}

TEST_CASE("a peer that never answers: timeout, exit 1") {
    FaultyPeer peer(FaultyPeer::Fault::silent);
    const Json j = testecho_json({"--port", std::to_string(peer.port()), "-c", "2", "-n", "4", "--timeout", "300ms"}, 1);
    CHECK_FALSE(j["verified"].boolean);
    CHECK(j["errors"]["timeout"].u64() == 2);
}

TEST_CASE("the human report on a failure names the first error") {
    FaultyPeer peer(FaultyPeer::Fault::flip_byte);
    const RunResult r = testecho({"--port", std::to_string(peer.port()), "-c", "1", "-n", "5"});
    CHECK(r.status.exited);
    CHECK(r.status.code == 1);
    CHECK(r.out.find("verified: FAILED: conn 0") != std::string::npos);
    CHECK(r.err.find("mismatch") != std::string::npos);
}

// ---- analysis: distributions, time series, fairness, warm-up, churn, one-way modes ----

// The lines of a text file.
std::vector<std::string> file_lines(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "r");
    REQUIRE_MESSAGE(f != nullptr, "cannot read ", path);
    std::string text;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) {
        text.append(buf, n);
    }
    std::fclose(f);
    return split_lines(text);
}

std::string temp_path(const std::string& name) {
    return "/tmp/echoplex-testecho-" + std::to_string(::getpid()) + "-" + name;
}

TEST_CASE("--hdr-out, --csv and the JSON intervals all add up to the JSON's totals") {
    ServerProcess server({"--port", "0"});
    const std::string hdr = temp_path("latency.hdr");
    const std::string csv = temp_path("series.csv");
    const Json j = testecho_json({"--port", port_list(server), "-c", "4", "-P", "2", "-s", "200", "-d", "1200ms",
                                  "--interval", "250ms", "--hdr-out", hdr, "--csv", csv});
    check_clean(j, 0);
    const std::uint64_t messages = j["messages"].u64();
    REQUIRE(messages > 0);

    // The HdrHistogram file: its header, rising percentiles, and a total count that is the messages.
    const auto hdr_lines = file_lines(hdr);
    ::unlink(hdr.c_str());
    REQUIRE(hdr_lines.size() > 5);
    CHECK(hdr_lines[0].find("Value") != std::string::npos);
    CHECK(hdr_lines[0].find("1/(1-Percentile)") != std::string::npos);
    bool found_total = false;
    for (const std::string& line : hdr_lines) {
        if (line.rfind("#[Max", 0) == 0) {
            found_total = line.find("Total count    = " + std::string(12 - std::to_string(messages).size(), ' ') +
                                    std::to_string(messages) + "]") != std::string::npos;
        }
    }
    CHECK_MESSAGE(found_total, "no '#[Max ..., Total count = ", messages, "]' line");

    // The intervals: about one per 250 ms of the 1.2 s window, adding up to the totals.
    const auto& intervals = j["intervals"].array;
    CHECK(intervals.size() >= 4);
    std::uint64_t sum_messages = 0;
    std::uint64_t sum_bytes = 0;
    double last_t = 0;
    for (const Json& i : intervals) {
        sum_messages += i["messages"].u64();
        sum_bytes += i["bytes"].u64();
        CHECK(i["t"].number >= last_t);
        last_t = i["t"].number;
        CHECK(i["errors"].u64() == 0);
        if (i["messages"].u64() > 0) {
            CHECK(i["latency_ms"]["p50"].number <= i["latency_ms"]["p99"].number);
            CHECK(i["latency_ms"]["p99"].number <= i["latency_ms"]["max"].number);
        }
    }
    CHECK(sum_messages == messages);
    CHECK(sum_bytes == j["bytes_received"].u64());
    CHECK(intervals[0]["open"].u64() == 4);
    CHECK(last_t == doctest::Approx(j["duration_s"].number).epsilon(0.01));

    // The CSV: a header and the same rows.
    const auto rows = file_lines(csv);
    ::unlink(csv.c_str());
    REQUIRE(rows.size() == intervals.size() + 1);
    CHECK(rows[0] == "t,messages,bytes,errors,open,p50_ms,p99_ms,max_ms");
    std::uint64_t csv_messages = 0;
    for (std::size_t r = 1; r < rows.size(); ++r) {
        const std::string& row = rows[r];
        const auto first = row.find(',');
        csv_messages += std::stoull(row.substr(first + 1, row.find(',', first + 1) - first - 1));
    }
    CHECK(csv_messages == messages);
    // The distribution in the JSON ends at 100% with the maximum.
    const auto& dist = j["latency_distribution"].array;
    REQUIRE(dist.size() > 2);
    CHECK(dist.back().array[0].number == 100.0);
    CHECK(dist.back().array[1].number == doctest::Approx(j["latency_ms"]["max"].number));
}

TEST_CASE("the live line shows each interval's figures, the same as the JSON series") {
    // The line is drawn only on a terminal: script(1) gives testecho one (stderr and stdout both).
    ServerProcess server({"--port", "0"});
    const std::string command = env_path("TESTECHO_BIN") + " --backend=" + backend() + " --port " + port_list(server) +
                                " -c 2 -d 1200ms --interval 300ms --json";
    const RunResult r = run_to_completion("/usr/bin/script", {"-q", "-e", "-c", command, "/dev/null"}, 30s);
    REQUIRE_MESSAGE(r.status.ok(), r.status.describe(), " ", r.err);
    const auto json_at = r.out.find('{');
    REQUIRE(json_at != std::string::npos);
    const std::string json_text = r.out.substr(json_at, r.out.find_last_of('}') - json_at + 1);
    const Json j = JsonReader(json_text).document();
    const auto& intervals = j["intervals"].array;
    const std::regex line(R"(\[ *([0-9.]+)s\] (\d+) open  (\d+) msgs  (\d+) msg/s)");
    const std::string progress = r.out.substr(0, json_at);
    std::size_t k = 0;
    std::uint64_t cumulative = 0;
    for (auto it = std::sregex_iterator(progress.begin(), progress.end(), line); it != std::sregex_iterator(); ++it, ++k) {
        REQUIRE(k < intervals.size());
        cumulative += intervals[k]["messages"].u64();
        const std::smatch& m = *it;
        CHECK(std::stoull(m[3].str()) == cumulative);
        CHECK(std::stoull(m[2].str()) == intervals[k]["open"].u64());
        CHECK(std::stod(m[4].str()) == doctest::Approx(intervals[k]["messages"].number / 0.3).epsilon(0.01));
    }
    // One line per interval of the window (the drain after it is the last entry, not drawn).
    CHECK(k >= 3);
    CHECK(k + 1 >= intervals.size());
}

TEST_CASE("--percentiles chooses the reported percentiles, in the table and in the JSON") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "2", "-n", "200", "--percentiles", "99.99,50"});
    CHECK(j["verified"].boolean);
    const auto& lat = j["latency_ms"];
    CHECK(lat.has("p50"));
    CHECK(lat.has("p99_99"));
    CHECK_FALSE(lat.has("p90"));
    CHECK(lat["p50"].number <= lat["p99_99"].number);
    CHECK(j["settings"]["percentiles"].array.size() == 2);
    const RunResult human = testecho({"--port", port_list(server), "-c", "2", "-n", "50", "--percentiles", "50,99.99"});
    CHECK(human.status.ok());
    CHECK(human.out.find("p99.99") != std::string::npos);
    CHECK(human.out.find("p90") == std::string::npos);
}

TEST_CASE("per-connection counts: the spread and Jain's index of a fair server") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "6", "-d", "600ms"});
    check_clean(j, 0);
    const Json& per = j["per_connection"];
    CHECK(per["count"].u64() == 6);
    CHECK(per["min"].number <= per["p50"].number);
    CHECK(per["p50"].number <= per["max"].number);
    CHECK(per["max"].number * 6 >= j["messages"].number);
    CHECK(per["min"].number * 6 <= j["messages"].number);
    // Lockstep clients of one loop get their turns: no connection starves another.
    CHECK(per["jain"].number > 0.8);
    CHECK(per["jain"].number <= 1.0);
    REQUIRE(per["slowest"].array.size() == 3);
    CHECK(per["slowest"].array[0]["messages"].number == per["min"].number);
}

TEST_CASE("--warmup: the measured window starts after it, and only the window is counted") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "2", "-d", "800ms", "--warmup", "500ms",
                                  "--interval", "200ms"});
    check_clean(j, 0);
    CHECK(j["settings"]["warmup_s"].number == 0.5);
    // The window is -d long (plus the drain); the warm-up before it is not in the duration.
    CHECK(j["duration_s"].number >= 0.8);
    CHECK(j["duration_s"].number < 1.3);
    std::uint64_t sum = 0;
    for (const Json& i : j["intervals"].array) {
        sum += i["messages"].u64();
    }
    CHECK(sum == j["messages"].u64());
    // Bytes too count from the window: its messages', and at most one echo per connection sent
    // in the warm-up and still arriving when the window opened.
    CHECK(j["bytes_received"].u64() >= j["messages"].u64() * 19);
    CHECK(j["bytes_received"].u64() <= (j["messages"].u64() + 2) * 19);
}

TEST_CASE("--reconnect-every: each connection reopens after N messages; every connect is a sample") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "2", "-n", "200", "--reconnect-every", "10"});
    check_clean(j, 200);
    // 100 messages per connection, 10 per connect.
    CHECK(j["connections"]["established"].u64() == 20);
    CHECK(j["connect_ms"]["count"].u64() == 20);
    CHECK(j["per_connection"]["min"].u64() == 100);
}

TEST_CASE("--mode=discard: upload throughput to a discard service; a peer that answers is caught") {
    ServerProcess server({"--port", "0", "--port", "0/discard"});
    const std::string echo = std::to_string(server.port(0));
    const std::string discard = std::to_string(server.port(1));
    const Json j = testecho_json({"--port", discard, "--mode", "discard", "-c", "2", "-s", "16k", "-d", "500ms"});
    CHECK(j["verified"].boolean);
    CHECK(j["settings"]["mode"].string == "discard");
    CHECK(j["messages"].u64() > 0);
    CHECK(j["bytes_received"].u64() == 0);
    CHECK(j["bytes_sent"].u64() >= j["messages"].u64() * 16384);
    CHECK(j["gbit_per_s"].number > 0);
    // No echoes, so no latency: null, never 0.
    CHECK(j["latency_ms"]["count"].u64() == 0);
    CHECK(j["latency_ms"]["p50"].type == Json::Type::null);
    CHECK(j["latency_ms"]["max"].type == Json::Type::null);
    // Past one writable event's budget (1 MiB): the upload goes on until the count is sent.
    const Json many = testecho_json({"--port", discard, "--mode", "discard", "-c", "2", "-s", "64k", "-n", "128"});
    CHECK(many["verified"].boolean);
    CHECK(many["messages"].u64() == 128);
    CHECK(many["bytes_sent"].u64() == 128 * 65536);
    const RunResult human = testecho({"--port", discard, "--mode", "discard", "-c", "1", "-n", "10"});
    CHECK(human.status.ok());
    CHECK(human.out.find("latency summary (msec, 0 samples):") != std::string::npos);
    CHECK(human.out.find("\n          -         -         -         -         -         -         -\n") !=
          std::string::npos);

    // The echo service answers: as a discard peer it is wrong from the first byte back.
    const Json bad = testecho_json({"--port", echo, "--mode", "discard", "-c", "2", "-s", "1k", "-d", "300ms"}, 1);
    CHECK_FALSE(bad["verified"].boolean);
    CHECK(bad["errors"]["mismatch"].u64() == 2);
    CHECK(bad["first_error"].string.find("offset 0:") != std::string::npos);
    CHECK(bad["first_error"].string.find("came back from a discard peer") != std::string::npos);
}

TEST_CASE("--mode=chargen: download throughput, every line verified; a faulty chargen peer is caught at its offset") {
    ServerProcess server({"--port", "0/chargen"});
    const Json j = testecho_json({"--port", port_list(server), "--mode", "chargen", "-c", "2", "-d", "400ms"});
    CHECK(j["verified"].boolean);
    CHECK(j["messages"].u64() > 100);  // lines
    CHECK(j["bytes_sent"].u64() == 0);
    CHECK(j["mib_per_s"].number > 0);
    CHECK(j["latency_ms"]["p99"].type == Json::Type::null);
    // -n counts lines.
    const Json lines = testecho_json({"--port", port_list(server), "--mode", "chargen", "-c", "2", "-n", "1000"});
    CHECK(lines["verified"].boolean);
    CHECK(lines["messages"].u64() >= 1000);

    FaultyPeer peer(FaultyPeer::Fault::bad_chargen);
    const Json bad = testecho_json({"--port", std::to_string(peer.port()), "--mode", "chargen", "-c", "1", "-d", "2s"}, 1);
    CHECK_FALSE(bad["verified"].boolean);
    CHECK(bad["errors"]["mismatch"].u64() == 1);
    CHECK(bad["first_error"].string.find("offset " + std::to_string(FaultyPeer::chargen_bad_offset) + ":") !=
          std::string::npos);
    CHECK(bad["messages"].u64() == FaultyPeer::chargen_bad_offset / 74);  // the lines before it
}

TEST_CASE("honest output: JSON stays valid for any message bytes; a report that cannot be written is exit 1") {
    ServerProcess server({"--port", "0"});
    const Json j = testecho_json({"--port", port_list(server), "-c", "1", "-n", "5", "-m", "\xff\xfe"});
    CHECK(j["verified"].boolean);
    CHECK(j["settings"]["message"].type == Json::Type::null);
    CHECK(j["settings"]["message_hex"].string == "fffe");
    const Json utf8 = testecho_json({"--port", port_list(server), "-c", "1", "-n", "5", "-m", "caf\xc3\xa9"});
    CHECK(utf8["settings"]["message"].string == "caf\xc3\xa9");

    const RunResult full = run_to_completion("/bin/sh", {"-c", "exec \"$0\" --backend=" + backend() + " --port " +
                                                                 port_list(server) + " -c 1 -n 5 > /dev/full",
                                                         env_path("TESTECHO_BIN")},
                                             30s);
    CHECK(full.status.exited);
    CHECK(full.status.code == 1);
    CHECK(full.err.find("writing the report to stdout") != std::string::npos);
    // A file that cannot be created fails before the run, not after it.
    const RunResult nowhere = testecho({"--port", port_list(server), "-c", "1", "-n", "5", "--hdr-out", "/nonexistent/x"});
    CHECK(nowhere.status.code == 1);
    CHECK(nowhere.err.find("--hdr-out /nonexistent/x") != std::string::npos);
    CHECK(nowhere.out.empty());
}

// ---- command line ----

TEST_CASE("usage errors exit 2 with one line on stderr; --help and --version exit 0") {
    for (const std::vector<std::string>& bad : {std::vector<std::string>{"-d", "1s", "-n", "5"},
                                                 {"--bogus"},
                                                 {"-c", "0"},
                                                 {"-s", "1k", "--message", "x"},
                                                 {"--procs", "9", "-c", "8"},
                                                 {"--reply", "loud"},
                                                 {"--warmup", "1s", "-n", "10"},
                                                 {"--mode", "chargen", "-s", "10"},
                                                 {"--mode", "chargen", "-P", "4"},
                                                 {"--mode", "upload"},
                                                 {"--mode", "discard", "--reply", "stamp"},
                                                 {"--percentiles", "0"},
                                                 {"--percentiles", "50,100"},
                                                 {"--percentiles", "fifty"},
                                                 {"--interval", "0"},
                                                 {"--reconnect-every", "0"}}) {
        const RunResult r = testecho(bad);
        INFO("args: ", bad.front());
        CHECK(r.status.exited);
        CHECK(r.status.code == 2);
        CHECK(r.out.empty());
        CHECK(split_lines(r.err).size() == 1);
        CHECK(r.err.find("testecho: ") == 0);
    }
    const RunResult help = testecho({"--help"});
    CHECK(help.status.ok());
    CHECK(help.out.find("--pipeline") != std::string::npos);
    const RunResult version = testecho({"-V"});
    CHECK(version.status.ok());
    CHECK(version.out.find("testecho ") == 0);
}

// ---- echo-client ----

TEST_CASE("echo-client prints each reply, in echo and in stamp mode") {
    ServerProcess echo({"--port", "0"});
    const RunResult plain = run_to_completion(env_path("ECHO_CLIENT_BIN"),
                                              {"--port", std::to_string(echo.port()), "127.0.0.1", "spam", "eggs"}, 30s);
    INFO("stderr: ", plain.err);
    CHECK(plain.status.ok());
    CHECK(plain.out == "Client received: spam\nClient received: eggs\n");

    ServerProcess stamp({"--port", "0", "--reply=stamp"});
    const RunResult book =
        run_to_completion(env_path("ECHO_CLIENT_BIN"), {"--port", std::to_string(stamp.port()), "127.0.0.1"}, 30s);
    CHECK(book.status.ok());
    const auto lines = split_lines(book.out);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("Client received: Echo=>Hello network world at ") == 0);
    CHECK(lines[0].size() == std::string("Client received: Echo=>Hello network world at ").size() + 24);
}

TEST_CASE("echo-client: a server that never answers is a timeout, said as one") {
    FaultyPeer peer(FaultyPeer::Fault::silent);
    const RunResult r = run_to_completion(env_path("ECHO_CLIENT_BIN"),
                                          {"--port", std::to_string(peer.port()), "--timeout", "300ms", "127.0.0.1", "hi"}, 30s);
    CHECK(r.status.exited);
    CHECK(r.status.code == 1);
    const auto lines = split_lines(r.err);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "echo-client: waiting for the reply (0 of 2 bytes back; --timeout waits longer): timed out");
}

TEST_CASE("echo-client: no server is exit 1 with the errno") {
    const RefusingPort port;
    const RunResult r = run_to_completion(env_path("ECHO_CLIENT_BIN"), {"--port", port.number(), "127.0.0.1"}, 30s);
    CHECK(r.status.exited);
    CHECK(r.status.code == 1);
    CHECK(r.err.find("ECONNREFUSED") != std::string::npos);
}

}  // namespace
}  // namespace echoplex::test
