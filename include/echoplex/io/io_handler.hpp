// IoHandler: what the event loop calls when a watched descriptor is ready.
#pragma once

namespace echoplex {

// The loop's only callback type for descriptors. Handlers are owned by the caller; the loop keeps
// a pointer from watch() until unwatch(). A handler may watch, unwatch or close any descriptor
// (its own included) from inside a callback; it must not destroy a handler the loop still
// points to before that handler is unwatched (use EventLoop::defer to free objects after the batch).
class IoHandler {
public:
    // The descriptor is readable, or has a pending error or hangup (read(2) will say which).
    virtual void on_readable() = 0;
    // The descriptor is writable, or has a pending error (write(2) will say which).
    virtual void on_writable() = 0;

protected:
    IoHandler() = default;
    IoHandler(const IoHandler&) = default;
    IoHandler& operator=(const IoHandler&) = default;
    ~IoHandler() = default;
};

}  // namespace echoplex
