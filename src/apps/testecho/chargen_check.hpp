// ChargenCheck: verifies a chargen stream (RFC 864) as it arrives, in pieces of any size. Each
// line is 72 characters of the 95 printable ASCII ones (space to '~'), consecutive in that ring,
// then CR LF; each line starts one character further round the ring than the one before. The
// first line may start anywhere (servers differ), every later one is fixed by it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace echoplex::testecho {

class ChargenCheck {
public:
    static constexpr std::size_t line_length = 72;
    static constexpr std::size_t ring = 95;  // ' ' .. '~'

    // Checks `data`, the next bytes of the stream; returns the lines it completed. After the
    // first wrong byte it checks nothing more and error() says where and what.
    std::uint64_t feed(std::string_view data);

    bool failed() const noexcept { return error_.has_value(); }
    // "offset 4711: expected 'A' (0x41), received 0x0a"; empty while nothing is wrong.
    std::string error() const { return error_.value_or(std::string()); }
    std::uint64_t offset() const noexcept { return offset_; }  // bytes checked so far
    void reset() noexcept { *this = ChargenCheck{}; }

private:
    std::optional<char> expected() const noexcept;

    std::uint64_t offset_ = 0;
    std::size_t column_ = 0;          // position within the current line, CR and LF included
    std::optional<std::size_t> first_;  // the ring index the first line started at
    std::uint64_t line_ = 0;          // lines completed
    std::optional<std::string> error_;
};

}  // namespace echoplex::testecho
