// ByteQueue: FIFO order across blocks, iovec export, splicing without copies, no idle memory.
#include "echoplex/io/byte_queue.hpp"

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "support/doctest.hpp"

namespace echoplex {
namespace {

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        s[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
    }
    return s;
}

TEST_CASE("bytes come out in the order they went in, across block boundaries") {
    BlockPool pool;
    ByteQueue q(pool);
    const std::string data = pattern(3 * BlockPool::block_size + 123);
    q.append(data.substr(0, 10));
    q.append(data.substr(10));
    CHECK(q.size() == data.size());
    CHECK(q.blocks() == 4);
    CHECK(q.to_string() == data);
    CHECK(std::string(q.front().data(), q.front().size()) == data.substr(0, BlockPool::block_size));
    q.consume(BlockPool::block_size + 5);
    CHECK(std::string(q.front().data(), q.front().size()) == data.substr(BlockPool::block_size + 5, BlockPool::block_size - 5));
    CHECK(q.to_string() == data.substr(BlockPool::block_size + 5));
    CHECK(q.blocks() == 3);
}

TEST_CASE("peek exports iovecs bounded by count and bytes") {
    BlockPool pool;
    ByteQueue q(pool);
    const std::string data = pattern(2 * BlockPool::block_size + 50);
    q.append(data);
    q.consume(7);
    iovec iov[8];
    REQUIRE(q.peek(iov, 8, 1 << 30) == 3);
    std::string joined;
    for (const auto& v : iov) {
        if (&v - iov < 3) joined.append(static_cast<const char*>(v.iov_base), v.iov_len);
    }
    CHECK(joined == data.substr(7));
    REQUIRE(q.peek(iov, 1, 1 << 30) == 1);
    CHECK(iov[0].iov_len == BlockPool::block_size - 7);
    REQUIRE(q.peek(iov, 8, 100) == 1);
    CHECK(iov[0].iov_len == 100);
}

TEST_CASE("prepare and commit read into the tail; an unused tail is given back") {
    BlockPool pool;
    ByteQueue q(pool);
    auto space = q.prepare();
    REQUIRE(space.size() == BlockPool::block_size);
    space[0] = 'x';
    space[1] = 'y';
    q.commit(2);
    CHECK(q.to_string() == "xy");
    q.consume(2);
    CHECK(q.blocks() == 0);  // empty queue holds nothing
    (void)q.prepare();
    CHECK(q.blocks() == 1);
    q.release_unused_tail();
    CHECK(q.blocks() == 0);
    CHECK(pool.free_blocks() == 1);
}

TEST_CASE("splice moves blocks, and an emptied queue returns them to the pool") {
    BlockPool pool;
    ByteQueue in(pool);
    ByteQueue out(pool);
    out.append("head:");
    in.append(pattern(BlockPool::block_size + 1));
    const auto before = pool.free_blocks();
    out.splice_from(in);
    CHECK(in.empty());
    CHECK(in.blocks() == 0);
    CHECK(pool.free_blocks() == before);  // nothing copied, nothing allocated or freed
    CHECK(out.to_string() == "head:" + pattern(BlockPool::block_size + 1));
    out.append(":tail");
    CHECK(out.to_string().ends_with(":tail"));
    out.consume(out.size());
    CHECK(out.blocks() == 0);
    CHECK(pool.free_blocks() == before + 3);
}

TEST_CASE("the pool keeps at most max_free blocks") {
    BlockPool pool(2);
    {
        ByteQueue q(pool);
        q.append(pattern(5 * BlockPool::block_size));
    }
    CHECK(pool.free_blocks() == 2);
}

TEST_CASE("a scatter prepare offers whole blocks up to the limit; commit fills them in order; empties go back") {
    BlockPool pool;
    ByteQueue q(pool);
    q.append("abc");  // the tail block has block_size - 3 bytes free
    std::array<iovec, 4> iov{};
    const std::size_t limit = 2 * BlockPool::block_size;
    const std::size_t count = q.prepare(iov.data(), iov.size(), limit);
    REQUIRE(count == 3);
    CHECK(iov[0].iov_len == BlockPool::block_size - 3);
    CHECK(iov[1].iov_len == BlockPool::block_size);
    CHECK(iov[2].iov_len == 3);
    const std::string data = pattern(BlockPool::block_size + 10);  // into the first two iovecs
    std::size_t at = 0;
    for (std::size_t i = 0; i < count && at < data.size(); ++i) {
        const std::size_t len = std::min(iov[i].iov_len, data.size() - at);
        std::memcpy(iov[i].iov_base, data.data() + at, len);
        at += len;
    }
    q.commit(data.size());
    CHECK(q.blocks() == 3);  // the third, still empty
    q.release_unused_tail();
    CHECK(q.blocks() == 2);
    CHECK(q.to_string() == "abc" + data);
    CHECK(q.prepare(iov.data(), 1, 100) == 1);  // one iovec at most, bounded by the limit
    CHECK(iov[0].iov_len == 100);
}

// Counts the buffers given back, each of which must have been lent and is given back once.
struct CountingLender final : BufferLender {
    std::vector<const char*> given;
    void give_back(const char* buffer) noexcept override { given.push_back(buffer); }
};

TEST_CASE("a lent buffer travels between queues where it is and goes back to its lender once consumed") {
    BlockPool pool;
    CountingLender lender;
    pool.set_lender(lender);
    const std::string lent_bytes = pattern(40000);  // longer than a block: one chunk all the same
    ByteQueue in(pool);
    in.append_lent(lent_bytes);
    in.append("tail");  // into a new block: nothing is ever written into a lent buffer
    CHECK(in.size() == lent_bytes.size() + 4);
    CHECK(in.to_string() == lent_bytes + "tail");
    ByteQueue out(pool);
    out.splice_from(in);
    std::array<iovec, 4> iov{};
    REQUIRE(out.peek(iov.data(), iov.size(), out.size()) == 2);
    CHECK(iov[0].iov_base == static_cast<const void*>(lent_bytes.data()));  // not copied
    CHECK(iov[0].iov_len == lent_bytes.size());
    out.consume(lent_bytes.size() - 1);
    CHECK(lender.given.empty());  // one byte of it is still queued
    out.consume(1);
    REQUIRE(lender.given.size() == 1);
    CHECK(lender.given[0] == lent_bytes.data());
    CHECK(out.to_string() == "tail");
    CHECK(lent_bytes == pattern(40000));  // untouched

    ByteQueue dropped(pool);
    dropped.append_lent(lent_bytes);
    dropped.clear();
    CHECK(lender.given.size() == 2);
    {
        ByteQueue destroyed(pool);
        destroyed.append_lent(lent_bytes);
    }
    CHECK(lender.given.size() == 3);
}

TEST_CASE("a bounded splice moves whole chunks that fit and copies only the part of the next one, never splitting a lent buffer") {
    BlockPool pool;
    CountingLender lender;
    pool.set_lender(lender);
    const std::string first = pattern(30000);
    const std::string second = pattern(30001);
    ByteQueue from(pool);
    from.append_lent(first);
    from.append_lent(second);
    ByteQueue into(pool);
    CHECK(into.splice_from(from, 40000) == 40000);
    std::array<iovec, 4> iov{};
    REQUIRE(into.peek(iov.data(), iov.size(), into.size()) == 2);
    CHECK(iov[0].iov_base == static_cast<const void*>(first.data()));  // moved whole
    CHECK(iov[1].iov_len == 10000);                                    // copied
    CHECK(into.to_string() == first + second.substr(0, 10000));
    CHECK(from.to_string() == second.substr(10000));
    // The second buffer did not fit: its bytes were copied into blocks and it went back, so no
    // queue keeps a lent buffer for the remnant.
    REQUIRE(lender.given.size() == 1);
    CHECK(lender.given[0] == second.data());
    CHECK(into.splice_from(from, 1 << 20) == 20001);  // the rest, under the bound: all of it
    CHECK(from.empty());
    CHECK(into.to_string() == first + second);
    into.clear();
    CHECK(lender.given.size() == 2);
}

TEST_CASE("a lent buffer spliced behind a block with room for it is copied there and given back") {
    BlockPool pool;
    CountingLender lender;
    pool.set_lender(lender);
    const std::string line = pattern(9000);
    ByteQueue out(pool);
    out.append("[12:00:00] ");  // a short prefix, as a protocol writes before each line
    ByteQueue in(pool);
    in.append_lent(line);
    out.splice_from(in);
    CHECK(out.blocks() == 1);  // not a lent buffer behind a block holding 11 bytes
    CHECK(out.to_string() == "[12:00:00] " + line);
    REQUIRE(lender.given.size() == 1);
    CHECK(lender.given[0] == line.data());
    // Behind a block without room for it, it is moved.
    out.append(std::string(BlockPool::block_size - out.size() - 100, 'p'));
    in.append_lent(line);
    out.splice_from(in);
    CHECK(out.blocks() == 2);
    CHECK(lender.given.size() == 1);
    out.clear();
    CHECK(lender.given.size() == 2);
}

TEST_CASE("borrowed bytes cost no block until owned, and are copied, never referenced, once they must outlive the borrow") {
    BlockPool pool;
    std::string scratch = pattern(3 * BlockPool::block_size / 2);  // a read scratch, reused below
    const std::string first = scratch;

    SUBCASE("consumed whole while borrowed: no block is ever taken") {
        ByteQueue q(pool);
        q.append_borrowed({scratch.data(), scratch.size()});
        CHECK(q.size() == scratch.size());
        CHECK(q.front().data() == scratch.data());  // where it is: not copied
        CHECK(q.front().size() == scratch.size());
        CHECK(q.to_string() == first);
        q.consume(100);
        CHECK(q.to_string() == first.substr(100));
        q.consume(q.size());
        CHECK(q.empty());
        CHECK(q.blocks() == 0);
        CHECK(pool.free_blocks() == 0);  // nothing was taken from the pool, so nothing came back
    }
    SUBCASE("own_borrowed copies what is left, in order, behind blocks already held") {
        ByteQueue q(pool);
        q.append("head:");
        q.append_borrowed({scratch.data(), scratch.size()});
        q.consume(2);
        q.own_borrowed();
        scratch.assign(scratch.size(), '#');  // the next read overwrites the scratch
        CHECK(q.to_string() == "ad:" + first);
        q.own_borrowed();  // nothing borrowed any more: a no-op
        CHECK(q.to_string() == "ad:" + first);
    }
    SUBCASE("a splice copies borrowed bytes into the destination's blocks") {
        ByteQueue from(pool);
        ByteQueue to(pool);
        from.append_borrowed({scratch.data(), scratch.size()});
        from.consume(10);
        to.splice_from(from);
        CHECK(from.empty());
        scratch.assign(scratch.size(), '#');
        CHECK(to.to_string() == first.substr(10));
        CHECK(to.blocks() == 2);  // appended as copies fill blocks: 1.5 blocks' worth
    }
    SUBCASE("a bounded splice copies the part it takes and leaves the rest borrowed") {
        ByteQueue from(pool);
        ByteQueue to(pool);
        from.append_borrowed({scratch.data(), scratch.size()});
        CHECK(to.splice_from(from, 1000) == 1000);
        CHECK(from.to_string() == first.substr(1000));
        from.own_borrowed();
        scratch.assign(scratch.size(), '#');
        CHECK(to.to_string() == first.substr(0, 1000));
        CHECK(from.to_string() == first.substr(1000));
    }
}

TEST_CASE("a queue that never drains keeps its order while spent slots are reclaimed") {
    // Appending and consuming in a steady stream, never reaching empty, walks the head far past
    // the reclaim threshold many times: order and block counts must survive every reclaim.
    BlockPool pool;
    ByteQueue q(pool);
    std::string expected;
    std::size_t next = 0;
    for (int round = 0; round < 200; ++round) {
        std::string piece(BlockPool::block_size, '\0');
        for (char& c : piece) {
            c = static_cast<char>('a' + next++ % 23);
        }
        q.append(piece);
        expected += piece;
        if (round >= 3) {
            const std::size_t eat = BlockPool::block_size + (round % 3 == 0 ? 7 : 0);
            q.consume(eat);
            expected.erase(0, eat);
        }
        REQUIRE(q.size() == expected.size());
        REQUIRE(q.blocks() <= expected.size() / BlockPool::block_size + 2);
    }
    CHECK(q.to_string() == expected);
    ByteQueue moved(std::move(q));
    CHECK(moved.to_string() == expected);
    CHECK(q.empty());
    CHECK(q.blocks() == 0);
}

}  // namespace
}  // namespace echoplex
