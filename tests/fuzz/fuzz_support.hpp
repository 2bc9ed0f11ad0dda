// What both of the Connection fuzz target's modes share: the input reader, the client's byte
// stream and the reply it must get back, the limits, tracing and the invariant check.
#pragma once

#include <algorithm>
#include <array>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string_view>

#include "echoplex/net/connection.hpp"

namespace echoplex::fuzz {

// The connection's limits plus which protocol answers: echo, or the book's stamped reply.
enum class ReplyMode { echo, stamp };
struct FuzzLimits : ConnectionLimits {
    ReplyMode reply = ReplyMode::echo;
};

// ECHOPLEX_FUZZ_TRACE=1 prints every step and every scripted answer (to read a crash's input).
inline const bool tracing = std::getenv("ECHOPLEX_FUZZ_TRACE") != nullptr;

[[gnu::format(printf, 1, 2)]] inline void trace(const char* format, ...) {
    if (tracing) {
        std::va_list args;
        va_start(args, format);
        std::vfprintf(stderr, format, args);
        va_end(args);
    }
}

// A broken invariant: say which, then abort so that libFuzzer keeps the input as a crash.
inline void check(bool holds, const char* invariant) {
    if (!holds) {
        std::fprintf(stderr, "connection_fuzz: invariant broken: %s\n", invariant);
        std::abort();
    }
}

class Input {
public:
    Input(const std::uint8_t* data, std::size_t size) noexcept : data_(data), size_(size) {}
    bool exhausted() const noexcept { return pos_ >= size_; }
    std::uint8_t byte() noexcept { return exhausted() ? 0 : data_[pos_++]; }
    std::uint16_t u16() noexcept {
        const unsigned high = byte();
        return static_cast<std::uint16_t>(high << 8U | byte());
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

// What the client sends: a random pattern repeating every 65521 bytes (a prime, so no block or
// budget size lines up with it), entered at a seed-chosen phase. A lost, repeated or reordered
// piece shows, and filling and checking are plain memcpy and memcmp: no per-byte loop for the
// fuzzer's comparison tracing to slow down.
class ClientStream {
public:
    explicit ClientStream(std::uint8_t seed) noexcept : phase_(seed * std::uint64_t{257}) {}

    void copy(std::uint64_t offset, char* out, std::size_t n) const noexcept {
        for_runs(offset, n, [&](const char* pattern, std::size_t len) {
            std::memcpy(out, pattern, len);
            out += len;
        });
    }

    bool equal(std::uint64_t offset, const char* bytes, std::size_t n) const noexcept {
        bool same = true;
        for_runs(offset, n, [&](const char* pattern, std::size_t len) {
            same = same && std::memcmp(bytes, pattern, len) == 0;
            bytes += len;
        });
        return same;
    }

private:
    static constexpr std::size_t period = 65521;

    static const std::array<char, period>& pattern() noexcept {
        static const std::array<char, period> bytes = [] {
            std::array<char, period> p{};
            std::uint64_t x = 0x9E3779B97F4A7C15ULL;
            for (char& c : p) {  // xorshift64
                x ^= x << 13U;
                x ^= x >> 7U;
                x ^= x << 17U;
                c = static_cast<char>(x);
            }
            return p;
        }();
        return bytes;
    }

    template <typename Visit>
    void for_runs(std::uint64_t offset, std::size_t n, Visit visit) const noexcept {
        while (n > 0) {
            const std::size_t at = (offset + phase_) % period;
            const std::size_t len = std::min(n, period - at);
            visit(pattern().data() + at, len);
            offset += len;
            n -= len;
        }
    }

    std::uint64_t phase_;
};

// What the client must get back, in order: the segments not yet matched by sent bytes.
class Reply {
public:
    explicit Reply(const ClientStream& stream) noexcept : stream_(stream) {}

    void add_stream(std::uint64_t offset, std::size_t length) {
        if (!segments_.empty() && segments_.back().kind == Kind::stream &&
            segments_.back().offset + segments_.back().length == offset) {
            segments_.back().length += length;
        } else {
            segments_.push_back({Kind::stream, offset, length, {}});
        }
        owed_ += length;
    }
    void add_literal(std::string_view text) {
        segments_.push_back({Kind::literal, 0, text.size(), text});
        owed_ += text.size();
    }
    void add_any(std::size_t length) {
        segments_.push_back({Kind::any, 0, length, {}});
        owed_ += length;
    }

    // Matches bytes the kernel took against the front of what is owed.
    bool take(const char* bytes, std::size_t n) {
        if (n > owed_) {
            return false;
        }
        owed_ -= n;
        while (n > 0) {
            Segment& front = segments_.front();
            const std::size_t len = std::min(n, front.length);
            const bool same = front.kind == Kind::stream    ? stream_.equal(front.offset, bytes, len)
                              : front.kind == Kind::literal ? std::memcmp(front.text.data(), bytes, len) == 0
                                                            : true;  // the time in a stamp
            if (!same) {
                return false;
            }
            bytes += len;
            n -= len;
            front.length -= len;
            front.offset += len;
            front.text.remove_prefix(front.kind == Kind::literal ? len : 0);
            if (front.length == 0) {
                segments_.pop_front();
            }
        }
        return true;
    }

    // Bytes owed and not yet sent.
    std::uint64_t owed() const noexcept { return owed_; }

private:
    enum class Kind : std::uint8_t { stream, literal, any };
    struct Segment {
        Kind kind;
        std::uint64_t offset;
        std::size_t length;
        std::string_view text;
    };
    const ClientStream& stream_;
    std::deque<Segment> segments_;
    std::uint64_t owed_ = 0;
};

// What the client is owed for `n` bytes the connection read at `offset` of its stream: the bytes
// themselves, or the book's stamped form of them.
inline void owe(Reply& reply, ReplyMode mode, std::uint64_t offset, std::size_t n) {
    if (mode == ReplyMode::stamp) {
        reply.add_literal("Echo=>");
        reply.add_stream(offset, n);
        reply.add_literal(" at ");
        reply.add_any(24);  // the time, as ctime() prints it
    } else {
        reply.add_stream(offset, n);
    }
}

// The completion mode (completion_harness.cpp): the connection over a UringStream whose
// completions the rest of the input scripts.
void run_completions(Input& input, const FuzzLimits& limits, std::uint8_t seed);

}  // namespace echoplex::fuzz
