// PROXY protocol header parser, versions 1 (text) and 2 (binary).
#include "echoplex/net/proxy_header.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <vector>

namespace echoplex {
namespace {

constexpr std::string_view v1_signature = "PROXY ";
constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};

ProxyParse invalid(std::string problem) { return {ProxyParseStatus::invalid, {}, std::move(problem)}; }
ProxyParse incomplete() { return {}; }

// `text` (an address family's numeric form) and a port, as the server writes peers.
std::string with_port(int family, const void* address, std::uint16_t port) {
    std::array<char, INET6_ADDRSTRLEN> host{};
    ::inet_ntop(family, address, host.data(), host.size());
    const std::string text(host.data());
    return family == AF_INET6 ? "[" + text + "]:" + std::to_string(port) : text + ":" + std::to_string(port);
}

// A decimal port, 0 to 65535, digits only.
bool parse_port(std::string_view text, std::uint16_t& port) {
    if (text.empty() || text.size() > 5) {
        return false;
    }
    unsigned value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value > 65535) {
        return false;
    }
    port = static_cast<std::uint16_t>(value);
    return true;
}

std::vector<std::string_view> split_spaces(std::string_view line) {
    std::vector<std::string_view> fields;
    while (true) {
        const auto space = line.find(' ');
        fields.push_back(line.substr(0, space));
        if (space == std::string_view::npos) {
            return fields;
        }
        line.remove_prefix(space + 1);
    }
}

// "TCP4 192.0.2.1 198.51.100.1 56324 443" (what follows "PROXY ", without the CRLF).
ProxyParse parse_v1_fields(std::string_view line, std::size_t length) {
    ProxyParse done{ProxyParseStatus::complete, {}, {}};
    done.header.version = 1;
    done.header.length = length;
    const auto fields = split_spaces(line);
    if (fields[0] == "UNKNOWN") {
        return done;  // the rest of the line is to be ignored
    }
    if (fields[0] != "TCP4" && fields[0] != "TCP6") {
        return invalid("version 1 header with an unknown protocol (TCP4, TCP6 or UNKNOWN expected)");
    }
    if (fields.size() != 5) {
        return invalid("version 1 header without exactly two addresses and two ports, one space apart");
    }
    const int family = fields[0] == "TCP4" ? AF_INET : AF_INET6;
    std::array<unsigned char, sizeof(in6_addr)> source{};
    std::array<unsigned char, sizeof(in6_addr)> destination{};
    const std::string source_text(fields[1]);
    const std::string destination_text(fields[2]);
    if (::inet_pton(family, source_text.c_str(), source.data()) != 1 ||
        ::inet_pton(family, destination_text.c_str(), destination.data()) != 1) {
        return invalid(family == AF_INET ? "version 1 TCP4 header with an address that is not IPv4"
                                         : "version 1 TCP6 header with an address that is not IPv6");
    }
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
    if (!parse_port(fields[3], source_port) || !parse_port(fields[4], destination_port)) {
        return invalid("version 1 header with a port that is not a number from 0 to 65535");
    }
    done.header.has_addresses = true;
    done.header.source = with_port(family, source.data(), source_port);
    done.header.destination = with_port(family, destination.data(), destination_port);
    return done;
}

ProxyParse parse_v1(std::string_view prefix) {
    const std::string_view line = prefix.substr(0, proxy_v1_max);
    const auto end = line.find_first_of("\r\n");
    if (end != std::string_view::npos && line[end] == '\n') {
        return invalid("version 1 header ended by a bare LF (CRLF expected)");
    }
    if (end != std::string_view::npos && end + 1 < line.size()) {
        if (line[end + 1] != '\n') {
            return invalid("version 1 header with a CR not followed by LF");
        }
        return parse_v1_fields(line.substr(v1_signature.size(), end - v1_signature.size()), end + 2);
    }
    // No CRLF yet: it must come within 107 bytes, and what has come must still be able to
    // become TCP4, TCP6 or UNKNOWN (a verdict that more bytes can only confirm).
    if (line.size() >= proxy_v1_max) {
        return invalid("version 1 header longer than 107 bytes");
    }
    const std::string_view rest = line.substr(v1_signature.size());
    const std::string_view protocol = rest.substr(0, rest.find_first_of(" \r"));
    for (const std::string_view known : {"TCP4", "TCP6", "UNKNOWN"}) {
        if (known.substr(0, protocol.size()) == protocol.substr(0, known.size())) {
            return incomplete();
        }
    }
    return invalid("version 1 header with an unknown protocol (TCP4, TCP6 or UNKNOWN expected)");
}

ProxyParse parse_v2(std::string_view prefix, std::size_t available) {
    if (available < proxy_v2_fixed) {
        return incomplete();
    }
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(prefix[i]); };
    const unsigned version = byte(12) >> 4U;
    const unsigned command = byte(12) & 0x0fU;
    const unsigned family = byte(13) >> 4U;
    const unsigned transport = byte(13) & 0x0fU;
    const std::size_t length = proxy_v2_fixed + ((std::size_t{byte(14)} << 8U) | byte(15));
    if (version != 2) {
        return invalid("version 2 signature with a version other than 2");
    }
    if (command > 1) {
        return invalid("version 2 header with a command other than LOCAL and PROXY");
    }
    ProxyParse done{ProxyParseStatus::complete, {}, {}};
    done.header.version = 2;
    done.header.length = length;
    // LOCAL (a health check) carries no addresses worth reading; PROXY for UNSPEC and AF_UNIX
    // names no client the server could log as host:port. All three keep the connection's own.
    std::size_t needed = 0;
    if (command == 1 && (family == 1 || family == 2)) {
        if (transport != 1) {
            return invalid("version 2 header for a transport other than a stream (TCP)");
        }
        needed = family == 1 ? 12 : 36;
    } else if (command == 1 && family == 3) {
        needed = 216;
    } else if (command == 1 && family != 0) {
        return invalid("version 2 header with an unknown address family");
    }
    if (length < proxy_v2_fixed + needed) {
        return invalid("version 2 header shorter than its address family's addresses");
    }
    if (available < length) {
        return incomplete();  // TLVs (skipped) may still be arriving
    }
    if (command == 1 && (family == 1 || family == 2)) {
        const int af = family == 1 ? AF_INET : AF_INET6;
        const std::size_t size = family == 1 ? 4 : 16;
        const char* addresses = prefix.data() + proxy_v2_fixed;
        const auto port_at = [&](std::size_t i) {
            return static_cast<std::uint16_t>((byte(proxy_v2_fixed + i) << 8U) | byte(proxy_v2_fixed + i + 1));
        };
        done.header.has_addresses = true;
        done.header.source = with_port(af, addresses, port_at(2 * size));
        done.header.destination = with_port(af, addresses + size, port_at(2 * size + 2));
    }
    return done;
}

}  // namespace

ProxyParse parse_proxy_header(std::string_view prefix, std::size_t available) {
    prefix = prefix.substr(0, std::min(available, proxy_prefix_max));
    if (prefix.empty()) {
        return incomplete();
    }
    if (prefix[0] == 'P') {
        if (prefix.substr(0, v1_signature.size()) != v1_signature.substr(0, prefix.size())) {
            return invalid("no PROXY header: the connection does not begin with \"PROXY \" or the version 2 signature");
        }
        return prefix.size() < v1_signature.size() ? incomplete() : parse_v1(prefix);
    }
    if (prefix.substr(0, v2_signature.size()) != v2_signature.substr(0, prefix.size())) {
        return invalid("no PROXY header: the connection does not begin with \"PROXY \" or the version 2 signature");
    }
    return prefix.size() < v2_signature.size() ? incomplete() : parse_v2(prefix, available);
}

}  // namespace echoplex
