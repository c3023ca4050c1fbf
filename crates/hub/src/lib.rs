//! The hub: WebSocket rooms, direct messages, presence, history and recovery, its nodes
//! linked through the backplane (issue 11). Built protocol first: [`protocol`] is the
//! wire format of docs/hub-protocol.md, read strictly, which the service, the chat page
//! and the tests share.

pub mod protocol;
