// run_load against an echo server on the same loop: a name's addresses are tried in turn, and the
// result says which one was used. The addresses are built by hand, so the test does not depend
// on what this machine's /etc/hosts says localhost is.
#include "load_run.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/net/tcp_server.hpp"
#include "echoplex/services/services.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::testecho {
namespace {

Address loopback(const char* ip, std::uint16_t port) {
    Address a;
    auto* in = reinterpret_cast<sockaddr_in*>(&a.address);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    REQUIRE(::inet_pton(AF_INET, ip, &in->sin_addr) == 1);
    a.length = sizeof(sockaddr_in);
    a.text = std::string(ip) + ":" + std::to_string(port);
    return a;
}

struct Setup {
    std::unique_ptr<EventLoop> loop;
    std::unique_ptr<TcpServer> server;
    std::uint16_t port = 0;
    LoadSettings settings;

    Setup() {
        auto created = EventLoop::create(test::backend_under_test());
        REQUIRE(created.has_value());
        loop = std::move(created).value();
        TcpServerOptions options;
        options.endpoints.push_back(Endpoint{{"127.0.0.1"}, 0, "echo", services::find("echo")->factory});
        auto made = TcpServer::create(*loop, std::move(options));
        REQUIRE(made.has_value());
        server = std::move(made).value();
        const std::string address = server->addresses().front();
        port = static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
        settings.backend = test::backend_under_test();
        settings.host = "dual.test";
        settings.ports = {port};
        settings.connections = 6;
        settings.total_connections = 6;
        settings.requests = 60;
        settings.messages = {"hello"};
        settings.timeout_s = 5;
    }
    ~Setup() { server.reset(); }

    // One target named dual.test that resolved to these addresses, in this order.
    std::vector<Target> targets(const std::vector<const char*>& ips) const {
        std::vector<Target> out(1);
        out[0].name = "dual.test:" + std::to_string(port);
        for (const char* ip : ips) {
            out[0].candidates.push_back(loopback(ip, port));
        }
        return out;
    }
};

TEST_CASE("an address that refuses is skipped: every client ends on the next, and the result names it") {
    Setup s;
    // 127.0.0.2 is loopback too, but nothing listens there on this port: ECONNREFUSED.
    auto targets = s.targets({"127.0.0.2", "127.0.0.1"});
    auto result = run_load(*s.loop, s.settings, targets, {});
    REQUIRE(result.has_value());
    CHECK_MESSAGE(result->verified(), result->first_error);
    CHECK(result->established == 6);
    CHECK(result->errors.connect == 0);
    CHECK(result->messages == 60);
    REQUIRE(result->addresses.size() == 1);
    CHECK(result->addresses[0].resolved ==
          std::vector<std::string>{"127.0.0.2:" + std::to_string(s.port), "127.0.0.1:" + std::to_string(s.port)});
    CHECK(result->addresses[0].used == "127.0.0.1:" + std::to_string(s.port));
    CHECK(targets[0].preferred == 1);  // later clients start at the address that worked
}

TEST_CASE("when every address refuses, each connection fails once, saying all were tried") {
    Setup s;
    auto targets = s.targets({"127.0.0.2", "127.0.0.3"});
    auto result = run_load(*s.loop, s.settings, targets, {});
    REQUIRE(result.has_value());
    CHECK_FALSE(result->verified());
    CHECK(result->established == 0);
    CHECK(result->errors.connect == 6);
    CHECK(result->first_error.find("ECONNREFUSED") != std::string::npos);
    CHECK(result->first_error.find("(tried all 2 addresses)") != std::string::npos);
    REQUIRE(result->addresses.size() == 1);
    CHECK(result->addresses[0].used.empty());
}

}  // namespace
}  // namespace echoplex::testecho
