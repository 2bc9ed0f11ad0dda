// The classic services through the real TCP server, on every backend: echo is byte-exact,
// discard answers nothing and stays open, chargen's lines follow RFC 864, daytime sends one
// line and closes, and a chargen client that does not read is held by backpressure.
#include "echoplex/services/services.hpp"

#include <sys/socket.h>

#include <random>
#include <regex>
#include <string>

#include "echoplex/net/connection.hpp"
#include "echoplex/net/reactor_stream.hpp"
#include "echoplex/services/chargen.hpp"
#include "echoplex/services/daytime.hpp"
#include "support/doctest.hpp"
#include "support/in_process_server.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

InProcessServer serving(std::string_view name) {
    const services::Service* service = services::find(name);
    REQUIRE(service != nullptr);
    TcpServerOptions options;
    options.endpoints.push_back(Endpoint{{"127.0.0.1"}, 0, std::string(name), service->factory});
    return InProcessServer(std::move(options));
}

TEST_CASE("the table names every service once, and unknown names are not found") {
    std::vector<std::string_view> names;
    for (const auto& service : services::all()) {
        names.push_back(service.name);
        CHECK(services::find(service.name) == &service);
        CHECK(service.factory() != nullptr);
    }
    CHECK(names == std::vector<std::string_view>{"echo", "stamp", "discard", "chargen", "daytime"});
    CHECK(services::find("qotd") == nullptr);
}

TEST_CASE("echo sends back every byte, in order") {
    InProcessServer s = serving("echo");
    const UniqueFd client = s.connect();
    std::mt19937 rng(7);
    std::string data(1 << 20, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    std::size_t sent = 0;
    std::string back;
    CHECK(run_until(*s.loop, [&] {
        send_some(client.get(), data, sent);
        back += read_available(client.get());
        return back.size() >= data.size();
    }, 20000, 5ms));
    CHECK(back == data);
}

TEST_CASE("discard reads everything, answers nothing and keeps the connection open") {
    InProcessServer s = serving("discard");
    const UniqueFd client = s.connect();
    const std::string data(512 * 1024, 'd');
    std::size_t sent = 0;
    std::string back;
    bool closed = false;
    CHECK(run_until(*s.loop, [&] {
        send_some(client.get(), data, sent);
        back += read_available(client.get(), &closed);
        return s.server->stats_line().find("bytes_in=" + std::to_string(data.size()) + " ") != std::string::npos;
    }, 20000, 5ms));
    CHECK(back.empty());
    CHECK_FALSE(closed);
    CHECK(s.server->stats_line().find("bytes_out=0 ") != std::string::npos);
    CHECK(s.server->stats_line().find("open=1 ") != std::string::npos);
    // Our EOF ends it: the server closes in turn, having sent nothing.
    ::shutdown(client.get(), SHUT_WR);
    CHECK(s.read_until(client.get(), back, closed, [](const std::string&, bool c) { return c; }));
    CHECK(back.empty());
}

TEST_CASE("chargen sends RFC 864's rotating 72-character lines for as long as the client reads") {
    InProcessServer s = serving("chargen");
    const UniqueFd client = s.connect();
    write_all(client.get(), "ignored input\n");
    constexpr std::size_t lines = 1000;  // more than ten turns of the 95-character alphabet
    std::string got;
    bool closed = false;
    CHECK(s.read_until(client.get(), got, closed,
                       [](const std::string& r, bool) { return r.size() >= lines * 74; }, 20000));
    CHECK_FALSE(closed);
    for (std::size_t i = 0; i < lines; ++i) {
        const std::string line = got.substr(i * 74, 74);
        REQUIRE_MESSAGE(line == services::Chargen::line(i), "line ", i);
    }
    // The pattern itself: printable ASCII starting one further on each line, CRLF-ended.
    CHECK(services::Chargen::line(0).starts_with(" !\"#$%&'()*+,-./0123456789"));
    CHECK(services::Chargen::line(1).starts_with("!\"#$"));
    CHECK(services::Chargen::line(94).starts_with("~ !\""));
    CHECK(services::Chargen::line(95) == services::Chargen::line(0));
    CHECK(services::Chargen::line(0).size() == 74);
    CHECK(services::Chargen::line(0).ends_with("\r\n"));
}

TEST_CASE("daytime sends one line with the date and time, then closes") {
    InProcessServer s = serving("daytime");
    const UniqueFd client = s.connect();
    std::string got;
    bool closed = false;
    CHECK(s.read_until(client.get(), got, closed, [](const std::string&, bool c) { return c; }));
    MESSAGE(got);
    static const std::regex shape(R"([A-Z][a-z]+day, [A-Z][a-z]+ [0-9]{2}, [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}-[A-Za-z0-9+-]+\r\n)");
    CHECK(std::regex_match(got, shape));
    CHECK(services::Daytime::line(0).find("1970") != std::string::npos);
}

struct ClosedOwner final : ConnectionOwner {
    int closes = 0;
    void connection_closed(Connection&, std::string_view) override { ++closes; }
};

TEST_CASE("a chargen client that never reads is held by backpressure: queued output stays bounded") {
    auto created = EventLoop::create(backend_under_test());
    REQUIRE(created.has_value());
    std::unique_ptr<EventLoop> loop = std::move(created).value();
    SocketPair pair = connected_pair(Transport::tcp_loopback);
    const int small = 4096;
    REQUIRE(::setsockopt(pair.b.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    BlockPool pool;
    ServerStats stats;
    ConnectionLimits limits;
    ClosedOwner owner;
    const ConnectionContext context{*loop, limits, pool, stats, owner};
    Connection conn(context, make_socket_stream(*loop, std::move(pair.b), pool), services::find("chargen")->factory());
    REQUIRE(conn.start());
    // Until the kernel's buffers are full and the sends stop.
    std::uint64_t last_out = 0;
    int still = 0;
    CHECK(run_until(*loop, [&] {
        still = stats.bytes_out == last_out ? still + 1 : 0;
        last_out = stats.bytes_out;
        return still >= 50;
    }, 20000, 1ms));
    // Lines are made only when the output has room: at most the low watermark plus one batch.
    CHECK(conn.queued_bytes() <= limits.low_watermark + 16 * 1024);
    CHECK(conn.queued_bytes() > 0);
    CHECK(owner.closes == 0);
    const std::size_t queued = conn.queued_bytes();
    for (int i = 0; i < 200; ++i) {
        REQUIRE(loop->run_once(0ms));
    }
    CHECK(conn.queued_bytes() == queued);  // nothing more is made while nothing is taken
    // The client reads: the lines flow again.
    std::string got = read_available(pair.a.get());
    CHECK(run_until(*loop, [&] {
        got += read_available(pair.a.get());
        return got.size() > last_out + 100000;
    }, 20000, 1ms));
}

}  // namespace
}  // namespace echoplex::test
