// ByteQueue: a FIFO of bytes in fixed-size blocks borrowed from a BlockPool, exported as iovecs
// for writev/sendmsg. Blocks move between queues without copying (splice), and an empty queue
// holds no block, so an idle connection costs no buffer memory.
//
//   chunks_:  (consumed slots) [ block | begin..end ] [ block | begin..end ] ...
//                    head_ -----^ next byte out                  ^ next byte in (tail space follows)
//
// The chunks live in a vector with a moving head rather than a std::deque: an empty deque still
// allocates a 576-byte map and node, which was most of an idle connection's memory; an empty
// vector allocates nothing, and a drained one keeps its few slots for the next message.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace echoplex {

// Takes back buffers that a ByteQueue held without owning them (ByteQueue::append_lent): the
// io_uring backend's large receive buffers, which travel from a receive to the send of the echo
// without a copy and go back to the kernel's ring only once that send has completed.
class BufferLender {
public:
    virtual void give_back(const char* buffer) noexcept = 0;

protected:
    ~BufferLender() = default;
};

// Recycles blocks so the steady state allocates nothing. Single-threaded, like the loop.
class BlockPool {
public:
    static constexpr std::size_t block_size = 16 * 1024;
    using Block = std::array<char, block_size>;

    // Keeps at most `max_free` idle blocks; the rest go back to the allocator.
    explicit BlockPool(std::size_t max_free = 256) : max_free_(max_free) {}

    std::unique_ptr<Block> take();
    void give(std::unique_ptr<Block> block) noexcept;
    std::size_t free_blocks() const noexcept { return free_.size(); }

    // Where the lent buffers in this pool's queues go back to (one lender per pool: the loop's).
    void set_lender(BufferLender& lender) noexcept { lender_ = &lender; }
    BufferLender* lender() const noexcept { return lender_; }

private:
    std::size_t max_free_;
    BufferLender* lender_ = nullptr;
    std::vector<std::unique_ptr<Block>> free_;
};

class ByteQueue {
public:
    explicit ByteQueue(BlockPool& pool) : pool_(&pool) {}
    ByteQueue(ByteQueue&& other) noexcept
        : pool_(other.pool_),
          chunks_(std::move(other.chunks_)),
          size_(std::exchange(other.size_, 0)),
          head_(std::exchange(other.head_, 0)),
          has_borrowed_(other.has_borrowed_) {
        other.has_borrowed_ = 0;
        other.chunks_.clear();
    }
    ByteQueue& operator=(ByteQueue&&) = delete;  // would drop this queue's blocks without returning them
    ~ByteQueue() { clear(); }

    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    // Blocks held, counting a tail block with no data yet.
    std::size_t blocks() const noexcept { return chunks_.size() - head_; }

    void append(std::string_view bytes);
    // Appends `bytes` where they are, in a buffer lent by the pool's lender: it goes back to the
    // lender once these bytes are consumed or dropped, and nothing is ever appended into it.
    void append_lent(std::span<const char> bytes);
    // Appends `bytes` where they are, in memory this queue only borrows for a moment (a loop's
    // read scratch): call own_borrowed() before that memory is used again. Bytes consumed before
    // then cost no block and no copy; a splice into another queue copies them.
    void append_borrowed(std::span<const char> bytes);
    // Copies any borrowed bytes still queued into blocks of the pool.
    void own_borrowed() {
        if (has_borrowed_) {
            copy_borrowed();
        }
    }

    // Free space at the tail to read into (takes a block if there is none); commit(n) makes
    // the first n bytes of it part of the queue. Use release_unused_tail() after a read that
    // got nothing, so an idle queue keeps no block.
    std::span<char> prepare();
    // The same for a scatter read: up to `max_iov` iovecs of tail space totalling at most
    // `max_bytes`, taking blocks as needed; returns the count. commit(n) then fills them in order.
    std::size_t prepare(iovec* iov, std::size_t max_iov, std::size_t max_bytes);
    void commit(std::size_t n) noexcept;
    // Gives back every block at the tail that holds no data.
    void release_unused_tail() noexcept;

    // Moves every byte of `other` to the end of this queue, block by block, without copying (but
    // a lent buffer that would leave this queue's last block less than half full is copied).
    void splice_from(ByteQueue& other);
    // Moves at most `max_bytes` from the front of `other` to the end of this queue (all of it, as
    // splice_from(other), if it holds no more): lent buffers that fit go whole, the rest is copied.
    // A lent buffer is never split: one that does not fit is first copied into blocks of other's,
    // and given back, so that no queue holds a lent buffer for a remnant of its bytes. Returns
    // the bytes moved.
    std::size_t splice_from(ByteQueue& other, std::size_t max_bytes);

    // The bytes of the front chunk: all of the queue when it holds one (the common case, a reply
    // read in one piece), so a writer needs no iovec walk. Empty if the queue is.
    std::span<const char> front() const noexcept {
        if (no_chunks()) {
            return {};
        }
        const Chunk& chunk = chunks_[head_];
        return {chunk.data() + chunk.begin, chunk.end - chunk.begin};
    }
    // Fills up to `max_iov` iovecs covering at most `max_bytes` from the front; returns the count.
    std::size_t peek(iovec* iov, std::size_t max_iov, std::size_t max_bytes) const noexcept;
    // Drops n bytes from the front (n <= size()), returning emptied blocks to the pool.
    void consume(std::size_t n) noexcept;
    void clear() noexcept;

    // Copies everything out (for tests and small replies).
    std::string to_string() const;

private:
    // A chunk owns a block of the pool, or holds a lent or borrowed buffer (read only: its end
    // is final). Kept to 16 bytes: a drained queue keeps its vector's capacity.
    struct Chunk {
        void* memory = nullptr;  // BlockPool::Block* if owned, else the buffer's first byte
        std::uint32_t begin = 0;
        std::uint32_t end : 30 = 0;
        std::uint32_t lent : 1 = 0;      // goes back to the pool's lender when released
        std::uint32_t borrowed : 1 = 0;  // nothing to give back: the owner of the memory keeps it

        bool owned() const noexcept { return lent == 0 && borrowed == 0; }
        char* data() const noexcept {
            return owned() ? static_cast<BlockPool::Block*>(memory)->data() : static_cast<char*>(memory);
        }
        bool has_room() const noexcept { return owned() && end < BlockPool::block_size; }
    };
    void add_block();
    void own_front();  // replaces a lent front chunk by a copy in blocks of the pool
    // Appends a chunk taken from another queue (and counts its bytes): moved, or, if it is lent
    // and would leave this queue's last block less than half full, copied and given back.
    void take_chunk(Chunk& chunk);
    void release(Chunk& chunk) noexcept;
    void copy_borrowed();
    bool no_chunks() const noexcept { return head_ == chunks_.size(); }
    std::span<Chunk> live() noexcept { return {chunks_.data() + head_, chunks_.size() - head_}; }
    std::span<const Chunk> live() const noexcept { return {chunks_.data() + head_, chunks_.size() - head_}; }

    BlockPool* pool_;
    std::vector<Chunk> chunks_;  // chunks_[head_..] hold the bytes; earlier slots are spent
    std::size_t size_ = 0;
    // Narrow, so that a queue (two per connection) takes 48 bytes: a queue never holds 2^31 chunks.
    std::uint32_t head_ = 0;
    std::uint32_t prepared_ : 31 = 0;    // the first chunk of the space the last prepare() offered
    std::uint32_t has_borrowed_ : 1 = 0;  // a borrowed chunk may be queued (cleared once none can be)
};

}  // namespace echoplex
