// The PROXY protocol header parser: versions 1 and 2 as HAProxy sends them, every prefix of a
// valid header incomplete (never invalid), and what the specification rules out rejected.
#include "echoplex/net/proxy_header.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include "support/doctest.hpp"

namespace echoplex {
namespace {

ProxyParse parse(const std::string& bytes) { return parse_proxy_header(bytes, bytes.size()); }

// A version 2 header: signature, version 2 and `command`, `family_transport`, then `body`
// (addresses and TLVs) with its length.
std::string v2(unsigned command, unsigned family_transport, const std::string& body) {
    std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
    h += static_cast<char>(0x20U | command);
    h += static_cast<char>(family_transport);
    h += static_cast<char>((body.size() >> 8U) & 0xffU);
    h += static_cast<char>(body.size() & 0xffU);
    return h + body;
}

std::string bytes(std::initializer_list<unsigned> values) {
    std::string out;
    for (const unsigned v : values) {
        out += static_cast<char>(v);
    }
    return out;
}

// Every proper prefix of `header` is incomplete, and the whole header complete.
void check_prefixes(const std::string& header) {
    for (std::size_t n = 0; n < header.size(); ++n) {
        const ProxyParse part = parse(header.substr(0, n));
        INFO("prefix of ", n, " bytes");
        REQUIRE(part.status == ProxyParseStatus::incomplete);
    }
    REQUIRE(parse(header).status == ProxyParseStatus::complete);
}

TEST_CASE("a version 1 TCP4 header names the client and the address it connected to") {
    const std::string header = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    const ProxyParse p = parse(header + "hello");
    REQUIRE(p.status == ProxyParseStatus::complete);
    CHECK(p.header.version == 1);
    CHECK(p.header.has_addresses);
    CHECK(p.header.source == "192.0.2.1:56324");
    CHECK(p.header.destination == "198.51.100.7:443");
    CHECK(p.header.length == header.size());  // what follows is the client's
    check_prefixes(header);
}

TEST_CASE("a version 1 TCP6 header, the longest TCP6 one, and the longest line the specification allows (107 bytes)") {
    const ProxyParse p = parse("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    REQUIRE(p.status == ProxyParseStatus::complete);
    CHECK(p.header.source == "[2001:db8::1]:1");
    CHECK(p.header.destination == "[::1]:65535");
    const std::string addresses = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    const std::string tcp6 = "PROXY TCP6 " + addresses;
    CHECK(parse(tcp6).header.source == "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    check_prefixes(tcp6);
    // The specification's 107 bytes: the same line under UNKNOWN, whose rest is ignored.
    const std::string longest = "PROXY UNKNOWN " + addresses;
    REQUIRE(longest.size() == proxy_v1_max);
    check_prefixes(longest);
}

TEST_CASE("a version 1 UNKNOWN header keeps the connection's own addresses, whatever follows it on the line") {
    for (const std::string header : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"}) {
        const ProxyParse p = parse(header);
        REQUIRE(p.status == ProxyParseStatus::complete);
        CHECK_FALSE(p.header.has_addresses);
        CHECK(p.header.length == header.size());
    }
}

TEST_CASE("version 1 headers the specification rules out are invalid") {
    const std::vector<std::string> bad = {
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n",        // a port missing
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443 1\r\n",  // a field too many
        "PROXY TCP4 192.0.2.1  198.51.100.7 56324 443\r\n",   // two spaces
        "PROXY TCP4 2001:db8::1 198.51.100.7 56324 443\r\n",  // IPv6 under TCP4
        "PROXY TCP6 192.0.2.1 ::1 56324 443\r\n",             // IPv4 under TCP6
        "PROXY TCP4 192.0.2.1 198.51.100.7 65536 443\r\n",    // a port out of range
        "PROXY TCP4 192.0.2.1 198.51.100.7 -1 443\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 80x 443\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\n",      // a bare LF
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\rX",     // a CR not followed by LF
        "PROXY UDP4 192.0.2.1 198.51.100.7 56324 443\r\n",    // not a stream
        "PROXY\r\n",
        "proxy TCP4 192.0.2.1 198.51.100.7 56324 443\r\n",    // the keyword is upper case
    };
    for (const std::string& header : bad) {
        INFO(header);
        const ProxyParse p = parse(header);
        CHECK(p.status == ProxyParseStatus::invalid);
        CHECK_FALSE(p.problem.empty());
        CHECK(p.problem.find("192.0.2.1") == std::string::npos);  // the problem never quotes the bytes
    }
}

TEST_CASE("a version 1 line with no CRLF within 107 bytes is invalid as soon as the 107th byte arrives") {
    const std::string line = "PROXY UNKNOWN " + std::string(200, 'x');
    CHECK(parse(line.substr(0, proxy_v1_max - 1)).status == ProxyParseStatus::incomplete);
    CHECK(parse(line.substr(0, proxy_v1_max)).status == ProxyParseStatus::invalid);
    CHECK(parse(line).status == ProxyParseStatus::invalid);
}

TEST_CASE("bytes that cannot begin a header are invalid at once, however few") {
    for (const std::string start : {"G", "GET / HTTP/1.1\r\n", "PROXX", "\r\n\r\nX", "PROXY TCP5", "PROXY X"}) {
        INFO(start);
        CHECK(parse(start).status == ProxyParseStatus::invalid);
    }
    CHECK(parse(std::string("\0", 1)).status == ProxyParseStatus::invalid);
    CHECK(parse("").status == ProxyParseStatus::incomplete);
}

TEST_CASE("a version 2 PROXY header over TCP4 and TCP6, with TLVs, which are skipped") {
    const std::string tlvs = bytes({0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x00});  // ALPN "h2", NOOP empty
    const std::string v4 = v2(1, 0x11, bytes({192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb}) + tlvs);
    ProxyParse p = parse(v4 + "payload");
    REQUIRE(p.status == ProxyParseStatus::complete);
    CHECK(p.header.version == 2);
    CHECK(p.header.has_addresses);
    CHECK(p.header.source == "192.0.2.1:56324");
    CHECK(p.header.destination == "198.51.100.7:443");
    CHECK(p.header.length == v4.size());
    check_prefixes(v4);

    std::string six_addresses(32, '\0');
    six_addresses[0] = 0x20;
    six_addresses[1] = 0x01;
    six_addresses[2] = 0x0d;
    six_addresses[3] = static_cast<char>(0xb8);
    six_addresses[15] = 1;  // 2001:db8::1
    six_addresses[31] = 1;  // ::1
    const std::string v6 = v2(1, 0x21, six_addresses + bytes({0x00, 0x50, 0x1f, 0x90}));
    p = parse(v6);
    REQUIRE(p.status == ProxyParseStatus::complete);
    CHECK(p.header.source == "[2001:db8::1]:80");
    CHECK(p.header.destination == "[::1]:8080");
    check_prefixes(v6);
}

TEST_CASE("version 2 LOCAL (health checks) and UNSPEC keep the connection's own addresses") {
    for (const std::string& header : {v2(0, 0x00, ""), v2(0, 0x11, std::string(12, '\x7f')), v2(1, 0x00, ""),
                                      v2(1, 0x00, bytes({0x04, 0x00, 0x00})), v2(1, 0x31, std::string(216, 'u'))}) {
        const ProxyParse p = parse(header);
        REQUIRE(p.status == ProxyParseStatus::complete);
        CHECK_FALSE(p.header.has_addresses);
        CHECK(p.header.length == header.size());
    }
}

TEST_CASE("a version 2 header waits for all its TLVs, however long, but is judged on its first 16 bytes") {
    const std::string big = v2(1, 0x11, std::string(12, '\x01') + std::string(60000, '\0'));
    const std::string prefix = big.substr(0, proxy_prefix_max);
    CHECK(parse_proxy_header(prefix, 30000).status == ProxyParseStatus::incomplete);
    const ProxyParse p = parse_proxy_header(prefix, big.size());
    REQUIRE(p.status == ProxyParseStatus::complete);
    CHECK(p.header.length == big.size());
    // A bad version or command is known from the fixed part alone.
    std::string bad = v2(1, 0x11, std::string(12, '\x01'));
    bad[12] = 0x11;
    CHECK(parse_proxy_header(bad.substr(0, 16), 16).status == ProxyParseStatus::invalid);
}

TEST_CASE("version 2 headers the specification rules out are invalid") {
    const std::string four = std::string(12, '\x01');
    std::vector<std::string> bad = {
        v2(2, 0x11, four),                 // command 2
        v2(1, 0x12, four),                 // UDP
        v2(1, 0x41, four),                 // family 4
        v2(1, 0x11, four.substr(0, 11)),   // shorter than IPv4's addresses
        v2(1, 0x21, std::string(35, 'a')), // shorter than IPv6's
    };
    std::string version1 = v2(1, 0x11, four);
    version1[12] = 0x11;  // version 1 in a version 2 signature
    bad.push_back(version1);
    for (const std::string& header : bad) {
        CHECK(parse(header).status == ProxyParseStatus::invalid);
    }
}

}  // namespace
}  // namespace echoplex
