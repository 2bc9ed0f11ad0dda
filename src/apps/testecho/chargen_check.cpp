// ChargenCheck implementation.
#include "chargen_check.hpp"

#include "echoplex/io/fmt.hpp"

namespace echoplex::testecho {
namespace {

std::string shown(char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte >= 0x20 && byte < 0x7f ? fmt::format("'{}' (0x{:02x})", c, byte) : fmt::format("0x{:02x}", byte);
}

}  // namespace

std::optional<char> ChargenCheck::expected() const noexcept {
    if (column_ == line_length) {
        return '\r';
    }
    if (column_ == line_length + 1) {
        return '\n';
    }
    if (!first_) {
        return std::nullopt;  // the stream's first byte: any printable character starts it
    }
    const std::size_t index = (*first_ + static_cast<std::size_t>(line_ % ring) + column_) % ring;
    return static_cast<char>(' ' + index);
}

std::uint64_t ChargenCheck::feed(std::string_view data) {
    std::uint64_t completed = 0;
    for (const char c : data) {
        if (error_) {
            break;
        }
        const std::optional<char> want = expected();
        if (!want) {
            if (c < ' ' || c > '~') {
                error_ = fmt::format("offset {}: a chargen line starts with a printable character, received {}", offset_,
                                     shown(c));
                break;
            }
            first_ = static_cast<std::size_t>(c - ' ');
        } else if (c != *want) {
            error_ = fmt::format("offset {}: expected {}, received {}", offset_, shown(*want), shown(c));
            break;
        }
        ++offset_;
        if (++column_ == line_length + 2) {
            column_ = 0;
            ++line_;
            ++completed;
        }
    }
    return completed;
}

}  // namespace echoplex::testecho
