// ChargenCheck: RFC 864's lines verified in pieces of any size, from any first character, and the
// first wrong byte reported with its offset.
#include "chargen_check.hpp"

#include <string>

#include "support/doctest.hpp"

namespace echoplex::testecho {
namespace {

// `lines` lines of the pattern, the first starting `first` characters after the space.
std::string stream(std::size_t lines, std::size_t first = 0) {
    std::string out;
    for (std::size_t line = 0; line < lines; ++line) {
        for (std::size_t i = 0; i < ChargenCheck::line_length; ++i) {
            out += static_cast<char>(' ' + (first + line + i) % ChargenCheck::ring);
        }
        out += "\r\n";
    }
    return out;
}

TEST_CASE("whole lines count once each, however the stream is cut") {
    const std::string text = stream(200);  // more than the 95-line cycle
    for (const std::size_t piece : {1U, 7U, 74U, 1000U, 20000U}) {
        CAPTURE(piece);
        ChargenCheck check;
        std::uint64_t lines = 0;
        for (std::size_t at = 0; at < text.size(); at += piece) {
            lines += check.feed(std::string_view(text).substr(at, piece));
        }
        CHECK(lines == 200);
        CHECK_FALSE(check.failed());
        CHECK(check.offset() == text.size());
    }
}

TEST_CASE("the first line may start anywhere in the ring; the rest follow it") {
    ChargenCheck check;
    CHECK(check.feed(stream(3, 33)) == 3);  // '!' first, as some servers start
    CHECK_FALSE(check.failed());
}

TEST_CASE("a wrong character, a missing CR LF or a repeated line is caught at its offset") {
    std::string text = stream(10);
    text[300] = static_cast<char>(text[300] == 'A' ? 'B' : 'A');
    ChargenCheck flipped;
    CHECK(flipped.feed(text) == 4);  // lines 0-3 end before offset 300
    CHECK(flipped.failed());
    CHECK(flipped.error().rfind("offset 300: expected ", 0) == 0);

    std::string no_crlf = stream(2);
    no_crlf.erase(72, 2);
    ChargenCheck joined;
    joined.feed(no_crlf);
    CHECK(joined.error().rfind("offset 72: expected 0x0d, received", 0) == 0);

    const std::string again = stream(1) + stream(1);  // the second line must start one further on
    ChargenCheck repeated;
    CHECK(repeated.feed(again) == 1);
    CHECK(repeated.error().rfind("offset 74: expected '!' (0x21), received ' ' (0x20)", 0) == 0);

    ChargenCheck control;
    control.feed("\n");
    CHECK(control.error().rfind("offset 0: a chargen line starts with a printable character", 0) == 0);
    // After the first error nothing more is looked at.
    CHECK(control.feed(stream(1)) == 0);
    CHECK(control.offset() == 0);
}

}  // namespace
}  // namespace echoplex::testecho
