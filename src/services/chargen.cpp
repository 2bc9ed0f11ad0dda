// chargen: the rotating pattern, made only while the connection has room for it.
#include "echoplex/services/chargen.hpp"

namespace echoplex::services {
namespace {

// Lines made per call: about 16 KiB, one queue block. The connection asks again whenever its
// output falls to the low watermark, so what is queued stays under it plus this much.
constexpr std::size_t lines_per_batch = 16 * 1024 / (Chargen::line_length + 2);

}  // namespace

std::string Chargen::line(std::size_t n) {
    std::string text;
    text.reserve(line_length + 2);
    const std::size_t first = n % alphabet;
    for (std::size_t i = 0; i < line_length; ++i) {
        text.push_back(static_cast<char>(' ' + (first + i) % alphabet));
    }
    text += "\r\n";
    return text;
}

void Chargen::on_open(Session& session) {
    session.want_output_space(true);
    produce(session);
}

void Chargen::on_input(Session& session, ByteQueue& input) {
    (void)session;
    input.clear();  // RFC 864: "any data received is thrown away"
}

void Chargen::on_output_space(Session& session) { produce(session); }

void Chargen::produce(Session& session) {
    std::string batch;
    batch.reserve(lines_per_batch * (line_length + 2));
    for (std::size_t i = 0; i < lines_per_batch; ++i) {
        batch += line(next_line_);
        next_line_ = (next_line_ + 1) % alphabet;
    }
    session.send(batch);
}

}  // namespace echoplex::services
