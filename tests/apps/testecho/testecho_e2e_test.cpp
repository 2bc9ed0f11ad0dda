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
        Json v = value();
        skip_space();
        if (pos_ != text_.size()) {
            fail("trailing text");
        }
        return v;
    }

private:
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
        out += (out.empty() ? "" : ",") + std::to_string(port);
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

TEST_CASE("SIGINT ends a long run early and still reports, with one process and with --procs") {
    for (const std::string procs : {"1", "2"}) {
        CAPTURE(procs);
        ServerProcess server({"--port", "0", "--port", "0"});
        ChildProcess run(env_path("TESTECHO_BIN"), {"--backend=" + backend(), "--port", port_list(server), "-c", "4",
                                                    "--procs", procs, "-d", "120", "--json"});
        // Traffic has begun once the server has echoed something: ask it (SIGUSR1) until it says so.
        const auto seen = server.ask_stats_until([](const Stats& s) { return s.bytes_out > 0; });
        REQUIRE((seen && seen->bytes_out > 0));
        REQUIRE(run.send_signal(SIGINT));
        const auto status = run.wait_exit(30s);  // far below -d 120: only the signal can end it this soon
        REQUIRE(status.has_value());
        run.wait_output_eof(5s);
        INFO("stderr: ", run.stderr_text());
        INFO("stdout: ", run.stdout_text());
        REQUIRE_MESSAGE(status->ok(), status->describe());
        const Json j = JsonReader(run.stdout_text()).document();
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
    enum class Fault { flip_byte, close_early, silent };

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

// ---- command line ----

TEST_CASE("usage errors exit 2 with one line on stderr; --help and --version exit 0") {
    for (const std::vector<std::string>& bad : {std::vector<std::string>{"-d", "1s", "-n", "5"},
                                                 {"--bogus"},
                                                 {"-c", "0"},
                                                 {"-s", "1k", "--message", "x"},
                                                 {"--procs", "9", "-c", "8"},
                                                 {"--reply", "loud"}}) {
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
