//! Frames through the user-mode stack with real host sockets on 127.0.0.1.
