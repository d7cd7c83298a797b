//! Golden messages of the reference implementation (django-cqrs 3.1.0): every line parses,
//! serializes back to the same JSON value, and every `instance_data` field decodes with its
//! Rust type and encodes back to the identical JSON value.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use cqrs_core::{Expiry, Payload, SignalType, WireValue};
use serde_json::{Map, Value, json};
use uuid::Uuid;

const GOLDEN: &str = include_str!("fixtures/django-cqrs-3.1.0.jsonl");

/// The sequence described in `wire/README.md`: signal type, instance_pk, cqrs_revision.
const EXPECTED: [(SignalType, i64, i64); 10] = [
    (SignalType::Save, 1, 0),
    (SignalType::Save, 1, 1),
    (SignalType::Save, 2, 0),
    (SignalType::Sync, 2, 0),
    (SignalType::Sync, 2, 0),
    (SignalType::Delete, 2, 1),
    (SignalType::Save, 100, 0),
    (SignalType::Save, 101, 0),
    (SignalType::Save, 100, 1),
    (SignalType::Save, 101, 1),
];

fn lines() -> Vec<&'static str> {
    GOLDEN.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn expires() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2026-11-29T18:21:11+00:00").unwrap()
}

/// Decodes `data[key]` as `T`, encodes it again and asserts the JSON value is identical.
fn check_field<T: WireValue + std::fmt::Debug>(
    line: usize,
    data: &Map<String, Value>,
    key: &str,
) -> T {
    let wire = data
        .get(key)
        .unwrap_or_else(|| panic!("line {line}: instance_data.{key} is missing"));
    let value = T::from_wire(wire)
        .unwrap_or_else(|e| panic!("line {line}: {}", e.at(format!("instance_data.{key}"))));
    assert_eq!(
        &value.to_wire(),
        wire,
        "line {line}: instance_data.{key} = {value:?} encodes differently"
    );
    value
}

#[test]
fn golden_file_has_the_documented_sequence() {
    assert_eq!(lines().len(), EXPECTED.len());
}

#[test]
fn every_line_parses_and_serializes_to_the_same_value() {
    for (i, line) in lines().into_iter().enumerate() {
        let original: Value = serde_json::from_str(line).unwrap();
        let payload =
            Payload::from_slice(line.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert_eq!(payload.to_value(), original, "line {}", i + 1);
        // The published bytes parse to the same value as well (ujson escapes non-ASCII, we
        // write UTF-8, so the bytes themselves differ).
        let ours: Value = serde_json::from_slice(&payload.to_vec()).unwrap();
        assert_eq!(ours, original, "line {}", i + 1);
        assert_eq!(Payload::from_slice(&payload.to_vec()).unwrap(), payload);
    }
}

#[test]
fn every_line_serializes_keys_in_reference_order() {
    for (i, line) in lines().into_iter().enumerate() {
        let payload = Payload::from_slice(line.as_bytes()).unwrap();
        let ours = payload.to_value();
        let original: Value = serde_json::from_str(line).unwrap();
        let our_keys: Vec<&String> = ours.as_object().unwrap().keys().collect();
        let their_keys: Vec<&String> = original.as_object().unwrap().keys().collect();
        assert_eq!(our_keys, their_keys, "line {}", i + 1);
    }
}

#[test]
fn routing_fields_are_right() {
    for (i, line) in lines().into_iter().enumerate() {
        let (signal_type, pk, revision) = EXPECTED[i];
        let p = Payload::from_slice(line.as_bytes()).unwrap();
        let n = i + 1;
        assert_eq!(p.signal_type, signal_type, "line {n}");
        assert_eq!(p.cqrs_id, "author", "line {n}");
        assert_eq!(p.instance_pk, json!(pk), "line {n}");
        assert_eq!(p.retries, 0, "line {n}");
        assert_eq!(p.expires, Expiry::At(expires()), "line {n}");
        assert_eq!(p.correlation_id, None, "line {n}");
        assert_eq!(p.meta, Some(json!({})), "line {n}");
        assert_eq!(p.instance_data["id"], json!(pk), "line {n}");
        assert_eq!(
            p.instance_data["cqrs_revision"],
            json!(revision),
            "line {n}"
        );
        if p.is_delete() {
            assert_eq!(p.previous_data, None, "line {n}");
        } else {
            let previous = p.previous_data.as_ref().unwrap();
            assert_eq!(previous.keys().collect::<Vec<_>>(), ["name"], "line {n}");
        }
    }
}

#[test]
fn every_instance_data_field_decodes_and_encodes_identically() {
    for (i, line) in lines().into_iter().enumerate() {
        let n = i + 1;
        let p = Payload::from_slice(line.as_bytes()).unwrap();
        let data = &p.instance_data;

        let id: i64 = check_field(n, data, "id");
        assert_eq!(json!(id), p.instance_pk, "line {n}");
        let _: i64 = check_field(n, data, "cqrs_revision");
        let updated: DateTime<Utc> = check_field(n, data, "cqrs_updated");
        assert_eq!(
            updated.date_naive(),
            NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
        );

        if p.is_delete() {
            let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["cqrs_revision", "cqrs_updated", "id"], "line {n}");
            continue;
        }

        let _: String = check_field(n, data, "name");
        let _: Option<String> = check_field(n, data, "email");
        let _: Option<NaiveDate> = check_field(n, data, "birth_date");
        let _: DateTime<Utc> = check_field(n, data, "joined_at");
        let _: bool = check_field(n, data, "active");
        let _: f64 = check_field(n, data, "score");
        let _: Uuid = check_field(n, data, "external_id");
        let _: Option<String> = check_field(n, data, "bio");
        assert_eq!(data.len(), 11, "line {n}: unexpected fields in {data:?}");
    }
}

#[test]
fn first_line_decodes_to_the_documented_row() {
    let p = Payload::from_slice(lines()[0].as_bytes()).unwrap();
    let data = &p.instance_data;
    assert_eq!(String::from_wire(&data["name"]).unwrap(), "Pavel");
    assert_eq!(
        Option::<NaiveDate>::from_wire(&data["birth_date"]).unwrap(),
        NaiveDate::from_ymd_opt(1990, 5, 17)
    );
    assert_eq!(
        DateTime::<Utc>::from_wire(&data["joined_at"]).unwrap(),
        DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678901Z").unwrap()
    );
    assert_eq!(f64::from_wire(&data["score"]).unwrap(), 4.5);
    assert_eq!(
        Option::<String>::from_wire(&data["bio"]).unwrap().unwrap(),
        "Hello \"world\"\nnew line, unicode: Привет ✓"
    );
}
