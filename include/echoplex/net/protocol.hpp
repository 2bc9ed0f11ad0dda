// Protocol: what a connection answers. The net tier owns the socket, the queues, backpressure,
// drain, linger, limits and statistics, the same for every protocol; a Protocol only decides
// what to send back, and never touches a socket.
//
//   // Answers each complete line in capitals; a partial line waits in the input.
//   struct Shout final : Protocol {
//       void on_input(Session& session, ByteQueue& input) override {
//           std::string text = input.to_string();
//           const auto end = text.rfind('\n');
//           if (end == std::string::npos) return;   // the rest of the line comes later
//           text.resize(end + 1);
//           for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
//           session.send(text);
//           input.consume(end + 1);
//       }
//   };
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "echoplex/io/byte_queue.hpp"
#include "echoplex/io/event_loop.hpp"

namespace echoplex {

// The connection as its protocol sees it. Valid from Protocol::on_open until Protocol::on_close
// returns, so a protocol may keep it to send later (from a timer, or for another connection).
// No call closes the connection or calls back into the protocol on the spot: sends made outside
// this connection's own callbacks are written at the end of the loop iteration, and close()
// takes effect there too, so iterating over other connections' sessions while sending is safe.
class Session {
public:
    // Queues bytes for the client (copied). They go out as soon as the socket takes them.
    virtual void send(std::string_view bytes) = 0;
    // Moves every byte of `bytes` to the output, taking its blocks where that beats copying.
    virtual void send(ByteQueue& bytes) = 0;
    // Bytes queued and not yet taken by the kernel.
    virtual std::size_t queued_bytes() const noexcept = 0;
    // True from the high watermark until the output falls to the low one: stop producing.
    virtual bool output_full() const noexcept = 0;
    // With `on`, on_output_space is called whenever the client can take more, even when nothing
    // is queued: for producers such as chargen that write for as long as the client reads.
    virtual void want_output_space(bool on) = 0;
    // Stops (or resumes) reading this client, e.g. while a peer it talks to is over its
    // watermark. The connection's own backpressure works independently of this.
    virtual void hold_input(bool on) = 0;
    // Closes once everything queued is delivered: no more input is read or given to on_input.
    virtual void finish() = 0;
    // Closes at the end of this iteration, dropping queued output; `reason` is logged.
    virtual void close(std::string_view reason) = 0;

    // The client's address ("192.0.2.1:56324"), as logged. A protocol that learns the real client
    // behind a proxy (the PROXY header) replaces it. Asked of the socket while the client is
    // connected (as Boost.Asio's remote_endpoint): once it has reset, the answer may be only
    // "fd N", so a protocol that names the client at its end (a leave message) keeps the name
    // from on_open.
    virtual std::string peer() const = 0;
    virtual void set_peer(std::string peer) = 0;
    virtual EventLoop& loop() noexcept = 0;

protected:
    ~Session() = default;
};

class Protocol {
public:
    Protocol() = default;
    Protocol(const Protocol&) = delete;
    Protocol& operator=(const Protocol&) = delete;
    virtual ~Protocol() = default;

    // The connection is open: a greeting, or a whole answer (daytime), may be sent here.
    virtual void on_open(Session& session) { (void)session; }
    // Input arrived: `input` holds everything received and not yet consumed. Consume what forms
    // a frame and leave a partial one for later; a client whose unconsumed input exceeds the
    // input limit is closed, so an unfinished frame cannot grow memory.
    virtual void on_input(Session& session, ByteQueue& input) = 0;
    // The client shut down its sending side; `input` holds what was left unconsumed. After
    // this the connection delivers what is queued, then closes.
    virtual void on_input_end(Session& session, ByteQueue& input) {
        (void)session;
        (void)input;
    }
    // The client can take more output (only after want_output_space(true)).
    virtual void on_output_space(Session& session) { (void)session; }
    // The connection closes; the Session must not be used once this returns. Cancel timers here.
    virtual void on_close() {}

    // The connection is done with this protocol: deletes it, unless it is the one instance that
    // serves every connection (SharedProtocol).
    virtual void release() noexcept { delete this; }
};

// A protocol that keeps nothing of its own per connection (echo, discard): the connection and
// the Session carry all the state, so one instance (shared_protocol) serves them all and an idle
// connection pays for no protocol object.
class SharedProtocol : public Protocol {
public:
    void release() noexcept final {}
};

// Gives a protocol back through Protocol::release. Converts from std::unique_ptr's own deleter,
// so a std::make_unique<P>() becomes a ProtocolPtr.
struct ProtocolRelease {
    ProtocolRelease() noexcept = default;
    template <class P>
    ProtocolRelease(std::default_delete<P> /*unused*/) noexcept {  // NOLINT: implicit on purpose
        static_assert(!std::is_base_of_v<SharedProtocol, P>, "a SharedProtocol comes from shared_protocol<P>()");
    }
    void operator()(Protocol* protocol) const noexcept { protocol->release(); }
};
using ProtocolPtr = std::unique_ptr<Protocol, ProtocolRelease>;

// The one instance of a SharedProtocol P.
template <class P>
ProtocolPtr shared_protocol() {
    static_assert(std::is_base_of_v<SharedProtocol, P>);
    static P instance;
    return ProtocolPtr(&instance);
}

// Makes the protocol for one new connection.
using ProtocolFactory = std::function<ProtocolPtr()>;

}  // namespace echoplex
