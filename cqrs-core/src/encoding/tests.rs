use super::*;
use chrono::TimeZone;
use serde_json::json;

fn round_trip<T: WireValue + PartialEq + fmt::Debug>(value: T, wire: Value) {
    assert_eq!(value.to_wire(), wire, "encoding {value:?}");
    assert_eq!(T::from_wire(&wire), Ok(value), "decoding {wire}");
}

fn utc(s: &str) -> DateTime<Utc> {
    parse_timestamp(s).unwrap().with_timezone(&Utc)
}

fn assert_invalid<T: WireValue + fmt::Debug>(wire: Value) -> ValueError {
    let err = T::from_wire(&wire).expect_err(&format!("{wire} must be rejected"));
    assert!(
        !err.is_wrong_type(),
        "{wire}: expected a value error, got {err}"
    );
    err
}

fn assert_wrong_type<T: WireValue + fmt::Debug>(wire: Value) -> ValueError {
    let err = T::from_wire(&wire).expect_err(&format!("{wire} must be rejected"));
    assert!(
        err.is_wrong_type(),
        "{wire}: expected a type error, got {err}"
    );
    assert_eq!(err.found(), JsonType::of(&wire));
    err
}

#[test]
fn bool_round_trips_and_rejects_other_types() {
    round_trip(true, json!(true));
    round_trip(false, json!(false));
    assert_wrong_type::<bool>(json!(1));
    assert_wrong_type::<bool>(json!("true"));
    assert_wrong_type::<bool>(Value::Null);
}

#[test]
fn integers_round_trip_at_their_boundaries() {
    round_trip(i8::MIN, json!(-128));
    round_trip(i8::MAX, json!(127));
    round_trip(i16::MIN, json!(i16::MIN));
    round_trip(i16::MAX, json!(i16::MAX));
    round_trip(i32::MIN, json!(i32::MIN));
    round_trip(i32::MAX, json!(i32::MAX));
    round_trip(i64::MIN, json!(i64::MIN));
    round_trip(i64::MAX, json!(i64::MAX));
    round_trip(0u8, json!(0));
    round_trip(u8::MAX, json!(255));
    round_trip(u16::MAX, json!(65535));
    round_trip(u32::MAX, json!(4294967295u64));
    round_trip(u64::MAX, json!(u64::MAX));
}

#[test]
fn u64_above_i64_max_round_trips_through_text() {
    let big = i64::MAX as u64 + 1;
    round_trip(big, json!(big));
    let parsed: Value = serde_json::from_str("18446744073709551615").unwrap();
    assert_eq!(u64::from_wire(&parsed), Ok(u64::MAX));
    assert_eq!(u64::MAX.to_wire().to_string(), "18446744073709551615");
}

#[test]
fn out_of_range_integers_are_rejected() {
    let err = assert_invalid::<i8>(json!(128));
    assert!(err.reason().unwrap().contains("-128..=127"), "{err}");
    assert_invalid::<i8>(json!(-129));
    assert_invalid::<u8>(json!(-1));
    assert_invalid::<u32>(json!(4294967296u64));
    assert_invalid::<i64>(json!(u64::MAX));
    assert_invalid::<u64>(json!(-1));
}

#[test]
fn integers_reject_fractions_exponents_and_other_types() {
    let err = assert_invalid::<i64>(json!(1.0));
    assert!(err.reason().unwrap().contains("not an integer"), "{err}");
    assert_invalid::<i64>(json!(4.5));
    assert_invalid::<i64>(serde_json::from_str("1e3").unwrap());
    assert_wrong_type::<i64>(json!("1"));
    assert_wrong_type::<i32>(Value::Null);
    assert_wrong_type::<u8>(json!([1]));
}

#[test]
fn f64_keeps_integer_valued_floats_as_floats() {
    round_trip(0.0f64, json!(0.0));
    assert_eq!(0.0f64.to_wire().to_string(), "0.0");
    assert_eq!(4.5f64.to_wire().to_string(), "4.5");
    round_trip(-1.25e300f64, json!(-1.25e300));
    round_trip(f64::MAX, json!(f64::MAX));
    // The golden messages write `0.0`; parsing and encoding again keeps it.
    let parsed: Value = serde_json::from_str("0.0").unwrap();
    assert_eq!(f64::from_wire(&parsed).unwrap().to_wire(), parsed);
}

#[test]
fn floats_decode_from_integers() {
    assert_eq!(f64::from_wire(&json!(3)), Ok(3.0));
    assert_eq!(f64::from_wire(&json!(u64::MAX)), Ok(u64::MAX as f64));
    assert_eq!(f32::from_wire(&json!(-7)), Ok(-7.0));
}

#[test]
fn non_finite_floats_encode_as_null() {
    assert_eq!(f64::NAN.to_wire(), Value::Null);
    assert_eq!(f64::INFINITY.to_wire(), Value::Null);
    assert_eq!(f64::NEG_INFINITY.to_wire(), Value::Null);
    assert_eq!(f32::NAN.to_wire(), Value::Null);
    assert_eq!(f32::INFINITY.to_wire(), Value::Null);
}

#[test]
fn floats_reject_other_types_and_f32_overflow() {
    assert_wrong_type::<f64>(json!("4.5"));
    assert_wrong_type::<f64>(Value::Null);
    assert_wrong_type::<f32>(json!(true));
    assert_invalid::<f32>(json!(1e300));
}

#[test]
fn f32_is_written_with_its_shortest_decimal_form() {
    assert_eq!(0.1f32.to_wire().to_string(), "0.1");
    round_trip(0.1f32, json!(0.1));
    round_trip(0.0f32, json!(0.0));
    round_trip(f32::MAX, f32::MAX.to_wire());
    round_trip(f32::MIN_POSITIVE, f32::MIN_POSITIVE.to_wire());
}

#[test]
fn string_round_trips_and_rejects_other_types() {
    round_trip(String::new(), json!(""));
    round_trip(
        "Hello \"world\"\nПривет ✓".to_owned(),
        json!("Hello \"world\"\nПривет ✓"),
    );
    assert_wrong_type::<String>(json!(1));
    assert_wrong_type::<String>(Value::Null);
}

#[test]
fn option_maps_null_to_none() {
    round_trip(None::<String>, Value::Null);
    round_trip(Some("x".to_owned()), json!("x"));
    round_trip(Some(5i32), json!(5));
    round_trip(None::<NaiveDate>, Value::Null);
    assert_wrong_type::<Option<String>>(json!(5));
    assert_invalid::<Option<i8>>(json!(500));
}

#[test]
fn json_value_passes_through() {
    for v in [
        Value::Null,
        json!({"a": [1, 2.5, "x", null]}),
        json!([]),
        json!("s"),
    ] {
        round_trip(v.clone(), v);
    }
}

#[test]
fn uuid_is_lowercase_hyphenated_and_accepts_other_forms() {
    let id = uuid::Uuid::parse_str("12345678-1234-5678-1234-567812345678").unwrap();
    round_trip(id, json!("12345678-1234-5678-1234-567812345678"));
    let upper = uuid::Uuid::parse_str("6CF873FD-0349-4F7D-B40D-4B093CFC3CEC").unwrap();
    assert_eq!(
        upper.to_wire(),
        json!("6cf873fd-0349-4f7d-b40d-4b093cfc3cec")
    );
    for form in [
        "6CF873FD-0349-4F7D-B40D-4B093CFC3CEC",
        "6cf873fd03494f7db40d4b093cfc3cec",
        "{6cf873fd-0349-4f7d-b40d-4b093cfc3cec}",
        "urn:uuid:6cf873fd-0349-4f7d-b40d-4b093cfc3cec",
    ] {
        assert_eq!(uuid::Uuid::from_wire(&json!(form)), Ok(upper), "{form}");
    }
    assert_invalid::<uuid::Uuid>(json!("not-a-uuid"));
    assert_wrong_type::<uuid::Uuid>(json!(12345));
}

#[test]
fn date_round_trips_and_rejects_bad_dates() {
    round_trip(
        NaiveDate::from_ymd_opt(1990, 5, 17).unwrap(),
        json!("1990-05-17"),
    );
    round_trip(
        NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
        json!("0001-01-01"),
    );
    assert_invalid::<NaiveDate>(json!("2026-13-40"));
    assert_invalid::<NaiveDate>(json!("2023-02-29"));
    assert_invalid::<NaiveDate>(json!("1990-5-17"));
    assert_invalid::<NaiveDate>(json!("1990-05-17 00:00:00"));
    assert_invalid::<NaiveDate>(json!(""));
    assert_wrong_type::<NaiveDate>(json!(19900517));
}

#[test]
fn timestamp_is_written_like_python_str_datetime() {
    let ts = Utc
        .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
        .unwrap()
        .with_nanosecond(678_901_000)
        .unwrap();
    round_trip(ts, json!("2024-01-02 03:04:05.678901+00:00"));
    assert_eq!(format_timestamp(&ts), "2024-01-02 03:04:05.678901+00:00");
}

#[test]
fn timestamp_with_zero_microseconds_has_no_fraction() {
    let ts = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
    round_trip(ts, json!("2024-06-01 00:00:00+00:00"));
    // Sub-microsecond digits are truncated, so they give no fraction either.
    let tiny = ts.with_nanosecond(999).unwrap();
    assert_eq!(format_timestamp(&tiny), "2024-06-01 00:00:00+00:00");
    // Leading zeros of the fraction are kept.
    let small = ts.with_nanosecond(1_000).unwrap();
    assert_eq!(format_timestamp(&small), "2024-06-01 00:00:00.000001+00:00");
}

#[test]
fn timestamp_decoding_accepts_iso_spellings() {
    let expected = utc("2024-01-02 03:04:05.678901+00:00");
    for s in [
        "2024-01-02T03:04:05.678901+00:00",
        "2024-01-02T03:04:05.678901Z",
        "2024-01-02t03:04:05.678901z",
        "2024-01-02 03:04:05.678901+0000",
        "2024-01-02 03:04:05.678901+00",
        "2024-01-02 05:04:05.678901+02:00",
        "2024-01-02 03:04:05.678901999Z",
        "2024-01-01 22:04:05.678901-05:00",
    ] {
        assert_eq!(DateTime::<Utc>::from_wire(&json!(s)), Ok(expected), "{s}");
    }
}

#[test]
fn nine_digit_fractions_parse_exactly_and_decode_to_micros() {
    let ts = parse_timestamp("2024-01-02T03:04:05.123456789Z").unwrap();
    assert_eq!(ts.nanosecond(), 123_456_789);
    let decoded = DateTime::<Utc>::from_wire(&json!("2024-01-02T03:04:05.123456789Z")).unwrap();
    assert_eq!(decoded.nanosecond(), 123_456_000);
    assert_eq!(decoded.to_wire(), json!("2024-01-02 03:04:05.123456+00:00"));
    // Short fractions are scaled, not read as microseconds.
    assert_eq!(
        parse_timestamp("2024-01-02 03:04:05.5+00:00")
            .unwrap()
            .nanosecond(),
        500_000_000
    );
}

#[test]
fn negative_offsets_are_converted_to_utc() {
    let ts = parse_timestamp("2024-01-01 23:30:00-05:30").unwrap();
    assert_eq!(ts.offset().local_minus_utc(), -(5 * 3600 + 30 * 60));
    let decoded = DateTime::<Utc>::from_wire(&json!("2024-01-01 23:30:00-05:30")).unwrap();
    assert_eq!(decoded.to_wire(), json!("2024-01-02 05:00:00+00:00"));
}

#[test]
fn timestamp_decoding_rejects_malformed_values() {
    for s in [
        "tomorrow",
        "",
        "2026-13-40T00:00:00+00:00",
        "2026-02-29 00:00:00+00:00",
        "2024-01-02 24:00:00+00:00",
        "2024-01-02 23:60:00+00:00",
        "2024-01-02 23:59:60+00:00",
        "2024-01-02 03:04:05",
        "2024-01-02 03:04:05.+00:00",
        "2024-01-02 03:04:05.1234567890+00:00",
        "2024-01-02 03:04:05+24:00",
        "2024-01-02 03:04:05+00:00 ",
        "2024-01-02 03:04+00:00",
        "2024-01-02X03:04:05+00:00",
        "2024-01-02",
        "2024-01-02 03:04:05+00:00garbage",
        "2024-01-0é 03:04:05+00:00",
        "２０２４-01-02 03:04:05+00:00",
    ] {
        assert!(parse_timestamp(s).is_err(), "{s:?} must be rejected");
        assert_invalid::<DateTime<Utc>>(json!(s));
    }
    assert_wrong_type::<DateTime<Utc>>(json!(1_700_000_000));
    assert_wrong_type::<DateTime<Utc>>(Value::Null);
}

#[test]
fn timestamp_without_offset_is_rejected_for_utc() {
    let err = assert_invalid::<DateTime<Utc>>(json!("2024-01-02 03:04:05"));
    assert!(err.reason().unwrap().contains("no UTC offset"), "{err}");
    assert_eq!(err.found(), JsonType::String);
}

#[test]
fn naive_timestamp_round_trips_and_converts_offsets_to_utc() {
    let ts = NaiveDate::from_ymd_opt(2024, 1, 2)
        .unwrap()
        .and_hms_micro_opt(3, 4, 5, 678_901)
        .unwrap();
    round_trip(ts, json!("2024-01-02 03:04:05.678901"));
    let whole = NaiveDate::from_ymd_opt(2024, 6, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    round_trip(whole, json!("2024-06-01 00:00:00"));
    assert_eq!(
        NaiveDateTime::from_wire(&json!("2024-01-02T03:04:05.678901999")),
        Ok(ts)
    );
    assert_eq!(
        NaiveDateTime::from_wire(&json!("2024-01-01 22:04:05.678901-05:00")),
        Ok(ts)
    );
    assert_invalid::<NaiveDateTime>(json!("2024-01-02"));
    assert_wrong_type::<NaiveDateTime>(json!(0));
}

#[test]
fn time_round_trips_with_and_without_fraction() {
    let t = NaiveTime::from_hms_micro_opt(3, 4, 5, 678_901).unwrap();
    round_trip(t, json!("03:04:05.678901"));
    let whole = NaiveTime::from_hms_opt(3, 4, 5).unwrap();
    round_trip(whole, json!("03:04:05"));
    assert_eq!(NaiveTime::from_wire(&json!("03:04:05.678901999")), Ok(t));
    assert_invalid::<NaiveTime>(json!("25:00:00"));
    assert_invalid::<NaiveTime>(json!("03:04:05+00:00"));
    assert_invalid::<NaiveTime>(json!("03:04"));
    assert_wrong_type::<NaiveTime>(json!(3));
}

#[test]
fn value_error_at_gives_wrong_type_or_invalid_value() {
    let err = String::from_wire(&json!(1))
        .unwrap_err()
        .at("instance_data.name");
    match err {
        Error::WrongType {
            key,
            expected,
            found,
        } => {
            assert_eq!(key, "instance_data.name");
            assert_eq!(expected, "a string");
            assert_eq!(found, JsonType::Number);
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    let err = i8::from_wire(&json!(300))
        .unwrap_err()
        .at("instance_data.level");
    match err {
        Error::InvalidValue { key, reason } => {
            assert_eq!(key, "instance_data.level");
            assert!(
                reason.contains("300 is out of range -128..=127"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidValue, got {other:?}"),
    }
}

#[test]
fn value_error_display_says_expected_found_and_reason() {
    let err = bool::from_wire(&json!("yes")).unwrap_err();
    assert_eq!(err.to_string(), "expected a boolean, found a string");
    let err = NaiveDate::from_wire(&json!("2026-13-40")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected a date (YYYY-MM-DD), found a string: \"2026-13-40\": there is no date 2026-13-40"
    );
}

#[test]
fn long_inputs_are_shortened_in_error_messages() {
    let long = "x".repeat(10_000);
    let err = parse_timestamp(&long).unwrap_err();
    assert!(err.to_string().len() < 300, "{err}");
}

#[cfg(feature = "decimal")]
#[test]
fn decimals_are_written_as_strings_of_their_exact_digits_and_scale() {
    use std::str::FromStr;
    for text in [
        "12.340",
        "-0.000000000000000000000000000001",
        "123456789012345678901234567890.123456789",
        "0",
        "1000000000000000000000000000000",
    ] {
        let decimal = bigdecimal::BigDecimal::from_str(text).unwrap();
        assert_eq!(decimal.to_wire(), serde_json::json!(text), "{text}");
        let back = bigdecimal::BigDecimal::from_wire(&decimal.to_wire()).unwrap();
        assert_eq!(back.to_plain_string(), text, "digits and scale of {text}");
    }
}

#[cfg(feature = "decimal")]
#[test]
fn decimals_are_read_from_numbers_as_django_cqrs_masters_write_them() {
    use std::str::FromStr;
    assert_eq!(
        bigdecimal::BigDecimal::from_wire(&serde_json::json!(12.34)).unwrap(),
        bigdecimal::BigDecimal::from_str("12.34").unwrap()
    );
    assert_eq!(
        bigdecimal::BigDecimal::from_wire(&serde_json::json!(-7)).unwrap(),
        bigdecimal::BigDecimal::from(-7)
    );
    // A float's shortest form (what Python writes) keeps its digits.
    let number: serde_json::Value = serde_json::from_str("9326.322951806551").unwrap();
    assert_eq!(
        bigdecimal::BigDecimal::from_wire(&number)
            .unwrap()
            .to_plain_string(),
        "9326.322951806551"
    );
}

#[cfg(feature = "decimal")]
#[test]
fn a_decimal_is_not_read_from_text_that_is_no_number_nor_from_a_bool() {
    assert!(bigdecimal::BigDecimal::from_wire(&serde_json::json!("ten")).is_err());
    assert!(
        bigdecimal::BigDecimal::from_wire(&serde_json::json!(true))
            .unwrap_err()
            .is_wrong_type()
    );
}

mod exact_floats {
    use proptest::prelude::*;

    use super::*;

    /// What a body goes through: encoded, written as JSON text, parsed again, decoded.
    fn through_the_wire<T: WireValue>(value: &T) -> T {
        let text = serde_json::to_string(&value.to_wire()).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        T::from_wire(&parsed).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn every_finite_f64_round_trips_bit_for_bit(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            prop_assert_eq!(through_the_wire(&value).to_bits(), bits);
        }

        #[test]
        fn every_finite_f32_round_trips_bit_for_bit(bits in any::<u32>()) {
            let value = f32::from_bits(bits);
            prop_assume!(value.is_finite());
            prop_assert_eq!(through_the_wire(&value).to_bits(), bits);
        }

        /// Python writes floats with `repr`, the shortest text that reads back to the same
        /// bits, as Rust's `{:?}` does (the exponent aside): such text parses to those bits.
        #[test]
        fn a_python_repr_float_parses_to_its_bits(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            let repr = python_repr(value);
            let parsed: Value = serde_json::from_str(&repr).unwrap();
            prop_assert_eq!(f64::from_wire(&parsed).unwrap().to_bits(), bits, "{}", repr);
        }
    }

    /// Python's `repr(float)`: the shortest round-trip digits, with an exponent (`1e+16`,
    /// `5e-324`) outside 1e-4 <= |x| < 1e16.
    fn python_repr(value: f64) -> String {
        let magnitude = value.abs();
        if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
            let text = format!("{value:e}");
            match text.split_once('e') {
                Some((mantissa, exp)) if exp.starts_with('-') => {
                    format!("{mantissa}e-{:0>2}", &exp[1..])
                }
                Some((mantissa, exp)) => format!("{mantissa}e+{exp:0>2}"),
                None => text,
            }
        } else {
            format!("{value:?}")
        }
    }

    #[test]
    fn the_float_of_the_report_round_trips() {
        // A master stored 9326.322951806551; a replica without exact parsing stored ...553.
        let parsed: Value = serde_json::from_str("9326.322951806551").unwrap();
        assert_eq!(f64::from_wire(&parsed).unwrap(), 9326.322951806551_f64);
        assert_eq!(through_the_wire(&9326.322951806551_f64), 9326.322951806551);
    }

    #[test]
    fn negative_zero_and_subnormals_keep_their_bits() {
        for value in [
            -0.0_f64,
            f64::from_bits(1),
            f64::MIN_POSITIVE / 3.0,
            f64::MAX,
        ] {
            assert_eq!(
                through_the_wire(&value).to_bits(),
                value.to_bits(),
                "{value:e}"
            );
        }
    }

    #[test]
    fn nan_and_infinities_cannot_be_carried() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let error = value.check_wire().unwrap_err();
            assert!(
                error.to_string().contains("cannot be written in JSON"),
                "{error}"
            );
        }
        assert!(f32::NAN.check_wire().is_err());
        assert!(Some(f64::INFINITY).check_wire().is_err());
        assert!(None::<f64>.check_wire().is_ok());
        assert!(1.5_f64.check_wire().is_ok());
    }
}
