// http_metrics: parse one request head, answer, close.
#include "echoplex/services/http_metrics.hpp"

#include "echoplex/io/fmt.hpp"

namespace echoplex::services {
namespace {

std::string response(std::string_view status, std::string_view content_type, std::string_view body) {
    return fmt::format("HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", status,
                       content_type, body.size(), body);
}

std::string error(std::string_view status) { return response(status, "text/plain; charset=utf-8", fmt::format("{}\n", status)); }

}  // namespace

std::size_t HttpMetrics::head_end(std::string_view received) noexcept {
    const auto end = received.find("\r\n\r\n");
    if (end != std::string_view::npos) {
        return end;
    }
    return received.find("\n\n");  // bare LF line ends, which RFC 9112 lets a server accept
}

std::string HttpMetrics::too_large_response() { return error("431 Request Header Fields Too Large"); }

std::string HttpMetrics::bad_request_response() { return error("400 Bad Request"); }

std::string HttpMetrics::respond(std::string_view head) const {
    // The request line: METHOD SP TARGET SP HTTP/1.x (RFC 9112 section 3).
    const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
    const auto first = line.find(' ');
    const auto second = first == std::string_view::npos ? first : line.find(' ', first + 1);
    if (first == 0 || second == std::string_view::npos || second == first + 1) {
        return error("400 Bad Request");
    }
    const std::string_view method = line.substr(0, first);
    std::string_view target = line.substr(first + 1, second - first - 1);
    const std::string_view version = line.substr(second + 1);
    if (!version.starts_with("HTTP/1.") || version.size() != 8 || target.find(' ') != std::string_view::npos) {
        return error("400 Bad Request");
    }
    target = target.substr(0, target.find('?'));  // Prometheus may add parameters
    if (target != "/metrics") {
        return error("404 Not Found");
    }
    if (method != "GET" && method != "HEAD") {
        return response("405 Method Not Allowed", "text/plain; charset=utf-8", "405 Method Not Allowed\n");
    }
    std::string out = response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_());
    if (method == "HEAD") {
        out.resize(out.find("\r\n\r\n") + 4);  // the head GET would get, its Content-Length included
    }
    return out;
}

void HttpMetrics::on_input(Session& session, ByteQueue& input) {
    if (answered_) {
        input.clear();
        return;
    }
    const std::string text = input.to_string();
    const auto end = head_end(text);
    if (end == std::string::npos) {
        if (text.size() > max_request) {
            answered_ = true;
            session.send(too_large_response());
            session.finish();
        }
        return;  // the rest of the head comes later
    }
    answered_ = true;
    session.send(respond(std::string_view(text).substr(0, end)));
    input.clear();
    session.finish();
}

void HttpMetrics::on_input_end(Session& session, ByteQueue& input) {
    if (!answered_ && !input.empty()) {
        answered_ = true;
        session.send(bad_request_response());  // the client stopped before its head ended
    }
    input.clear();
}

}  // namespace echoplex::services
