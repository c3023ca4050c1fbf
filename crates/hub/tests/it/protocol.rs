//! Frames of docs/hub-protocol.md read exactly as written there, and the errors of frames
//! that are not, each naming what was wrong and where.

use hub::protocol::{BadRequest, Credentials, Data, Frame, Recover, Request, Room, decode};

fn room(name: &str) -> Room {
    Room::parse(name).expect("a valid room")
}

fn data(json: &str) -> Data {
    Data::parse(json).expect("one JSON value")
}

fn bad(id: Option<u64>, message: &str, at: Option<&'static str>) -> Result<Frame, BadRequest> {
    Err(BadRequest {
        id,
        message: message.into(),
        at,
    })
}

#[test]
fn the_documented_frames_read_as_their_requests() {
    let cases = [
        (
            r#"{"type":"connect","token":"eyJ.x.y"}"#,
            None,
            Request::Connect(Credentials::Token("eyJ.x.y".into())),
        ),
        (
            r#"{"type":"connect","name":"Alice"}"#,
            None,
            Request::Connect(Credentials::Anonymous("Alice".into())),
        ),
        (
            r#"{"type":"join","id":1,"room":"lobby"}"#,
            Some(1),
            Request::Join {
                room: room("lobby"),
                recover: None,
            },
        ),
        (
            r#"{"id":9,"type":"join","room":"team-a:ops","recover":{"epoch":"9d1e","offset":41}}"#,
            Some(9),
            Request::Join {
                room: room("team-a:ops"),
                recover: Some(Recover {
                    epoch: "9d1e".into(),
                    offset: 41,
                }),
            },
        ),
        (
            r#"{"type":"publish","id":2,"room":"lobby","data":{"text":"hi","n":[1,null]}}"#,
            Some(2),
            Request::Publish {
                room: room("lobby"),
                data: data(r#"{"text":"hi","n":[1,null]}"#),
            },
        ),
        (
            r#"{"type":"send","to":"bob","data":-14341388173125325917.00}"#,
            None,
            Request::Send {
                to: "bob".into(),
                // Relayed as sent: no float would hold it.
                data: data("-14341388173125325917.00"),
            },
        ),
        (
            r#"{"type":"leave","room":"lobby"}"#,
            None,
            Request::Leave {
                room: room("lobby"),
            },
        ),
        (
            r#"{"type":"presence","id":18446744073709551615,"room":"lobby"}"#,
            Some(u64::MAX),
            Request::Presence {
                room: room("lobby"),
            },
        ),
        (
            r#"{"type":"history","room":"lobby","limit":50}"#,
            None,
            Request::History {
                room: room("lobby"),
                limit: Some(50),
            },
        ),
    ];
    for (text, id, request) in cases {
        let frame = Frame { id, request };
        assert_eq!(decode(text), Ok(frame.clone()), "{text}");
        assert_eq!(decode(&frame.to_json()), Ok(frame), "{text} written back");
    }
}

#[test]
fn a_bad_frame_is_refused_with_what_was_wrong_and_where() {
    let long_room = "r".repeat(129);
    let long_room = format!(r#"{{"type":"leave","room":"{long_room}"}}"#);
    let cases: Vec<(&str, Result<Frame, BadRequest>)> = vec![
        ("[1]", bad(None, "a frame is a JSON object", None)),
        (r#"{"id":3}"#, bad(Some(3), "type is missing", Some("type"))),
        (
            r#"{"type":"shout","id":4}"#,
            bad(Some(4), r#"unknown type "shout""#, Some("type")),
        ),
        (
            r#"{"type":"join","id":-1,"room":"a"}"#,
            bad(None, "id must be an unsigned integer", Some("id")),
        ),
        (
            r#"{"type":"join","id":5}"#,
            bad(Some(5), "room is missing", Some("room")),
        ),
        (
            r#"{"type":"join","id":6,"room":"lob by"}"#,
            bad(
                Some(6),
                "' ' is not allowed in a room name (A-Z a-z 0-9 - _ . :)",
                Some("room"),
            ),
        ),
        (
            &long_room,
            bad(None, "a room name has 1 to 128 characters", Some("room")),
        ),
        (
            r#"{"type":"join","room":"a","rooms":["b"]}"#,
            bad(None, r#""join" has no field "rooms""#, None),
        ),
        (
            r#"{"type":"join","room":"a","recover":{"epoch":"e"}}"#,
            bad(
                None,
                r#"recover is {"epoch": string, "offset": unsigned integer}"#,
                Some("recover"),
            ),
        ),
        (
            r#"{"type":"publish","room":"a"}"#,
            bad(None, "data is missing", Some("data")),
        ),
        (
            r#"{"type":"publish","room":"a","room":"b","data":1}"#,
            bad(None, r#""room" is given twice at line 1 column 35"#, None),
        ),
        (
            r#"{"type":"connect","token":"t","name":"n"}"#,
            bad(None, "connect takes either token or name", None),
        ),
        (
            r#"{"type":"connect","name":"a\u0007b"}"#,
            bad(
                None,
                "name has 1 to 64 bytes and no control characters",
                Some("name"),
            ),
        ),
        (
            r#"{"type":"history","room":"a","limit":4294967296}"#,
            bad(
                None,
                "limit must be an unsigned integer below 2^32",
                Some("limit"),
            ),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(decode(text), want, "{text}");
    }
    let not_json = decode("{\"type\":").expect_err("not JSON");
    assert!(
        not_json.message.starts_with("not JSON: EOF while parsing"),
        "{not_json:?}"
    );
}
