// http_metrics: the smallest HTTP/1.1 responder a Prometheus scrape needs. One request per
// connection: "GET /metrics" is answered 200 with the text `render` makes (exposition format
// 0.0.4), any other path 404, any other method 405, anything that is not an HTTP request 400;
// then the connection closes. A request head longer than max_request is cut off (431) without
// being buffered further.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

class HttpMetrics final : public Protocol {
public:
    using Render = std::function<std::string()>;
    static constexpr std::size_t max_request = 8 * 1024;

    explicit HttpMetrics(Render render) : render_(std::move(render)) {}
    void on_input(Session& session, ByteQueue& input) override;
    void on_input_end(Session& session, ByteQueue& input) override;

    // The whole response to one request head (the bytes up to its blank line).
    std::string respond(std::string_view head) const;
    // Where the head in `received` ends (before its blank line), or npos while it has not ended.
    static std::size_t head_end(std::string_view received) noexcept;
    // The response for a head that grew past max_request, and for one the client cut short.
    static std::string too_large_response();
    static std::string bad_request_response();

private:
    Render render_;
    bool answered_ = false;
};

}  // namespace echoplex::services
