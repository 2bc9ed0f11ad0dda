// StampDecoder implementation.
#include "stamp.hpp"

#include "echoplex/io/fmt.hpp"

namespace echoplex::testecho {
namespace {

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_letter(char c) noexcept { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// Each position of "Www Mmm dd hh:mm:ss yyyy": A letter, ' ' space, D digit, d digit or space
// (strftime's %e pads the day with a space), ':' colon.
constexpr std::string_view ctime_shape = "AAA AAA dd DD:DD:DD DDDD";

bool fits(char shape, char c) noexcept {
    switch (shape) {
    case 'A': return is_letter(c);
    case 'D': return is_digit(c);
    case 'd': return is_digit(c) || c == ' ';
    default: return c == shape;
    }
}

}  // namespace

bool StampDecoder::ctime_shaped(std::string_view text) noexcept {
    if (text.size() != ctime_shape.size()) {
        return false;
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (!fits(ctime_shape[i], text[i])) {
            return false;
        }
    }
    return true;
}

int StampDecoder::stamp_at(std::size_t pos) const noexcept {
    const std::size_t need = separator.size() + time_length;
    const std::size_t have = std::min(need, buffer_.size() - pos);
    for (std::size_t i = 0; i < have; ++i) {
        const char c = buffer_[pos + i];
        const bool ok = i < separator.size() ? c == separator[i] : fits(ctime_shape[i - separator.size()], c);
        if (!ok) {
            return -1;
        }
    }
    return have == need ? 1 : 0;
}

bool StampDecoder::feed(std::string_view bytes, std::string& data) {
    if (!error_.empty()) {
        return false;
    }
    buffer_.append(bytes);
    for (;;) {
        const std::size_t head = std::min(buffer_.size(), prefix.size());
        if (buffer_.compare(0, head, prefix, 0, head) != 0) {
            error_ = fmt::format("reply does not start with \"{}\"", prefix);
            return false;
        }
        if (buffer_.size() <= prefix.size()) {
            return true;
        }
        // The chunk carries at least one data byte, so candidates start after it.
        std::size_t k = std::max<std::size_t>(scan_, 1);
        bool complete = false;
        for (; prefix.size() + k < buffer_.size(); ++k) {
            const int at = stamp_at(prefix.size() + k);
            if (at == 1) {
                complete = true;
                break;
            }
            if (at == 0) {
                // A candidate still arriving: keep scanning from here next time.
                break;
            }
        }
        scan_ = k;
        if (!complete) {
            return true;
        }
        data.append(buffer_, prefix.size(), k);
        buffer_.erase(0, prefix.size() + k + separator.size() + time_length);
        scan_ = 0;
    }
}

}  // namespace echoplex::testecho
