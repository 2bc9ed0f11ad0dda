// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2): what a load balancer
// sends first on each connection it forwards, naming the client it forwards for. This is only the
// parser, pure and incremental: it is given the bytes received so far and says whether they hold
// a complete header, need more, or cannot be one. ProxyGate (proxy_gate.hpp) puts it in front of
// a protocol.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace echoplex {

// The longest version 1 line, "PROXY UNKNOWN <39> <39> 65535 65535\r\n" (the specification's 107).
constexpr std::size_t proxy_v1_max = 107;
// A version 2 header: 16 bytes, then as many as its length field says (addresses, then TLVs).
constexpr std::size_t proxy_v2_fixed = 16;
// Enough of the stream's first bytes to decide every header: a whole version 1 line, or a version
// 2 header's fixed part and its largest address block (two AF_UNIX paths of 108 bytes).
constexpr std::size_t proxy_prefix_max = proxy_v2_fixed + 216;

struct ProxyHeader {
    int version = 0;  // 1 or 2
    // false: the sender speaks for itself (v2 LOCAL, a health check) or for a client it cannot
    // name (v1 UNKNOWN, v2 UNSPEC or AF_UNIX): the connection's own addresses stand.
    bool has_addresses = false;
    std::string source;       // the client, "192.0.2.1:56324" or "[2001:db8::1]:56324"
    std::string destination;  // the address the client connected to, the same way
    std::size_t length = 0;   // bytes of the stream the header takes
};

enum class ProxyParseStatus { incomplete, complete, invalid };

struct ProxyParse {
    ProxyParseStatus status = ProxyParseStatus::incomplete;
    ProxyHeader header;   // when complete
    std::string problem;  // when invalid: what is wrong, in words for a log line (never the bytes)
};

// `prefix`: the first min(available, proxy_prefix_max) bytes of the stream; `available`: how many
// bytes have arrived in all (a version 2 header's TLVs need not be in the prefix). A prefix that
// can no longer begin a valid header is invalid at once, however short.
ProxyParse parse_proxy_header(std::string_view prefix, std::size_t available);

}  // namespace echoplex
