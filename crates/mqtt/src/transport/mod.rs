//! The byte streams MQTT travels over besides plain TCP: TLS (`net::tls`) and WebSocket
//! ([`websocket`]), for browsers. The broker's connection task reads and writes any
//! `AsyncRead + AsyncWrite`, so a transport is only a way to get one from an accepted
//! socket.

pub mod websocket;
