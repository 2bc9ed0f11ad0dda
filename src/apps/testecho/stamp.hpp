// StampDecoder: turns the book's stamped reply stream back into the data it carries.
//
// `echoplex --reply=stamp` answers every chunk it reads with "Echo=>" DATA " at " TIME, TIME being
// exactly 24 characters shaped like ctime(3) ("Sun Jun 18 23:49:23 2000"). Chunks are whatever
// one read returned, so a message may come back in several stamped pieces and the length of DATA
// is not sent. The decoder ends a chunk at the first " at " followed by 24 ctime-shaped
// characters; data that itself contains such a sequence would be cut there, and the caller's
// byte-exact comparison then reports a mismatch rather than passing bad data.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace echoplex::testecho {

class StampDecoder {
public:
    static constexpr std::string_view prefix = "Echo=>";
    static constexpr std::string_view separator = " at ";
    static constexpr std::size_t time_length = 24;

    // Appends received bytes and moves the data of every complete chunk to `data` (appended).
    // Returns false once the stream cannot be a stamped reply (a chunk that does not start with
    // "Echo=>"); `error()` then says what was seen. Incomplete chunks stay buffered.
    bool feed(std::string_view bytes, std::string& data);

    // Bytes held back: a chunk whose stamp has not arrived completely.
    std::size_t pending() const noexcept { return buffer_.size(); }
    const std::string& error() const noexcept { return error_; }

    // True if `text` (24 bytes) looks like "Www Mmm dd hh:mm:ss yyyy".
    static bool ctime_shaped(std::string_view text) noexcept;

private:
    // How far a stamp candidate at `pos` (an offset in buffer_) matches: 1 complete, 0 needs
    // more bytes, -1 not a stamp.
    int stamp_at(std::size_t pos) const noexcept;

    std::string buffer_;
    std::size_t scan_ = 0;  // data bytes of the current chunk already known not to end it
    std::string error_;
};

}  // namespace echoplex::testecho
