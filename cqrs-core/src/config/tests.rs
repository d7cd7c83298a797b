use std::collections::HashMap;

use super::builder::show;
use super::env::{parse_bool, parse_duration, parse_optional_duration};
use super::*;

fn setting_of(result: Result<impl fmt::Debug>) -> (&'static str, String) {
    match result {
        Err(Error::Config { setting, reason }) => (setting, reason),
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn lookup(vars: &[(&str, &str)]) -> Result<Config> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn durations_show_as_written_in_variables() {
    assert_eq!(show(Duration::ZERO), "0s");
    assert_eq!(show(Duration::from_secs(90)), "90s");
    assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    assert_eq!(show(Duration::from_nanos(1500)), "1.5µs");
}

#[test]
fn durations_accept_plain_seconds_and_units() {
    let d = |v| parse_duration(RETRY_DELAY, v).unwrap();
    assert_eq!(d("30"), Duration::from_secs(30));
    assert_eq!(d("500ms"), Duration::from_millis(500));
    assert_eq!(d("2s"), Duration::from_secs(2));
    assert_eq!(d("5m"), Duration::from_secs(300));
    assert_eq!(d("1h"), Duration::from_secs(3600));
    assert_eq!(d(" 2S "), Duration::from_secs(2));
    assert_eq!(d("0"), Duration::ZERO);
}

#[test]
fn durations_reject_fractions_signs_units_and_overflow() {
    for bad in [
        "1.5s",
        "-1",
        "+1",
        "s",
        "ms",
        "10d",
        "ten",
        "1 5",
        "99999999999999999999h",
    ] {
        let (setting, reason) = setting_of(parse_duration(RETRY_DELAY, bad));
        assert_eq!(setting, RETRY_DELAY);
        assert!(reason.contains(bad.trim()), "{reason}");
        assert!(reason.contains("`500ms`"), "{reason}");
    }
    let (_, reason) = setting_of(parse_duration(RETRY_DELAY, "1.5s"));
    assert!(reason.contains("fractions"), "{reason}");
}

#[test]
fn optional_durations_accept_none() {
    assert_eq!(parse_optional_duration(MESSAGE_TTL, "None").unwrap(), None);
    assert_eq!(
        parse_optional_duration(MESSAGE_TTL, "60").unwrap(),
        Some(Duration::from_secs(60))
    );
    let (_, reason) = setting_of(parse_optional_duration(MESSAGE_TTL, "never"));
    assert!(reason.contains("`none`"), "{reason}");
}

#[test]
fn booleans_accept_the_documented_words() {
    for (v, b) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("Yes", true),
        ("false", false),
        ("0", false),
        ("NO", false),
    ] {
        assert_eq!(parse_bool(RETRY_EXPONENTIAL, v).unwrap(), b, "{v}");
    }
    for bad in ["on", "off", "2", "y", "truthy"] {
        let (setting, reason) = setting_of(parse_bool(RETRY_EXPONENTIAL, bad));
        assert_eq!(setting, RETRY_EXPONENTIAL);
        assert!(reason.contains(bad), "{reason}");
    }
}

#[test]
fn queue_type_parses_case_insensitively() {
    assert_eq!("Quorum".parse::<QueueType>().unwrap(), QueueType::Quorum);
    assert_eq!("classic".parse::<QueueType>().unwrap(), QueueType::Classic);
    assert_eq!(QueueType::Quorum.as_str(), "quorum");
    assert_eq!(QueueType::Classic.to_string(), "classic");
    let (setting, reason) = setting_of("stream".parse::<QueueType>());
    assert_eq!(setting, QUEUE_TYPE);
    assert!(
        reason.contains("stream") && reason.contains("quorum"),
        "{reason}"
    );
}

#[test]
fn blank_variables_mean_default() {
    let config = lookup(&[(QUEUE, "  "), (PREFETCH, ""), (AMQP_URL, " ")]).unwrap();
    assert_eq!(config, Config::builder().build().unwrap());
}

#[test]
fn url_list_errors_name_the_position() {
    let (setting, reason) = setting_of(lookup(&[(AMQP_URL, "amqp://a,amqp://u:pw@b:0,amqp://c")]));
    assert_eq!(setting, AMQP_URL);
    assert!(reason.starts_with("URL #2 of 3:"), "{reason}");
    let (_, reason) = setting_of(lookup(&[(AMQP_URL, "amqp://a,")]));
    assert!(
        reason.contains("URL #2 of 2") && reason.contains("empty"),
        "{reason}"
    );
    let (_, reason) = setting_of(Config::builder().amqp_urls(Vec::<String>::new()).build());
    assert!(reason.contains("no URL"), "{reason}");
}

#[test]
fn builder_debug_hides_passwords() {
    let builder = Config::builder().amqp_url("amqp://u:s3cr3t-p4ss@h/");
    assert!(!format!("{builder:?}").contains("s3cr3t-p4ss"));
}

#[test]
fn default_prefetch_follows_delay_queue_size_and_must_fit() {
    let config = Config::builder().delay_queue_max_size(9).build().unwrap();
    assert_eq!(config.prefetch(), 10);
    let config = Config::builder()
        .delay_queue_max_size(65_534)
        .build()
        .unwrap();
    assert_eq!(config.prefetch(), 65_535);
    let (setting, _) = setting_of(Config::builder().delay_queue_max_size(65_535).build());
    assert_eq!(setting, PREFETCH);
    let config = Config::builder()
        .delay_queue_max_size(100_000)
        .prefetch(500)
        .build()
        .unwrap();
    assert_eq!(config.prefetch(), 500);
}

#[test]
fn names_are_checked() {
    let (s, _) = setting_of(Config::builder().exchange("").build());
    assert_eq!(s, EXCHANGE);
    let (s, _) = setting_of(Config::builder().queue("q".repeat(256)).build());
    assert_eq!(s, QUEUE);
    let (s, _) = setting_of(Config::builder().queue("amq.q").build());
    assert_eq!(s, QUEUE);
    let (s, _) = setting_of(Config::builder().queue("q").dead_letter_queue("").build());
    assert_eq!(s, DEAD_LETTER_QUEUE);
    let (s, _) = setting_of(Config::builder().queue("q".repeat(250)).build());
    assert_eq!(s, DEAD_LETTER_QUEUE);
    let (s, _) = setting_of(Config::builder().queue("q").dead_letter_queue("q").build());
    assert_eq!(s, DEAD_LETTER_QUEUE);
    let (s, _) = setting_of(Config::builder().dead_letter_queue("dlq").build());
    assert_eq!(s, DEAD_LETTER_QUEUE);
    assert!(Config::builder().exchange("e".repeat(255)).build().is_ok());
}

#[test]
fn ttls_are_checked() {
    let (s, _) = setting_of(Config::builder().message_ttl(Some(Duration::ZERO)).build());
    assert_eq!(s, MESSAGE_TTL);
    let (s, r) = setting_of(
        Config::builder()
            .message_ttl(Some(Duration::from_millis(1500)))
            .build(),
    );
    assert_eq!(s, MESSAGE_TTL);
    assert!(r.contains("`1500ms`"), "{r}");
    let (s, _) = setting_of(
        Config::builder()
            .dead_message_ttl(Some(Duration::ZERO))
            .build(),
    );
    assert_eq!(s, DEAD_MESSAGE_TTL);
    assert!(
        Config::builder()
            .message_ttl(None)
            .dead_message_ttl(None)
            .build()
            .is_ok()
    );
}

#[test]
fn exponential_retry_needs_max_at_least_delay() {
    let builder = Config::builder()
        .retry_delay(Duration::from_secs(600))
        .retry_max_delay(Duration::from_secs(300));
    assert!(
        builder.clone().build().is_ok(),
        "constant delays ignore the maximum"
    );
    let (s, _) = setting_of(builder.retry_exponential(true).build());
    assert_eq!(s, RETRY_MAX_DELAY);
}

#[test]
fn zero_counts_and_timeouts_are_rejected() {
    let (s, _) = setting_of(Config::builder().publish_confirm_window(0).build());
    assert_eq!(s, PUBLISH_CONFIRM_WINDOW);
    let (s, _) = setting_of(Config::builder().delay_queue_max_size(0).build());
    assert_eq!(s, DELAY_QUEUE_MAX_SIZE);
    let (s, _) = setting_of(Config::builder().connect_timeout(Duration::ZERO).build());
    assert_eq!(s, CONNECT_TIMEOUT);
    let (s, _) = setting_of(
        Config::builder()
            .reconnect_min_delay(Duration::ZERO)
            .build(),
    );
    assert_eq!(s, RECONNECT_MIN_DELAY);
    let (s, _) = setting_of(Config::builder().connection_name("").build());
    assert_eq!(s, CONNECTION_NAME);
    assert!(
        Config::builder()
            .retry_delay(Duration::ZERO)
            .build()
            .is_ok()
    );
}

/// A file in the temp directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("cqrs_config_test_{}_{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nS3CR3T-K3Y\n-----END PRIVATE KEY-----\n";

#[test]
fn tls_files_are_read_from_the_environment_and_never_shown_in_debug() {
    let ca = TempFile::new("ca.pem", FAKE_CERT);
    let cert = TempFile::new("cert.pem", FAKE_CERT);
    let key = TempFile::new("key.pem", FAKE_KEY);
    let config = lookup(&[
        (TLS_CA_FILE, ca.0.to_str().unwrap()),
        (TLS_CERT_FILE, cert.0.to_str().unwrap()),
        (TLS_KEY_FILE, key.0.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(config.tls().ca_file(), Some(ca.0.as_path()));
    assert_eq!(
        config.tls().client_identity_files(),
        Some((cert.0.as_path(), key.0.as_path()))
    );
    #[cfg(feature = "rabbitmq")]
    {
        let lapin = config.tls().to_lapin();
        assert_eq!(lapin.cert_chain.as_deref(), Some(FAKE_CERT));
        assert!(lapin.identity.is_some());
    }
    let debug = format!("{config:?}");
    assert!(!debug.contains("S3CR3T-K3Y"), "{debug}");
    assert!(debug.contains("key.pem"), "{debug}");
}

#[test]
fn tls_defaults_to_system_roots_only() {
    let config = Config::builder().build().unwrap();
    assert_eq!(config.tls().ca_file(), None);
    assert_eq!(config.tls().client_identity_files(), None);
    #[cfg(feature = "rabbitmq")]
    {
        let lapin = config.tls().to_lapin();
        assert!(lapin.cert_chain.is_none() && lapin.identity.is_none());
    }
}

#[test]
fn tls_file_errors_name_the_setting_and_the_problem() {
    let (s, reason) = setting_of(Config::builder().tls_ca_file("/no/such/ca.pem").build());
    assert_eq!(s, TLS_CA_FILE);
    assert!(reason.contains("/no/such/ca.pem"), "{reason}");

    let not_pem = TempFile::new("not.pem", "hello");
    let (s, reason) = setting_of(Config::builder().tls_ca_file(&not_pem.0).build());
    assert_eq!(s, TLS_CA_FILE);
    assert!(reason.contains("CERTIFICATE"), "{reason}");

    let cert = TempFile::new("only-cert.pem", FAKE_CERT);
    let (s, _) = setting_of(lookup(&[(TLS_CERT_FILE, cert.0.to_str().unwrap())]));
    assert_eq!(s, TLS_KEY_FILE);
    let (s, _) = setting_of(lookup(&[(TLS_KEY_FILE, cert.0.to_str().unwrap())]));
    assert_eq!(s, TLS_CERT_FILE);

    // A certificate where the key should be.
    let (s, reason) = setting_of(
        Config::builder()
            .tls_client_identity(&cert.0, &cert.0)
            .build(),
    );
    assert_eq!(s, TLS_KEY_FILE);
    assert!(reason.contains("PRIVATE KEY"), "{reason}");
}

#[test]
fn consumer_batching_settings_default_and_parse() {
    let config = Config::builder().build().unwrap();
    assert_eq!(config.batch_size(), 100);
    assert_eq!(config.batch_wait(), Duration::from_millis(5));
    assert_eq!(config.workers(), 1);

    let config = lookup(&[(BATCH_SIZE, "250"), (BATCH_WAIT, "5ms"), (WORKERS, " 4 ")]).unwrap();
    assert_eq!(config.batch_size(), 250);
    assert_eq!(config.batch_wait(), Duration::from_millis(5));
    assert_eq!(config.workers(), 4);

    let config = lookup(&[(BATCH_WAIT, "0")]).unwrap();
    assert_eq!(config.batch_wait(), Duration::ZERO, "zero means no waiting");
}

#[test]
fn consumer_batching_settings_name_the_variable_when_invalid() {
    for (var, bad) in [
        (BATCH_SIZE, "0"),
        (BATCH_SIZE, "-3"),
        (BATCH_SIZE, "lots"),
        (BATCH_WAIT, "1.5s"),
        (BATCH_WAIT, "soon"),
        (WORKERS, "0"),
        (WORKERS, "2.5"),
    ] {
        let (setting, reason) = setting_of(lookup(&[(var, bad)]));
        assert_eq!(setting, var, "{var}={bad}: {reason}");
        assert!(reason.contains(bad), "{var}={bad}: {reason}");
    }
    let (s, _) = setting_of(Config::builder().batch_size(0).build());
    assert_eq!(s, BATCH_SIZE);
    let (s, _) = setting_of(Config::builder().workers(0).build());
    assert_eq!(s, WORKERS);
}

#[test]
fn query_timeout_is_off_by_default_and_log_of_timed_out_queries_too() {
    let config = lookup(&[]).unwrap();
    assert_eq!(config.query_timeout(), None);
    assert!(!config.log_timed_out_queries());
}

#[test]
fn query_timeout_reads_a_bare_number_as_milliseconds_like_django_cqrs() {
    let timeout = |v: &str| lookup(&[(QUERY_TIMEOUT, v)]).unwrap().query_timeout();
    assert_eq!(timeout("10000"), Some(Duration::from_millis(10_000)));
    assert_eq!(timeout("250"), Some(Duration::from_millis(250)));
    assert_eq!(timeout("1500ms"), Some(Duration::from_millis(1500)));
    assert_eq!(timeout("2s"), Some(Duration::from_secs(2)));
    assert_eq!(timeout("0"), None, "0 is django-cqrs's `no timeout`");
    assert_eq!(timeout("  "), None, "blank is the default");
}

#[test]
fn query_timeout_rejects_what_is_not_a_duration() {
    for bad in ["-1", "1.5", "ten", "10d", "99999999999999999999"] {
        let (setting, reason) = setting_of(lookup(&[(QUERY_TIMEOUT, bad)]));
        assert_eq!(setting, QUERY_TIMEOUT, "{bad}");
        assert!(reason.contains(bad), "{reason}");
        assert!(reason.contains("milliseconds"), "{reason}");
    }
}

#[test]
fn query_timeout_below_a_millisecond_is_refused_by_the_builder() {
    let (setting, reason) = setting_of(
        Config::builder()
            .query_timeout(Some(Duration::from_micros(500)))
            .build(),
    );
    assert_eq!(setting, QUERY_TIMEOUT);
    assert!(reason.contains("at least 1 ms"), "{reason}");
    let zero = Config::builder()
        .query_timeout(Some(Duration::ZERO))
        .build()
        .unwrap();
    assert_eq!(zero.query_timeout(), None);
}

#[test]
fn log_timed_out_queries_reads_booleans() {
    let log = |v: &str| lookup(&[(LOG_TIMED_OUT_QUERIES, v)]).map(|c| c.log_timed_out_queries());
    assert!(log("True").unwrap());
    assert!(log("1").unwrap());
    assert!(!log("no").unwrap());
    let (setting, reason) = setting_of(log("maybe"));
    assert_eq!(setting, LOG_TIMED_OUT_QUERIES);
    assert!(reason.contains("maybe"), "{reason}");
}
