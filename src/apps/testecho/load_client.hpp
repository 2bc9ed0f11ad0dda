// LoadClient: one testecho connection as an IoHandler. It connects without blocking, keeps up
// to --pipeline messages in flight (paced by --rate), reads the echoes back, checks every byte
// against what it sent, and records per-message latency and the connect time into the run's
// RunResult. Idle clients connect and then only watch for the server misbehaving.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "chargen_check.hpp"
#include "report.hpp"
#include "settings.hpp"
#include "stamp.hpp"

namespace echoplex::testecho {

class LoadClient;

// One address a name resolved to.
struct Address {
    sockaddr_storage address{};
    socklen_t length = 0;
    std::string text;  // "127.0.0.1:50007", "[::1]:50007"
};

// A connect target: a host and port, resolved once per run to every address the resolver gives,
// in its order. A client tries them in turn from `preferred` until one connects; the one that
// did becomes `preferred`, so later clients start there (localhost: ::1 first, a server on
// 127.0.0.1 only: one refused connect, then every client goes straight to 127.0.0.1).
struct Target {
    std::vector<Address> candidates;  // never empty
    std::size_t preferred = 0;
    bool connected = false;  // some client connected to candidates[preferred]
    std::string name;        // "localhost:50007" as given, for error reports
};

// What every client of one run shares. Owned by the run; outlives its clients.
struct LoadContext {
    enum class Event { connected, connect_failed, finished };

    EventLoop& loop;
    const LoadSettings& settings;
    RunResult& result;
    // The messages sent in turn; for a generated payload, one `size`-byte window per client
    // is taken from `pattern` at an offset that depends on the client id, so data that crosses
    // from one connection to another does not verify.
    std::vector<std::string_view> messages;
    std::string_view pattern;
    Clock::duration timeout{};
    // Every state change a run cares about; called from inside the client's callbacks.
    std::function<void(LoadClient&, Event)> notify;
    std::vector<char> read_buffer = std::vector<char>(64 * 1024);  // one buffer for every client
    std::size_t errors_logged = 0;
    // The measured window starts here (after --warmup): messages meant to be sent earlier, and
    // chargen lines received earlier, are warm-up and are counted nowhere.
    Clock::time_point window_start{};
    Histogram interval_latency;  // the latencies of the interval under way (--interval)
    std::size_t open = 0;        // connections established now, idle ones included
};

class LoadClient final : public IoHandler {
public:
    enum class Role { active, idle };
    enum class State { waiting, connecting, running, finished };

    // `quota`: messages to send before finishing (UINT64_MAX: until stop_sending()).
    LoadClient(LoadContext& context, std::size_t id, Role role, Target& target, std::uint64_t quota);
    LoadClient(const LoadClient&) = delete;
    LoadClient& operator=(const LoadClient&) = delete;
    ~LoadClient();

    // Starts the non-blocking connect. Failures are counted, reported and finish the client.
    void start();
    // No new messages from now on; the client finishes once its messages in flight are echoed.
    // A client not yet started finishes at once, counting nothing.
    void stop_sending();
    // For idle clients at the end of the run: counts it as held if still open, then closes it.
    void finish_idle();
    // Connect or reply deadline check, called periodically by the run.
    void check_timeout(Clock::time_point now);
    // The drain deadline passed: messages still in flight count as one timeout error.
    void expire();
    // Messages this active connection completed in the measured window, over every reconnect.
    std::uint64_t completed() const noexcept { return completed_; }

    std::size_t id() const noexcept { return id_; }
    Role role() const noexcept { return role_; }
    State state() const noexcept { return state_; }
    bool finished() const noexcept { return state_ == State::finished; }

    void on_readable() override;
    void on_writable() override;

private:
    struct InFlight {
        std::string_view bytes;
        Clock::time_point intended;  // when it was (or, under --rate, should have been) sent
    };
    enum class Kind { connect, mismatch, closed, timeout };

    void connected();
    void fail(Kind kind, const std::string& what);
    void finish();
    void fill(Clock::time_point now);
    void flush();
    void receive();
    void verify(std::string_view data, Clock::time_point now);
    void update_interest();
    // Connects to candidate_; false when it failed (the failure is handled).
    void connect_candidate();
    // A connect to candidate_ failed with `err`: the next address if one is left and the error
    // says this address is wrong (refused, unreachable), else a connect failure.
    void connect_failed(const std::string& what, int err);
    void maybe_finish();
    // An active connection that has sent (or, chargen, received) all it will: closes, except
    // that a discard connection first sends its FIN and waits for the peer's, reading nothing.
    void finish_active();
    // --reconnect-every: closes this connection and connects again, the stream starting over.
    void reconnect();
    // One message done: counted, and its latency recorded when `timed`, unless it belongs to the
    // warm-up.
    void complete_message(Clock::time_point now, Clock::time_point intended, bool timed, std::size_t bytes);
    // chargen: checks what arrived, counting the lines it completes.
    void take_chargen(std::string_view data, Clock::time_point now);
    std::string_view message(std::uint64_t seq) const noexcept;

    LoadContext& context_;
    std::size_t id_;
    Role role_;
    Target& target_;
    std::size_t candidate_ = 0;  // the address being tried
    std::size_t tried_ = 0;      // addresses tried by this client
    std::uint64_t quota_;
    State state_ = State::waiting;
    UniqueFd fd_;

    std::deque<InFlight> in_flight_;
    std::size_t unsent_index_ = 0;   // first entry of in_flight_ not completely written
    std::size_t unsent_offset_ = 0;  // bytes of that entry already written
    std::size_t echoed_offset_ = 0;  // bytes of in_flight_.front() already echoed and verified
    std::uint64_t queued_ = 0;       // messages put in flight so far
    std::uint64_t data_offset_ = 0;  // verified data bytes: the offset reported on a mismatch
    std::uint64_t completed_ = 0;    // messages done in the measured window
    std::uint64_t on_connection_ = 0;  // messages queued (chargen: lines received) since connecting
    std::uint64_t received_ = 0;     // bytes received on this connection (discard: all unexpected)
    bool stopping_ = false;
    bool counted_open_ = false;      // counted in LoadContext::open
    bool rate_started_ = false;      // the --rate schedule's origin is set (once: reconnects keep it)
    bool half_closed_ = false;       // discard: our FIN sent, waiting for the peer's
    Clock::time_point half_closed_at_{};
    ChargenCheck chargen_;

    Clock::time_point connect_started_{};
    Clock::time_point rate_origin_{};
    Clock::time_point last_progress_{};  // the last time an echo arrived or a wait began
    std::optional<TimerId> rate_timer_;

    std::optional<StampDecoder> stamp_;
    std::string decoded_;
};

}  // namespace echoplex::testecho
