use super::*;
use chrono::{TimeZone, Timelike};
use serde_json::json;

const DAY: Duration = Duration::from_secs(86_400);

fn valid() -> Value {
    json!({
        "signal_type": "SAVE",
        "cqrs_id": "author",
        "instance_data": {"id": 1, "cqrs_revision": 0, "cqrs_updated": "2026-11-28 18:21:11.910419+00:00"},
        "previous_data": {"name": null},
        "instance_pk": 1,
        "correlation_id": null,
        "retries": 0,
        "expires": "2026-11-29T18:21:11+00:00",
        "meta": {}
    })
}

fn with(key: &str, value: Value) -> Value {
    let mut body = valid();
    body[key] = value;
    body
}

fn without(key: &str) -> Value {
    let mut body = valid();
    body.as_object_mut().unwrap().shift_remove(key);
    body
}

fn parse(value: Value) -> Result<Payload> {
    let from_value = Payload::from_value(value.clone());
    // Both entry points agree.
    let from_slice = Payload::from_slice(value.to_string().as_bytes());
    assert_eq!(
        format!("{from_value:?}"),
        format!("{from_slice:?}"),
        "from_value and from_slice disagree on {value}"
    );
    from_value
}

fn assert_wrong_type(key: &str, value: Value) {
    match parse(with(key, value.clone())) {
        Err(Error::WrongType { key: k, found, .. }) => {
            assert_eq!(k, key, "{key} = {value}");
            assert_eq!(found, JsonType::of(&value), "{key} = {value}");
        }
        other => panic!("{key} = {value}: expected WrongType, got {other:?}"),
    }
}

fn assert_invalid(key: &str, value: Value) -> String {
    match parse(with(key, value.clone())) {
        Err(Error::InvalidValue { key: k, reason }) => {
            assert_eq!(k, key, "{key} = {value}");
            reason
        }
        other => panic!("{key} = {value}: expected InvalidValue, got {other:?}"),
    }
}

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

#[test]
fn signal_type_names_round_trip() {
    for (t, name) in [
        (SignalType::Save, "SAVE"),
        (SignalType::Delete, "DELETE"),
        (SignalType::Sync, "SYNC"),
    ] {
        assert_eq!(t.as_str(), name);
        assert_eq!(t.to_string(), name);
        assert_eq!(name.parse::<SignalType>().unwrap(), t);
        assert_eq!(serde_json::to_value(t).unwrap(), json!(name));
        assert_eq!(
            serde_json::from_value::<SignalType>(json!(name)).unwrap(),
            t
        );
    }
}

#[test]
fn signal_type_rejects_other_spellings() {
    for bad in ["save", "Save", "UPDATE", "", " SAVE"] {
        match bad.parse::<SignalType>() {
            Err(Error::InvalidValue { key, reason }) => {
                assert_eq!(key, "signal_type");
                assert!(
                    reason.contains("\"SAVE\", \"DELETE\", \"SYNC\""),
                    "{reason}"
                );
            }
            other => panic!("{bad:?}: expected InvalidValue, got {other:?}"),
        }
        assert!(serde_json::from_value::<SignalType>(json!(bad)).is_err());
    }
}

#[test]
fn valid_body_parses_every_field() {
    let p = parse(valid()).unwrap();
    assert_eq!(p.signal_type, SignalType::Save);
    assert!(p.is_save() && !p.is_delete() && !p.is_sync());
    assert_eq!(p.cqrs_id, "author");
    assert_eq!(p.instance_data["id"], json!(1));
    assert_eq!(
        p.previous_data,
        Some(json!({"name": null}).as_object().unwrap().clone())
    );
    assert_eq!(p.instance_pk, json!(1));
    assert_eq!(p.correlation_id, None);
    assert_eq!(p.retries, 0);
    assert_eq!(
        p.expires,
        Expiry::At(parse_timestamp("2026-11-29T18:21:11+00:00").unwrap())
    );
    assert_eq!(p.meta, Some(json!({})));
    assert_eq!(p.to_value(), valid());
}

#[test]
fn not_json_is_not_json() {
    for body in [
        &b"not json"[..],
        b"",
        b"{",
        b"{\"a\":1} trailing",
        b"\xEF\xBB",
    ] {
        assert!(
            matches!(Payload::from_slice(body), Err(Error::NotJson { .. })),
            "{body:?}"
        );
    }
}

#[test]
fn invalid_utf8_is_not_json() {
    let mut body = valid().to_string().into_bytes();
    // Inside the cqrs_id string: "author" -> "\xFFuthor".
    let at = body.windows(6).position(|w| w == b"author").unwrap();
    body[at] = 0xFF;
    assert!(matches!(
        Payload::from_slice(&body),
        Err(Error::NotJson { .. })
    ));
}

#[test]
fn deeply_nested_json_is_rejected_without_overflow() {
    let body = "[".repeat(100_000);
    assert!(matches!(
        Payload::from_slice(body.as_bytes()),
        Err(Error::NotJson { .. })
    ));
}

#[test]
fn non_object_bodies_are_not_an_object() {
    for (body, found) in [
        ("[]", JsonType::Array),
        ("[1, 2]", JsonType::Array),
        ("\"SAVE\"", JsonType::String),
        ("42", JsonType::Number),
        ("null", JsonType::Null),
        ("true", JsonType::Bool),
    ] {
        match Payload::from_slice(body.as_bytes()) {
            Err(Error::NotAnObject { found: f }) => assert_eq!(f, found, "{body}"),
            other => panic!("{body}: expected NotAnObject, got {other:?}"),
        }
    }
}

#[test]
fn each_missing_required_key_is_reported() {
    for key in ["instance_pk", "signal_type", "cqrs_id", "instance_data"] {
        match parse(without(key)) {
            Err(Error::MissingKey { key: k }) => assert_eq!(k, key),
            other => panic!("without {key}: expected MissingKey, got {other:?}"),
        }
    }
}

#[test]
fn missing_keys_are_reported_in_reference_order() {
    match Payload::from_value(json!({})) {
        Err(Error::MissingKey { key }) => assert_eq!(key, "instance_pk"),
        other => panic!("expected MissingKey, got {other:?}"),
    }
    // A missing key wins over a wrong type elsewhere.
    let mut body = with("signal_type", json!(5));
    body.as_object_mut().unwrap().shift_remove("instance_data");
    assert!(matches!(
        Payload::from_value(body),
        Err(Error::MissingKey {
            key: "instance_data"
        })
    ));
}

#[test]
fn optional_keys_default_when_absent() {
    let mut body = valid();
    for key in [
        "previous_data",
        "correlation_id",
        "retries",
        "expires",
        "meta",
    ] {
        body.as_object_mut().unwrap().shift_remove(key);
    }
    let p = parse(body).unwrap();
    assert_eq!(p.previous_data, None);
    assert_eq!(p.correlation_id, None);
    assert_eq!(p.retries, 0);
    assert_eq!(p.expires, Expiry::Unspecified);
    assert_eq!(p.meta, None);
}

#[test]
fn null_optional_keys_default() {
    let p = parse(with("retries", Value::Null)).unwrap();
    assert_eq!(p.retries, 0);
    let p = parse(with("meta", Value::Null)).unwrap();
    assert_eq!(p.meta, None);
    let p = parse(with("previous_data", Value::Null)).unwrap();
    assert_eq!(p.previous_data, None);
    let p = parse(with("correlation_id", json!("abc"))).unwrap();
    assert_eq!(p.correlation_id.as_deref(), Some("abc"));
}

#[test]
fn wrong_types_are_reported_with_their_key() {
    let cases: &[(&str, &[Value])] = &[
        (
            "signal_type",
            &[json!(1), Value::Null, json!(["SAVE"]), json!({})],
        ),
        (
            "cqrs_id",
            &[json!(1), Value::Null, json!(true), json!(["author"])],
        ),
        (
            "instance_data",
            &[Value::Null, json!([]), json!("{}"), json!(1)],
        ),
        (
            "previous_data",
            &[json!([]), json!("x"), json!(1), json!(false)],
        ),
        ("instance_pk", &[Value::Null, json!({"id": 1}), json!([1])]),
        (
            "correlation_id",
            &[json!(1), json!({}), json!([]), json!(true)],
        ),
        ("retries", &[json!("1"), json!([]), json!({}), json!(true)]),
        (
            "expires",
            &[json!(1_700_000_000), json!({}), json!([]), json!(false)],
        ),
        ("meta", &[json!([]), json!("x"), json!(1), json!(true)]),
    ];
    for (key, values) in cases {
        for value in values.iter() {
            assert_wrong_type(key, value.clone());
        }
    }
}

#[test]
fn unknown_signal_type_is_invalid() {
    let reason = assert_invalid("signal_type", json!("UPDATE"));
    assert!(reason.contains("UPDATE"), "{reason}");
    assert_invalid("signal_type", json!("save"));
}

#[test]
fn bad_expires_dates_are_invalid() {
    for bad in [
        "tomorrow",
        "2026-13-40T00:00:00+00:00",
        "",
        "2026-11-29T18:21:11",
        "2026-11-29",
    ] {
        assert_invalid("expires", json!(bad));
    }
}

#[test]
fn expires_accepts_iso_spellings() {
    let expected = parse_timestamp("2026-11-29T18:21:11+00:00").unwrap();
    for s in [
        "2026-11-29T18:21:11Z",
        "2026-11-29 18:21:11+00:00",
        "2026-11-29T18:21:11.000000+00:00",
        "2026-11-29T13:21:11-05:00",
    ] {
        match parse(with("expires", json!(s))).unwrap().expires {
            Expiry::At(at) => assert_eq!(at, expected, "{s}"),
            other => panic!("{s}: expected At, got {other:?}"),
        }
    }
}

#[test]
fn negative_retries_are_invalid() {
    assert_invalid("retries", json!(-1));
}

#[test]
fn retries_larger_than_u32_are_invalid() {
    assert_invalid("retries", json!(u64::from(u32::MAX) + 1));
    assert_invalid("retries", json!(u64::MAX));
    assert_eq!(
        parse(with("retries", json!(u32::MAX))).unwrap().retries,
        u32::MAX
    );
}

#[test]
fn fractional_retries_are_invalid() {
    assert_invalid("retries", json!(1.5));
}

#[test]
fn pk_null_or_object_is_wrong_type() {
    assert_wrong_type("instance_pk", Value::Null);
    assert_wrong_type("instance_pk", json!({"id": 1}));
    assert_wrong_type("instance_pk", json!([1]));
}

#[test]
fn pk_scalars_are_accepted() {
    for pk in [
        json!(1),
        json!("6cf873fd-0349-4f7d-b40d-4b093cfc3cec"),
        json!("2024-01-01"),
        json!(1.5),
        json!(true),
    ] {
        assert_eq!(
            parse(with("instance_pk", pk.clone())).unwrap().instance_pk,
            pk
        );
    }
}

#[test]
fn unknown_top_level_keys_are_ignored() {
    let mut body = valid();
    body["queue"] = json!("replica_b");
    body["future_key"] = json!({"anything": [1, 2]});
    let p = parse(body).unwrap();
    assert_eq!(p.to_value(), valid());
}

#[test]
fn absent_expires_is_unspecified_and_expires_one_ttl_after_receipt() {
    let p = parse(without("expires")).unwrap();
    assert_eq!(p.expires, Expiry::Unspecified);
    let due = received() + TimeDelta::seconds(86_400);
    assert_eq!(p.expires_at(received(), Some(DAY)), Some(due));
    assert!(!p.is_expired(due - TimeDelta::seconds(1), received(), Some(DAY)));
    assert!(p.is_expired(due, received(), Some(DAY)));
    // Without a default TTL it never expires.
    assert_eq!(p.expires_at(received(), None), None);
    assert!(!p.is_expired(received() + TimeDelta::days(10_000), received(), None));
    // A TTL too large to represent means never, not a panic.
    assert_eq!(p.expires_at(received(), Some(Duration::MAX)), None);
    // Serializing omits the key.
    assert!(p.to_value().get("expires").is_none());
}

#[test]
fn null_expires_never_expires() {
    let p = parse(with("expires", Value::Null)).unwrap();
    assert_eq!(p.expires, Expiry::Never);
    assert_eq!(p.expires_at(received(), Some(DAY)), None);
    let far = Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap();
    assert!(!p.is_expired(far, received(), Some(DAY)));
    assert_eq!(p.to_value()["expires"], Value::Null);
}

#[test]
fn explicit_expires_is_compared_in_utc() {
    let p = parse(with("expires", json!("2026-11-29T13:21:11-05:00"))).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 29, 18, 21, 11).unwrap();
    // The default TTL does not apply to an explicit expiry.
    assert_eq!(
        p.expires_at(received(), Some(Duration::from_secs(1))),
        Some(at)
    );
    assert!(!p.is_expired(at - TimeDelta::seconds(1), received(), Some(DAY)));
    assert!(p.is_expired(at, received(), Some(DAY)));
    // The offset is kept when written again.
    assert_eq!(p.to_value()["expires"], json!("2026-11-29T13:21:11-05:00"));
}

#[test]
fn expires_is_written_with_second_precision() {
    let p = parse(with("expires", json!("2026-11-29 18:21:11.999999Z"))).unwrap();
    assert_eq!(p.to_value()["expires"], json!("2026-11-29T18:21:11+00:00"));
}

#[test]
fn with_ttl_truncates_to_seconds_or_never() {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 28, 18, 21, 11)
        .unwrap()
        .with_nanosecond(910_419_000)
        .unwrap();
    let p = Payload::new(SignalType::Save, "author", json!(1), Map::new());
    let p = p.with_ttl(now, Some(DAY));
    assert_eq!(p.to_value()["expires"], json!("2026-11-29T18:21:11+00:00"));
    let p = p.with_ttl(now, None);
    assert_eq!(p.expires, Expiry::Never);
    let p = p.with_ttl(now, Some(Duration::MAX));
    assert_eq!(p.expires, Expiry::Never);
}

#[test]
fn new_payload_serializes_in_reference_key_order() {
    let mut data = Map::new();
    data.insert("id".into(), json!(2));
    data.insert("cqrs_revision".into(), json!(1));
    data.insert(
        "cqrs_updated".into(),
        json!("2026-11-28 18:21:11.928644+00:00"),
    );
    let p = Payload::new(SignalType::Delete, "author", json!(2), data)
        .with_ttl(
            Utc.with_ymd_and_hms(2026, 11, 28, 18, 21, 11).unwrap(),
            Some(DAY),
        )
        .with_meta(Map::new());
    let text = String::from_utf8(p.to_vec()).unwrap();
    assert_eq!(
        text,
        r#"{"signal_type":"DELETE","cqrs_id":"author","instance_data":{"id":2,"cqrs_revision":1,"cqrs_updated":"2026-11-28 18:21:11.928644+00:00"},"previous_data":null,"instance_pk":2,"correlation_id":null,"retries":0,"expires":"2026-11-29T18:21:11+00:00","meta":{}}"#
    );
    assert_eq!(Payload::from_slice(text.as_bytes()).unwrap(), p);
}

#[test]
fn new_payload_defaults_and_builders() {
    let p = Payload::new(SignalType::Sync, "author", json!("pk"), Map::new());
    assert_eq!(p.previous_data, None);
    assert_eq!(p.correlation_id, None);
    assert_eq!(p.retries, 0);
    assert_eq!(p.expires, Expiry::Unspecified);
    assert_eq!(p.meta, None);
    let value = p.to_value();
    assert_eq!(value["meta"], Value::Null);
    assert_eq!(value["previous_data"], Value::Null);

    let mut prev = Map::new();
    prev.insert("name".into(), Value::Null);
    let p = p
        .with_previous_data(prev.clone())
        .with_correlation_id("corr-1")
        .with_retries(3)
        .with_expires(Expiry::Never);
    assert_eq!(p.previous_data, Some(prev));
    assert_eq!(p.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(p.retries, 3);
    assert_eq!(p.expires, Expiry::Never);
    assert_eq!(Payload::from_slice(&p.to_vec()).unwrap(), p);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: truncations and byte flips of a valid body.
    let body = valid().to_string().into_bytes();
    for len in 0..body.len() {
        let _ = Payload::from_slice(&body[..len]);
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..2_000 {
        let mut mutated = body.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % mutated.len() as u64) as usize;
            mutated[i] = (state >> 32) as u8;
        }
        let _ = Payload::from_slice(&mutated);
    }
}

#[test]
fn a_body_with_python_nan_or_infinity_is_refused_with_that_reason() {
    for literal in ["NaN", "Infinity", "-Infinity"] {
        let body = format!(
            r#"{{"signal_type":"SAVE","cqrs_id":"author","instance_pk":1,"instance_data":{{"id":1,"score": {literal}}}}}"#
        );
        let error = Payload::from_slice(body.as_bytes()).unwrap_err();
        assert!(
            error.to_string().contains("NaN or Infinity"),
            "{literal}: {error}"
        );
        assert!(error.is_malformed_input(), "{error:?}");
    }
}

#[test]
fn nan_inside_a_string_is_no_reason_to_blame_the_floats() {
    let body = br#"{"signal_type":"SAVE","cqrs_id":"author","instance_pk":1,"instance_data":{"name":"NaN, Infinity"}, oops}"#;
    let error = Payload::from_slice(body).unwrap_err();
    assert!(matches!(error, Error::NotJson { .. }), "{error:?}");
}
